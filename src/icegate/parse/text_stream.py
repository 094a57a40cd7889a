"""A binary stream to UTF-8 text, a chunk at a time, decoded as :func:`.text.to_utf8` decodes a whole file.

The stream is read with ``read(n)`` only, never whole, and its bytes are counted against the limits as
they arrive. UTF-8 text passes through untouched (the streamed parse validates it a block at a time,
with :func:`.text.checked_utf8`); UTF-16/32 and legacy encodings go through incremental decoders, so
a character cut by a chunk boundary decodes whole.

One decision cannot be made a chunk at a time: with a legacy encoding configured, :func:`to_utf8`
reads a file as UTF-8 only if *all* of it is valid UTF-8. Until the first byte beyond ASCII both
readings agree; there, a seekable source is read ahead once to decide. A source that cannot seek is
taken as UTF-8, and a later byte that is not UTF-8 is refused as a file of mixed encodings.
"""

from __future__ import annotations

import codecs
import io
import os
import stat
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Final, Protocol, runtime_checkable

from icegate.errors import MalformedFile
from icegate.parse.limits import check_size, too_many_bytes
from icegate.parse.origin import Origin
from icegate.parse.text import (
    GZIP_MAGIC,
    HEAD_BYTES,
    LineBreaks,
    TextPlan,
    gunzip,
    invalid_utf8_offset,
    line_breaks,
    line_excerpt,
    no_nul,
    not_utf8,
    plan_text,
    undecodable,
)
from icegate.settings import Limits

#: A UTF-8 sequence is at most this long: a chunk's last bytes may be the start of one.
_UTF8_MAX: Final = 4
#: Text kept before a chunk for the excerpt of an error in it (as :func:`.text.line_excerpt` shows).
_EXCERPT: Final = 64


class Readable(Protocol):
    """What the streamed parse needs of its source: ``read(n)`` (a file, an S3 body, a wrapper)."""

    def read(self, size: int = ..., /) -> bytes: ...


#: Whether all of the file's text after a byte-order mark of the given length is valid UTF-8 (read again).
Lookahead = Callable[[int], bool]


@runtime_checkable
class _Seekable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def seekable(self) -> bool: ...
    def tell(self) -> int: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...


def source_chunks(source: Readable, file: str, *, limits: Limits, read_bytes: int) -> Iterator[bytes]:
    """The source's bytes, ``read_bytes`` at a time, held to ``limits.max_bytes`` as they arrive.

    A regular file's size is known first, and refused before reading as :func:`check_size` refuses it.
    """
    size = _known_size(source)
    if size is not None:
        check_size(size, file, limits)
    total = 0
    while chunk := source.read(read_bytes):
        total += len(chunk)
        if total > limits.max_bytes:
            raise too_many_bytes(file, limits)
        yield chunk


def lookahead(source: Readable, file: str, *, limits: Limits, read_bytes: int) -> Lookahead | None:
    """For a seekable source, a look at its whole text from where it stands now, leaving it where it was.

    Taken before anything is read; None when the source cannot seek (it is read once, in order).
    """
    if not isinstance(source, _Seekable) or not source.seekable():
        return None
    start = source.tell()

    def utf8_throughout(skip: int) -> bool:
        here = source.tell()
        source.seek(start)
        try:
            raw = source_chunks(source, file, limits=limits, read_bytes=read_bytes)
            return _valid_utf8_throughout(decompressed(raw, file, limits=limits, read_bytes=read_bytes), skip)
        finally:
            source.seek(here)

    return utf8_throughout


def decompressed(chunks: Iterator[bytes], file: str, *, limits: Limits, read_bytes: int) -> Iterator[bytes]:
    """Gunzipped when the stream starts with gzip's magic bytes (whatever its name says), else as it is."""
    head, chunks = peek(chunks, len(GZIP_MAGIC))
    if head.startswith(GZIP_MAGIC):
        return gunzip(chunks, file, limits=limits, piece_bytes=read_bytes)
    return chunks


