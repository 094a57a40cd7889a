"""A CSV/TSV file read from a stream a block of records at a time, in memory that follows the block, not the file.

:func:`stream_delimited` yields what :func:`icegate.parse.parse_bytes` returns for the whole file, in
batches: the same rows in the same order, the same physical lines, and for a bad file the same error
class at the same place. Each block is the file's header plus whole records, decoded by the functions
that decode a whole file (:func:`.read_delimited`, :func:`.count_record_lines`, :func:`.map_columns`);
an :class:`.Origin` turns the block's own line, row and byte numbers into the file's.

A block is cut after its last line feed and checked afterwards, for free: counting its lines by quote
parity proves the cut fell between records. Where parity cannot (a quote inside an unquoted value, lone
carriage returns), the reader's own grammar (:mod:`.records`) places the cut, more slowly. A record
longer than any the limits accept is never held: it is scanned to its end for the error it gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NoReturn

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from icegate.datasets import Dataset, NormalizeContext
from icegate.errors import IcegateError, MalformedFile, UnsupportedFormat
from icegate.parse.delimited import (
    DELIMITERS,
    MAX_INVALID_ROWS,
    InvalidRow,
    first_invalid_row,
    header_names,
    invalid_row,
    read_delimited,
    unclosed_header,
    unclosed_quote,
)
from icegate.parse.formats import format_for
from icegate.parse.headers import map_columns
from icegate.parse.limits import field_too_long, no_data_rows, too_many_rows
from icegate.parse.lines import count_record_lines
from icegate.parse.origin import Origin
from icegate.parse.records import RecordScan, header_end, last_record_end
from icegate.parse.table import ParsedTable
from icegate.parse.text import checked_utf8, line_at, line_breaks
from icegate.parse.text_stream import Readable, Utf8Check, decompressed, lookahead, source_chunks, utf8_chunks
from icegate.settings import Limits

#: Text per block: a few hundred MiB of Arrow memory at most while it is decoded.
DEFAULT_BLOCK_BYTES: Final = 32 * 1024 * 1024
#: The most the source is asked for at once.
_READ_BYTES: Final = 4 * 1024 * 1024
#: The first bytes of a record too long to hold that are kept for its error (its preview).
_KEEP: Final = 1024
#: A big block's text stays this much under ``block_bytes``: glibc serves an allocation under 32 MiB from
#: heap memory a freed one left, one just over it from fresh pages every time (4 ms against 18 ms a block).
_ALLOCATION_SLACK: Final = 64 * 1024
#: The header is looked for in this much text first.
_HEADER_BYTES: Final = 64 * 1024
_QUOTE: Final = 0x22
#: Line feeds inside quotes stepped over, back from the end of a block's text, before the cut is left to the
#: reader's grammar (a quoted value of more lines than this, or a stray quote making all the rest odd).
_PARITY_STEPS: Final = 1024


def stream_delimited(
    source: Readable,
    name: str,
    dataset: Dataset,
    *,
    limits: Limits,
    encoding: str | None = None,
    normalize: NormalizeContext = NormalizeContext(),  # noqa: B008 - immutable
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[ParsedTable]:
    """Decode a CSV/TSV file from ``source`` into ``dataset``'s columns, one :class:`ParsedTable` per block.

    ``source`` is read with ``read(n)`` only (a local file, plain or gzip, an S3 body, any wrapper), at
    most ``min(block_bytes, 4 MiB)`` at a time; ``name`` is its key or path (format, errors). A block holds
    about ``block_bytes`` of decoded text, whole records only; blocks without data rows yield nothing.
    Every batch has the contract's columns, the same ``ignored_columns`` and the records' lines in the
    file. Concatenated, the batches' :meth:`ParsedTable.with_lines` are :func:`parse_bytes`' for the file.

    Errors are raised where the stream finds them, possibly after batches were yielded: a caller keeps
    nothing of a file whose stream raised. Limits count as the stream goes (bytes read, bytes gunzipped,
    rows so far), so a stream over one reports "more than" the limit rather than its total.
    """
    fmt = format_for(name)
    if fmt.name not in DELIMITERS:
        raise UnsupportedFormat(
            f"a {fmt.name} file cannot be read a block at a time; only {', '.join(DELIMITERS)} can", file=name
        )
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be at least 1, not {block_bytes}")
    job = _Job(name, dataset, limits, fmt.name, DELIMITERS[fmt.name], normalize, block_bytes)
    return _batches(source, job, encoding)


@dataclass(frozen=True)
class _Job:
    file: str
    dataset: Dataset
    limits: Limits
    format: str
    delimiter: str
    normalize: NormalizeContext
    block_bytes: int


def _batches(source: Readable, job: _Job, encoding: str | None) -> Iterator[ParsedTable]:
    read_bytes = min(job.block_bytes, _READ_BYTES)
    look = lookahead(source, job.file, limits=job.limits, read_bytes=read_bytes)
    raw = source_chunks(source, job.file, limits=job.limits, read_bytes=read_bytes)
    plain = decompressed(raw, job.file, limits=job.limits, read_bytes=read_bytes)
    yield from _Blocks(utf8_chunks(plain, job.file, encoding=encoding, lookahead=look), job).batches()


class _Pending:
    """Text read but not yet in a block, in the pieces it arrived in (joined only when a block is cut)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0

    def add(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.size += len(piece)

    def even_line_feed(self, end: int) -> int | None:
        """The offset just after the last line feed before ``end`` that an even number of quotes precede.

        Where a record ends if every quote is around a value (checked once the block is decoded). Gives
        up (None) after :data:`_PARITY_STEPS` line feeds inside quotes: a stray quote can make every one odd.
        """
        at = self._rfind_line_feed(end)
        quotes = self._count_quotes(0, at) if at >= 0 else 0
        for _ in range(_PARITY_STEPS):
            if at < 0 or not quotes % 2:
                break
            before = self._rfind_line_feed(at)
            quotes -= self._count_quotes(before + 1, at)
            at = before
        return at + 1 if at >= 0 and not quotes % 2 else None

    def joined(self) -> bytes:
        """All of it in one piece (kept so: it is not joined twice)."""
        if len(self.pieces) != 1:
            self.pieces = [b"".join(self.pieces)]
        return self.pieces[0]

    def head(self, size: int) -> list[bytes | memoryview]:
        """The first ``size`` bytes, as views of the pieces (not copied)."""
        return [
            piece if (low, high) == (0, len(piece)) else memoryview(piece)[low:high]
            for _, piece, low, high in self._spans(0, size)
        ]

    def drop(self, size: int) -> None:
        """Forget the first ``size`` bytes."""
        self.size -= size
        while size:
            piece = self.pieces[0]
            if len(piece) > size:
                self.pieces[0] = piece[size:]
                return
            del self.pieces[0]
            size -= len(piece)

    def _spans(self, start: int, end: int) -> Iterator[tuple[int, bytes, int, int]]:
        """``(offset, piece, low, high)``: each piece's part ``piece[low:high]`` in ``[start, end)``, in order."""
        offset = 0
        for piece in self.pieces:
            if offset >= end:
                return
            low, high = max(start - offset, 0), min(end - offset, len(piece))
            if low < high:
                yield offset, piece, low, high
            offset += len(piece)

    def _rfind_line_feed(self, end: int) -> int:
        """Offset of the last line feed before ``end``, or -1."""
        for offset, piece, low, high in reversed(list(self._spans(0, end))):
            at = piece.rfind(b"\n", low, high)
            if at >= 0:
                return offset + at
        return -1

    def _count_quotes(self, start: int, end: int) -> int:
        return sum(_count_quotes(piece, low, high) for _, piece, low, high in self._spans(start, end))


def _count_quotes(piece: bytes, low: int, high: int) -> int:
    """Quotes in ``piece[low:high]``: vectorised (polars, on all cores) unless the span is short."""
    if high - low < 1 << 16:
        return piece.count(b'"', low, high)
    array = pa.Array.from_buffers(pa.uint8(), high - low, [None, pa.py_buffer(memoryview(piece)[low:high])])
    return int((pl.Series(array) == _QUOTE).sum())


@dataclass(frozen=True)
class _Decoded:
    """One block decoded: its source columns and lines, and how far it moves the file's counts on."""

    size: int
    table: pa.Table
    lines: pa.Table
    #: Line breaks in the block, after its header.
    breaks: int
    #: The rows of the wrong number of fields found so far in the file (this block's included).
    invalid: list[InvalidRow]
    #: The first of them, if this block has it.
    first_invalid: _Ragged | None = None


@dataclass(frozen=True)
class _Ragged:
    """The file's first row of the wrong number of fields: what its error says."""

    row: InvalidRow
    line: int | None
    #: Whether the row holds a quote, when ``row`` has only its start (None: ``row``'s text tells).
    quoted: bool | None = None


class _Blocks:
    """The text of one file cut into blocks of whole records, each decoded as the whole file would be."""

    def __init__(self, text: Iterator[bytes], job: _Job) -> None:
        self._text = text
        self._job = job
        self._pending = _Pending()
        self._eof = False
        self._header = b""
        self._names: list[str] | None = None
        self._source_columns: list[str] = []
        self._record_open = False  # the last look found no record end in the pending text
        # Rows of the wrong number of fields: once there are any, the file is refused for them, counted to the end.
        self._invalid: list[InvalidRow] = []
        self._first_invalid: _Ragged | None = None
        self._decoded = False
        # Of the text before the pending text: bytes, line feeds, line breaks as record lines count them, rows.
        self._offset = self._breaks = self._rows = 0
        self._header_breaks = 0

    def batches(self) -> Iterator[ParsedTable]:
        self._read_header()
        target = self._block_text()
        while not self._done():
            self._fill(target)
            decoded = self._next_block()
            if decoded is not None:
                batch = None if decoded.invalid else self._batch(decoded)
                self._advance(decoded)
                target = self._block_text()
                if batch is not None:
                    yield batch
            elif self._record_open and self._pending.size > self._record_bound():
                self._pass_oversized_record()
                target = self._block_text()
            else:
                target = self._grown(target)
            if self._invalid and (len(self._invalid) >= MAX_INVALID_ROWS or self._done()):
                raise self._ragged_rows()
        if not self._rows:
            raise no_data_rows(self._job.file, self._source_columns)

    def _done(self) -> bool:
        """All the text is decoded (the header at least once, for a file with nothing after it)."""
        return self._eof and not self._pending.size and self._decoded

    def _ragged_rows(self) -> MalformedFile:
        """The error for the rows of the wrong number of fields: the first, and how many the reader found."""
        assert self._first_invalid is not None
        (expected, actual, text), ragged = self._first_invalid.row, self._first_invalid
        return invalid_row(
            expected,
            actual,
            text,
            file=self._job.file,
            delimiter=self._job.delimiter,
            line=ragged.line,
            count=len(self._invalid),
            quoted=ragged.quoted,
        )

    def _block_text(self) -> int:
        """Text to read before cutting a block: with the header, a block is at most ``block_bytes``."""
        size = self._job.block_bytes
        slack = _ALLOCATION_SLACK if size >= 16 * _ALLOCATION_SLACK else 0
        return max(1, size - slack - len(self._header))

    # -- reading ---------------------------------------------------------------------------------

    def _fill(self, target: int) -> None:
        while self._pending.size < target and not self._eof:
            piece = next(self._text, None)
            if piece is None:
                self._eof = True
            elif piece:
                self._pending.add(piece)

    def _grown(self, target: int) -> int:
        """The next text size to look for a record end in: twice as much, up to just over the longest record."""
        bound = self._record_bound()
        grown = 2 * max(target, self._pending.size)
        if self._pending.size <= bound:
            grown = min(grown, bound + 1)
        return max(grown, self._pending.size + 1)

    def _read_header(self) -> None:
        """Set the header's text apart: the first record that is not an empty line (and the empty lines before it)."""
        job, target = self._job, min(self._job.block_bytes, _HEADER_BYTES)
        while True:
            self._fill(target)
            text = self._pending.joined()
            end = header_end(text, job.delimiter, final=self._eof)
            if end is None and self._eof:
                end = len(text)  # the header ends with the text (or there is none)
            if end is not None:
                break
            if len(text) > _header_bound(job.limits):
                self._refuse_oversized_header(text)
            target = 2 * max(target, len(text))
        # Every block is the header's text and records: a header ended by a lone carriage return would make a
        # line feed that starts a block one CRLF line break with it. A line feed ends the header's line alike.
        lone_cr = text[:end].endswith(b"\r") and text[end : end + 1] != b"\n"
        self._header = text[: end - 1] + b"\n" if lone_cr else text[:end]
        self._pending.drop(end)
        self._offset = end
        self._breaks = self._header_breaks = line_breaks(self._header)

    # -- cutting and decoding --------------------------------------------------------------------

    def _next_block(self) -> _Decoded | None:
        """The next block decoded, or None when the text read so far holds no whole record to end one with."""
        self._record_open = False
        if self._eof:
            return self._decode(self._pending.size, sound=True)
        if self._header.isspace() and self._pending.joined().isspace():
            return None  # which lines are rows depends on the rest (a header of spaces is one column)
        cut = self._parity_cut()
        if cut is not None and (decoded := self._decode(cut, sound=False)) is not None:
            return decoded
        cut = last_record_end(self._pending.joined(), self._job.delimiter, final=False)
        if cut is None:
            self._record_open = True
            return None
        return self._decode(cut, sound=True)

    def _parity_cut(self) -> int | None:
        """Where quote parity ends the last record that fits the block (header included), else any record."""
        size = self._pending.size
        fits = min(size, self._block_text())
        cut = self._pending.even_line_feed(fits)
        return self._pending.even_line_feed(size) if cut is None and fits < size else cut

    def _decode(self, size: int, *, sound: bool) -> _Decoded | None:
        """The block of the pending text's first ``size`` bytes, decoded.

        Unless ``sound``, the cut is a guess: None when it split a record (only then may the block's
        own decoding fail or its quotes disagree with parity).
        """
        job = self._job
        block = b"".join([self._header, *self._pending.head(size)])
        origin = self._origin()
        checked_utf8(block, job.file, origin)
        invalid = list(self._invalid)
        try:
            table = read_delimited(
                block, job.file, limits=job.limits, delimiter=job.delimiter, origin=origin, invalid=invalid
            )
        except IcegateError:
            if sound or self._ends_record(block):
                raise
            return None
        added = invalid[len(self._invalid) :]
        counted = None  # once the reader gave up on the block, its records are not all known
        if len(invalid) < MAX_INVALID_ROWS:
            counted = count_record_lines(block, job.delimiter, table.num_rows + len(added), table.num_columns)
        if not (sound or (counted and counted.by_parity) or self._ends_record(block)):
            return None
        breaks = (counted.breaks if counted else line_breaks(block)) - self._header_breaks
        first = None
        if added and not self._invalid:
            row, line = first_invalid_row(block, added, job.delimiter)
            first = _Ragged(row, origin.lines + line if line is not None else None)
        lines = counted.table if counted else pa.table({})
        return _Decoded(size, table, lines, breaks, invalid, first)

    def _ends_record(self, block: bytes) -> bool:
        """Whether the block ends where the reader ends a record (its grammar, walked quote by quote)."""
        return last_record_end(block, self._job.delimiter, start=len(self._header), final=False) == len(block)

    def _origin(self) -> Origin:
        return Origin(
            offset=self._offset - len(self._header), lines=self._breaks - self._header_breaks, rows=self._rows
        )

    def _batch(self, decoded: _Decoded) -> ParsedTable | None:
        job = self._job
        self._source_columns = decoded.table.column_names
        if not decoded.table.num_rows:
            return None
        table, ignored = map_columns(decoded.table, job.dataset, file=job.file, normalize=job.normalize)
        shift = self._breaks - self._header_breaks
        lines = decoded.lines
        if shift:
            lines = pa.table({name: pc.add(lines.column(name), shift) for name in lines.column_names})
        return ParsedTable(table=table, format=job.format, ignored_columns=ignored, lines=lines)

    def _advance(self, decoded: _Decoded) -> None:
        self._decoded = True
        self._invalid = decoded.invalid
        self._first_invalid = self._first_invalid or decoded.first_invalid
        self._pending.drop(decoded.size)
        self._offset += decoded.size
        self._breaks += decoded.breaks
        self._rows += decoded.table.num_rows

    # -- records too long to hold ----------------------------------------------------------------

    def _header_names(self) -> list[str]:
        if self._names is None:
            self._names = header_names(self._header, self._job.file, self._job.delimiter)
        return self._names

    def _record_bound(self) -> int:
        """No record the limits accept is longer: each field at most ``max_field_bytes``, every byte quoted twice."""
        return len(self._header_names()) * (2 * self._job.limits.max_field_bytes + 3) + 2

    def _pass_oversized_record(self) -> None:
        """A record longer than any the limits accept: scanned to its end without being held, then refused
        as decoding the whole file would refuse it (or passed over, if it is a line of whitespace)."""
        job = self._job
        held = self._pending.joined()
        checked_utf8(self._header + held, job.file, self._origin())
        names = self._header_names()
        scan = RecordScan(job.delimiter, keep=_KEEP, fields=len(names))
        after = Origin(offset=self._offset + len(held), lines=self._breaks + line_breaks(held))
        rest = self._scan(scan, held, after)
        self._refuse_record(scan, names)
        # Not refused: a line of whitespace, a row of the wrong number of fields (counted), or a record
        # of a file refused for those already. Go on after it.
        self._pending = _Pending()
        self._pending.add(rest)
        self._offset += scan.size
        self._breaks += scan.breaks

    def _scan(self, scan: RecordScan, held: bytes, origin: Origin) -> bytes:
        """Feed ``scan`` the held text (checked already), then the stream, to the record's end; the text after it.

        What goes by is checked as a block is (``origin``: where it starts), since it is never one.
        """
        end = scan.feed(held)
        if end is not None:
            return held[end:]
        check = Utf8Check(self._job.file, origin)
        for piece in self._text:
            end = scan.feed(piece)
            check.feed(piece if end is None else piece[:end])
            if end is not None:
                return piece[end:]
        check.finish()
        scan.finish()
        self._eof = True
        return b""

    def _refuse_record(self, scan: RecordScan, names: list[str]) -> None:
        """Raise what :func:`read_delimited` raises for this record; return if the reader skips it, or if
        it has the wrong number of fields (then it is counted with the others of the file, as the first
        if it is)."""
        job, expected = self._job, len(names)
        if scan.fields != expected:
            if not scan.blank and len(self._invalid) < MAX_INVALID_ROWS:
                row = (expected, scan.fields, scan.row_text())
                self._first_invalid = self._first_invalid or _Ragged(row, self._breaks + 1, scan.quoted)
                self._invalid = [*self._invalid, row]
            return
        if self._invalid:
            return  # the file is refused for its rows of the wrong number of fields; nothing else is
        if scan.unclosed:
            raise unclosed_quote(job.file, self._breaks + (scan.quote_breaks or 0) + 1)
        if self._rows + 1 > job.limits.max_rows:
            raise too_many_rows(job.file, job.limits)
        for name, length in zip(names, scan.lengths, strict=False):
            if length > job.limits.max_field_bytes:
                raise field_too_long(name, length, self._rows + 1, job.file, job.limits)
        raise MalformedFile(  # pragma: no cover - the bound leaves no other way
            f"a record of {scan.size:,} bytes is longer than any the limits accept", file=job.file
        )

    def _refuse_oversized_header(self, held: bytes) -> NoReturn:
        """A header longer than any the limits accept: as the whole file's, a quote in it may never close."""
        job = self._job
        checked_utf8(held, job.file, Origin())
        start = len(held) - len(held.lstrip(b"\r\n"))  # the empty lines the reader skips
        scan = RecordScan(job.delimiter, keep=_KEEP, fields=job.limits.max_columns)
        self._scan(scan, held[start:], Origin(offset=len(held), lines=line_breaks(held)))
        if scan.unclosed:
            quote = held.find(b'"')
            line = line_at(held, quote) if quote >= 0 else None
            if line is None and scan.first_quote_breaks is not None:
                line = line_breaks(held[:start]) + scan.first_quote_breaks + 1
            raise unclosed_header(job.file, line)
        line = line_breaks(held[:start]) + 1
        raise MalformedFile(
            f"the header row is longer than {_header_bound(job.limits):,} bytes, more than "
            f"{job.limits.max_columns:,} columns (ICEGATE_MAX_COLUMNS) of {job.limits.max_field_bytes:,} bytes "
            "(ICEGATE_MAX_FIELD_BYTES) can be; check the delimiter and the quotes",
            file=job.file,
            location=f"line {line}",
        )


def _header_bound(limits: Limits) -> int:
    """No header within the limits is longer (its columns being no more, nor longer, than a row's)."""
    return limits.max_columns * (2 * limits.max_field_bytes + 3) + 2
