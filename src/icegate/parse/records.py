"""Where pyarrow's CSV reader ends records, found by walking the quotes rather than every byte.

Quote parity (:mod:`.lines`) places records only when every quote is around a value. This module
follows the reader's own rules instead: a quote opens a quoted value only at the start of a field
(after a delimiter, a line break or the start of the text); inside, a doubled quote is a quote and
a single one closes the value, whose field then goes on unquoted, where quotes are plain characters.
Outside quoted values a line feed, a carriage return and line feed, or a lone carriage return ends
a record. Python works once per quote here, so the streamed parse (:mod:`.stream`) uses this only
for the blocks parity cannot place and for a record too big to hold (:class:`RecordScan`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from icegate.parse.text import LineBreaks

_QUOTE: Final = 0x22
_CR: Final = 0x0D
_LF: Final = 0x0A


def outside_quotes(text: bytes, delimiter: str, *, start: int = 0, final: bool) -> Iterator[tuple[int, int]]:
    """The spans ``[a, b)`` of ``text[start:]`` outside quoted values; ``start`` must start a record.

    Unless ``final`` (nothing follows ``text``), stops before a quote whose meaning depends on the
    byte after the text's end: what comes after it is not known yet.
    """
    bounds = (ord(delimiter), _CR, _LF)
    end = len(text)
    span = scan = start
    while True:
        quote = text.find(b'"', scan)
        if quote < 0:
            yield span, end
            return
        if quote != start and text[quote - 1] not in bounds:
            scan = quote + 1  # inside an unquoted value: a plain character
            continue
        yield span, quote
        closing = _closing_quote(text, quote + 1, final=final)
        if closing is None:
            return
        span = scan = closing + 1


def _closing_quote(text: bytes, start: int, *, final: bool) -> int | None:
    """The quote that closes a quoted value whose content starts at ``start``, or None if not in ``text``."""
    while True:
        quote = text.find(b'"', start)
        if quote < 0:
            return None
        if quote + 1 < len(text):
            if text[quote + 1] != _QUOTE:
                return quote
            start = quote + 2  # a doubled quote
        else:
            return quote if final else None


def last_record_end(text: bytes, delimiter: str, *, start: int = 0, final: bool) -> int | None:
    """The offset just after the last record break in ``text[start:]``, or None if it holds none.

    Unless ``final``, a carriage return at the very end does not count: a line feed may follow it.
    """
    last = None
    for a, b in outside_quotes(text, delimiter, start=start, final=final):
        at = _last_break(text, a, b)
        if at >= 0 and text[at] == _CR and at + 1 == len(text) and not final:
            at = _last_break(text, a, at)
        if at >= 0:
            last = at + 1
    return last


def header_end(text: bytes, delimiter: str, *, final: bool) -> int | None:
    """The offset just after the first record that is not an empty line (the header), or None if not ended.

    The reader skips empty lines before it; they stay part of the header's text.
    """
    record = 0
    for a, b in outside_quotes(text, delimiter, final=final):
        at = a
        while (brk := _first_break(text, at, b)) >= 0:
            end = brk + 1
            if text[brk] == _CR:
                if brk + 1 == len(text) and not final:
                    return None
                if brk + 1 < len(text) and text[brk + 1] == _LF:
                    end += 1
            if brk > record:
                return end
            record = at = end  # an empty line
    return None


def _last_break(text: bytes, start: int, end: int) -> int:
    return max(text.rfind(b"\n", start, end), text.rfind(b"\r", start, end))


def _first_break(text: bytes, start: int, end: int) -> int:
    found = [at for at in (text.find(b"\n", start, end), text.find(b"\r", start, end)) if at >= 0]
    return min(found, default=-1)


class RecordScan:
    """One record read a chunk at a time, keeping only what an error about it needs.

    For a record too big to hold in memory (a quote that is never closed, a value far over the field
    limit): counts its fields, each field's value length, the line feeds before the last field's
    opening quote, and keeps the record's first bytes. Lines are counted as :mod:`.lines` counts them.
    """

    def __init__(self, delimiter: str, *, keep: int, fields: int) -> None:
        self._delimiter = ord(delimiter)
        self._events = re.compile(b"[" + re.escape(delimiter.encode()) + b'"\r\n]')
        self._keep = keep
        self._kept_fields = fields
        #: The record's first ``keep`` bytes.
        self.head = bytearray()
        #: Bytes read: the record and, once it ended, its line break.
        self.size = 0
        self.fields = 1
        #: Value bytes of each ended field (the first ``fields`` + 1 of them).
        self.lengths: list[int] = []
        #: Line breaks in the record before its last field's opening quote (None: that field is not quoted),
        #: and before its first quote (None: it has none).
        self.quote_breaks: int | None = None
        self.first_quote_breaks: int | None = None
        #: The line break that ended the record (empty: the text ended).
        self.ending = b""
        #: The record holds a quote; it is only whitespace.
        self.quoted = False
        self.blank = True
        #: The text ended inside a quoted value.
        self.unclosed = False
        self.ended = False
        self._value = 0
        self._lines = LineBreaks()
        self._inside = False
        self._field_start = True
        self._quote_pending = False  # inside, a quote ended the last chunk: is it doubled?
        self._cr_pending = False  # outside, a carriage return ended the last chunk: is a line feed next?

    def feed(self, chunk: bytes) -> int | None:
        """Read ``chunk``: the offset in it just after the record's line break, or None if the record goes on."""
        pos = self._resolve_pending(chunk)
        while not self.ended and pos < len(chunk):
            pos = self._inside_step(chunk, pos) if self._inside else self._outside_step(chunk, pos)
        return pos if self.ended else None

    def finish(self) -> None:
        """The text ends, and so does the record (inside a quoted value, if one is open)."""
        if not self.ended:
            self.unclosed = self._inside and not self._quote_pending
            self._end_field()
            self.ended = True

    @property
    def breaks(self) -> int:
        """Line breaks read: in the record (quoted values included) and the one that ended it."""
        return self._lines.count + (1 if self.ending else 0)

    def row_text(self) -> str:
        """The record's text as the reader reports an invalid row (no line break at its end, when kept whole)."""
        text = bytes(self.head).decode("utf-8", errors="ignore")
        if self.size <= self._keep:
            for brk in ("\r\n", "\n", "\r"):
                if text.endswith(brk):
                    return text[: -len(brk)]
        return text

    def _resolve_pending(self, chunk: bytes) -> int:
        if self._cr_pending:
            self._cr_pending = False
            self.ended = True
            lf = 1 if chunk[:1] == b"\n" else 0
            self.size += lf
            self.ending += chunk[:lf]
            return lf
        if self._quote_pending:
            self._quote_pending = False
            if chunk[:1] == b'"':
                self._value += 1
                self._take(chunk, 0, 1, content=False)
                return 1
            self._inside = False
        return 0

    def _inside_step(self, chunk: bytes, pos: int) -> int:
        quote = chunk.find(b'"', pos)
        if quote < 0:
            self._take(chunk, pos, len(chunk))
            return len(chunk)
        self._take(chunk, pos, quote)
        if quote + 1 == len(chunk):
            self._quote_pending = True
            self._take(chunk, quote, quote + 1, content=False)
            return quote + 1
        if chunk[quote + 1] == _QUOTE:
            self._value += 1
            self._take(chunk, quote, quote + 2, content=False)
            return quote + 2
        self._inside = False
        self._take(chunk, quote, quote + 1, content=False)
        return quote + 1

    def _outside_step(self, chunk: bytes, pos: int) -> int:
        match = self._events.search(chunk, pos)
        event = match.start() if match else len(chunk)
        if event > pos:
            self._take(chunk, pos, event)
            self._field_start = False
        if match is None:
            return event
        byte = chunk[event]
        if byte == self._delimiter:
            self._take(chunk, event, event + 1, content=False)
            self._end_field()
            self.fields += 1
            self._field_start = True
            self.quote_breaks = None
        elif byte == _QUOTE:
            if not self.quoted:
                self.quoted, self.first_quote_breaks = True, self._lines.count
            if self._field_start:
                self._inside, self._field_start = True, False
                self.quote_breaks = self._lines.count
            self._take(chunk, event, event + 1, content=not self._inside)
        else:
            return self._end_record(chunk, event)
        return event + 1

    def _end_record(self, chunk: bytes, brk: int) -> int:
        self._end_field()
        end = brk + 1
        if chunk[brk] == _CR:
            if end == len(chunk):
                self._cr_pending = True
                self.size += 1
                self.ending = b"\r"
                return end
            if chunk[end] == _LF:
                end += 1
        self.size += end - brk
        self.ending = chunk[brk:end]
        self.ended = True
        return end

    def _end_field(self) -> None:
        if len(self.lengths) <= self._kept_fields:
            self.lengths.append(self._value)
        self._value = 0

    def _take(self, chunk: bytes, start: int, end: int, *, content: bool = True) -> None:
        """Count ``chunk[start:end]``, the record's next bytes (value bytes too when ``content``)."""
        part = chunk[start:end]
        if content:
            self._value += len(part)
        if len(self.head) < self._keep:
            self.head += part[: self._keep - len(self.head)]
        if self.blank and part:
            self.blank = part.decode("utf-8", errors="ignore").isspace()
        self._lines.add(part)
        self.size += len(part)