def utf8_chunks(
    chunks: Iterator[bytes], file: str, *, encoding: str | None, lookahead: Lookahead | None = None
) -> Iterator[bytes]:
    """The text as UTF-8 without a byte-order mark, as :func:`to_utf8` would decode it; NUL bytes are left in.

    UTF-8 input is passed through unvalidated (its blocks are checked later); a byte-order mark or a
    configured UTF-16/32 transcodes every chunk; a configured legacy encoding transcodes only a text
    that is not valid UTF-8 (``lookahead`` lets that be decided exactly; see the module's notes).
    """
    head, chunks = peek(chunks, HEAD_BYTES)
    plan = plan_text(head, file, encoding)
    chunks = dropped(chunks, plan.skip)
    if plan.codec:
        return transcoded(chunks, plan.codec, file, offset=plan.skip - plan.counted_from)
    if plan.fallback:
        return _utf8_or_legacy(chunks, plan, file, lookahead)
    return chunks


def transcoded(
    chunks: Iterator[bytes], codec: str, file: str, *, offset: int = 0, lines: LineBreaks | None = None
) -> Iterator[bytes]:
    """Chunks decoded from ``codec`` and encoded as UTF-8; a byte invalid in it is refused as :func:`to_utf8` does.

    ``offset`` and ``lines``: the byte offset (as errors count it) of the first chunk, and the line breaks
    of the text before it.
    """
    lines = lines or LineBreaks()
    decoder = codecs.getincrementaldecoder(codec)()
    for chunk, final in chain(((c, False) for c in chunks), [(b"", True)]):
        state = decoder.getstate()
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            held = len(state[0])
            before = codecs.getincrementaldecoder(codec)(errors="replace")
            before.setstate(state)
            line = lines.through(before.decode(chunk[: max(0, exc.start - held)])) + 1
            raise undecodable(codec, exc.object[exc.start], offset - held + exc.start, line, file) from None
        offset += len(chunk)
        lines.add(text)
        if text:
            yield text.encode("utf-8")


def _utf8_or_legacy(chunks: Iterator[bytes], plan: TextPlan, file: str, lookahead: Lookahead | None) -> Iterator[bytes]:
    """UTF-8 as it is, unless the text is not valid UTF-8: then all of it transcoded from the fallback codec.

    Up to the first byte beyond ASCII both readings give the same text, so that much is passed on
    before the decision.
    """
    assert plan.fallback is not None
    codec = plan.fallback
    offset = 0  # of the text passed on
    lines = LineBreaks()
    held = b""  # the start of a UTF-8 sequence that a chunk boundary cut
    unconfirmed = False  # read as UTF-8 beyond ASCII, though the rest of the file could not be looked at
    for chunk in chunks:
        data = held + chunk
        end, bad = _valid_utf8_prefix(data, final=False)
        if bad is not None:
            if unconfirmed:
                raise _mixed_encodings(data, bad, file, codec, offset=offset, lines=lines)
            yield from transcoded(chain([data], chunks), codec, file, offset=offset, lines=lines)
            return
        if not unconfirmed and not data[:end].isascii():
            if lookahead is None:
                unconfirmed = True
            elif lookahead(plan.skip):
                yield data
                yield from chunks
                return
            else:
                yield from transcoded(chain([data], chunks), codec, file, offset=offset, lines=lines)
                return
        held = data[end:]
        if end:
            yield data[:end]
        offset += end
        lines.add(data[:end])
    if held:  # the text ends inside a UTF-8 sequence: it is not UTF-8
        if unconfirmed:
            raise _mixed_encodings(held, 0, file, codec, offset=offset, lines=lines)
        yield from transcoded(iter([held]), codec, file, offset=offset, lines=lines)


class Utf8Check:
    """:func:`.text.checked_utf8` for text that goes by in chunks and is not kept (a record too long to hold).

    ``origin`` places the first chunk in the file; an error's excerpt shows what the last chunks still hold.
    """

    def __init__(self, file: str, origin: Origin) -> None:
        self._file = file
        self._offset, self._lines = origin.offset, LineBreaks(origin.lines)
        self._held = b""  # the start of a UTF-8 sequence that a chunk boundary cut
        self._before = b""  # the text just before, for an error's excerpt

    def feed(self, chunk: bytes, *, final: bool = False) -> None:
        data = self._held + chunk
        end, bad = _valid_utf8_prefix(data, final=final)
        window = self._before + data
        origin = Origin(offset=self._offset - len(self._before), lines=self._lines.count - line_breaks(self._before))
        if bad is not None:
            raise not_utf8(window, len(self._before) + bad, self._file, origin)
        no_nul(window, self._file, origin)
        self._held = data[end:]
        self._before = data[max(0, end - _EXCERPT) : end]
        self._offset += end
        self._lines.add(data[:end])

    def finish(self) -> None:
        """The text ends: a sequence it cut is invalid."""
        self.feed(b"", final=True)


def _valid_utf8_prefix(data: bytes, *, final: bool) -> tuple[int, int | None]:
    """How much of ``data`` is whole UTF-8 sequences, and the offset of its first invalid byte (or None)."""
    end = len(data) if final else len(data) - _cut_sequence(data)
    return end, invalid_utf8_offset(memoryview(data)[:end])


def _cut_sequence(data: bytes) -> int:
    """Length of the incomplete UTF-8 sequence that ends ``data`` (0 if none): it may go on in the next chunk."""
    for back in range(1, min(_UTF8_MAX - 1, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead byte
            continue
        needs = 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4 if 0xF0 <= byte < 0xF8 else 1
        return back if needs > back else 0
    return 0


def _valid_utf8_throughout(chunks: Iterator[bytes], skip: int) -> bool:
    """Whether the whole text (after ``skip`` bytes of byte-order mark) is valid UTF-8."""
    held = b""
    for chunk in dropped(chunks, skip):
        data = held + chunk
        end, bad = _valid_utf8_prefix(data, final=False)
        if bad is not None:
            return False
        held = data[end:]
    return not held


def _mixed_encodings(data: bytes, bad: int, file: str, codec: str, *, offset: int, lines: LineBreaks) -> MalformedFile:
    line = lines.through(data[:bad]) + 1
    return MalformedFile(
        f"the file is not valid UTF-8: byte 0x{data[bad]:02x} at byte offset {offset + bad:,} cannot be decoded "
        f"(in {line_excerpt(data, bad)}), yet the text before it is UTF-8 beyond ASCII, which {codec} "
        "(ICEGATE_SOURCE_ENCODING) would have read differently; save the whole file in one encoding, UTF-8 "
        "preferably, or upload it from a source that can be read twice",
        file=file,
        location=f"line {line}",
    )


def peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """The first ``size`` bytes of a stream (fewer if it is shorter), and the whole stream again."""
    head: list[bytes] = []
    length = 0
    for chunk in chunks:
        head.append(chunk)
        length += len(chunk)
        if length >= size:
            break
    first = b"".join(head)
    return first[:size], chain([first] if first else [], chunks)


def dropped(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The stream without its first ``size`` bytes."""
    for chunk in chunks:
        if size >= len(chunk):
            size -= len(chunk)
            continue
        yield chunk[size:] if size else chunk
        size = 0
        yield from chunks
        return


def _known_size(source: Readable) -> int | None:
    """The bytes left in a regular local file (None for anything else: a pipe, an S3 body, a wrapper)."""
    if not isinstance(source, io.BufferedReader | io.BufferedRandom | io.FileIO):
        return None
    try:
        status = os.fstat(source.fileno())
        return status.st_size - source.tell() if stat.S_ISREG(status.st_mode) else None
    except (OSError, ValueError):
        return None
