"""Bytes to valid UTF-8 text: gzip (capped, streaming), byte-order marks, a configured legacy encoding.

Every text format goes through :func:`to_utf8`, so a file that is not text, or not the encoding it
claims, is refused here with the line and byte offset, never decoded into mojibake. The streamed
parse (:mod:`.text_stream`) uses the same pieces a chunk at a time: :func:`plan_text` on the first
bytes, :func:`gunzip` on the compressed stream and :func:`checked_utf8` on each block, so both say
the same things about the same bytes.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from icegate.errors import FileTooLarge, MalformedFile, UnsupportedFormat
from icegate.parse.origin import Origin
from icegate.settings import Limits

GZIP_MAGIC: Final = b"\x1f\x8b"
ZIP_MAGIC: Final = b"PK\x03\x04"
PARQUET_MAGIC: Final = b"PAR1"
OLE2_MAGIC: Final = b"\xd0\xcf\x11\xe0"  # legacy .xls and other Office 97 files
#: What :func:`plan_text` needs to see of a text: its longest magic number or byte-order mark.
HEAD_BYTES: Final = 4

_ENCODING_HINT: Final = (
    "re-save the file as UTF-8, or set ICEGATE_SOURCE_ENCODING to the encoding it was written in "
    "(for example cp1252 for Excel on Windows, latin-1)"
)
#: A byte-order mark names its encoding; it wins over a configured encoding.
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_DECOMPRESS_CHUNK: Final = 64 * 1024 * 1024


def decompress(data: bytes, file: str, *, limits: Limits) -> bytes:
    """Gunzip ``data`` (all members), never producing more than ``limits.max_uncompressed_bytes``."""
    return b"".join(gunzip((data,), file, limits=limits))


def gunzip(
    chunks: Iterable[bytes], file: str, *, limits: Limits, piece_bytes: int = _DECOMPRESS_CHUNK
) -> Iterator[bytes]:
    """Gunzip a stream of compressed chunks (all members) into pieces of at most ``piece_bytes``.

    Never produces more than ``limits.max_uncompressed_bytes`` in all, counted as it goes, so a
    bomb stops at the cap whether it arrives whole or a chunk at a time.
    """
    cap = limits.max_uncompressed_bytes
    total = 0
    source = (chunk for chunk in chunks if chunk)
    remaining = next(source, b"")
    while remaining:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = remaining
        while not inflater.eof:
            try:
                piece = inflater.decompress(pending, min(piece_bytes, cap - total + 1))
            except zlib.error as exc:
                raise MalformedFile(f"the gzip data is corrupt ({exc}); compress the file again", file=file) from None
            total += len(piece)
            if total > cap:
                raise FileTooLarge(
                    f"the file expands to more than {cap:,} bytes when decompressed "
                    "(ICEGATE_MAX_UNCOMPRESSED_BYTES); split it into smaller files",
                    file=file,
                )
            if piece:
                yield piece
            pending = inflater.unconsumed_tail
            if not piece and not pending and not inflater.eof:  # the member needs more input
                pending = next(source, b"")
                if not pending:
                    raise MalformedFile("the gzip data ends early: the file is truncated; upload it again", file=file)
        remaining = inflater.unused_data
        while len(remaining) < len(GZIP_MAGIC):  # what follows a member is judged by its first two bytes
            more = next(source, b"")
            if not more:
                break
            remaining += more
        if remaining and not remaining.startswith(GZIP_MAGIC):
            _refuse_trailing_data(remaining, source, file)
            return


def _refuse_trailing_data(first: bytes, rest: Iterator[bytes], file: str) -> None:
    """Zero padding after the last member is harmless; anything else is counted (to the end) and refused."""
    size, zeros = len(first), first.count(0) == len(first)
    for chunk in rest:
        size += len(chunk)
        zeros = zeros and chunk.count(0) == len(chunk)
    if not zeros:
        raise MalformedFile(f"{size:,} bytes of non-gzip data follow the compressed data", file=file)


@dataclass(frozen=True)
class TextPlan:
    """How a text is to be read, as its first bytes (and the configured encoding) say."""

    #: Byte-order mark bytes to drop.
    skip: int = 0
    #: Transcode every byte from this codec: a byte-order mark's, or a configured UTF-16/32.
    codec: str | None = None
    #: Transcode from this configured (legacy) codec only if the text is not valid UTF-8.
    fallback: str | None = None
    #: Where the byte offsets in errors count from: the file's start for a UTF-16/32 mark, else after the mark.
    counted_from: int = 0


def plan_text(head: bytes, file: str, encoding: str | None = None) -> TextPlan:
    """Refuse binary files and choose the decoding from the first :data:`HEAD_BYTES` bytes.

    A byte-order mark decides the encoding. Without one, UTF-8 input is taken as UTF-8 even when
    ``encoding`` is set (a legacy 8-bit text is valid UTF-8 only by accident, so reading it as
    ``encoding`` would produce mojibake); other input is transcoded from ``encoding`` or refused.
    """
    _refuse_binary(head, file)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return TextPlan(skip=len(bom), codec=codec)
    skip = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    codec_name = _codec_name(encoding, file) if encoding else None
    if codec_name in ("utf-8", "utf-8-sig"):
        codec_name = None
    if codec_name and codec_name.startswith(("utf-16", "utf-32")):
        return TextPlan(skip=skip, codec=codec_name, counted_from=skip)
    return TextPlan(skip=skip, fallback=codec_name, counted_from=skip)


def to_utf8(data: bytes, file: str, encoding: str | None = None) -> bytes:
    """Valid UTF-8 without a byte-order mark and without NUL bytes, or a :class:`MalformedFile`.

    The encoding is chosen as :func:`plan_text` says.
    """
    plan = plan_text(data[:HEAD_BYTES], file, encoding)
    if plan.codec:
        return no_nul(_transcode(data, plan.codec, file, skip=plan.skip, counted_from=plan.counted_from), file)
    if plan.skip:
        data = data[plan.skip :]
    bad = invalid_utf8_offset(data)
    if bad is None:
        return no_nul(data, file)
    if plan.fallback:
        return no_nul(_transcode(data, plan.fallback, file), file)
    raise not_utf8(data, bad, file, Origin())


def checked_utf8(text: bytes, file: str, origin: Origin) -> bytes:
    """``text`` itself when it is valid UTF-8 without NUL bytes; else the error :func:`to_utf8` gives.

    For a block of a streamed file: ``origin`` places the error's line and byte offset in the file.
    """
    bad = invalid_utf8_offset(text)
    if bad is not None:
        raise not_utf8(text, bad, file, origin)
    return no_nul(text, file, origin)


def undecodable(codec: str, byte: int, offset: int, line: int, file: str) -> MalformedFile:
    """The error for a byte that is invalid in ``codec``, at ``offset`` on ``line`` of the file."""
    return MalformedFile(
        f"the file cannot be decoded as {codec}: byte 0x{byte:02x} at byte offset {offset:,} "
        f"is invalid there; {_ENCODING_HINT}",
        file=file,
        location=f"line {line}",
    )


def _codec_name(encoding: str, file: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise UnsupportedFormat(
            f"the source encoding {encoding!r} (ICEGATE_SOURCE_ENCODING) is not a known codec; "
            "use a Python codec name such as utf-8, cp1252 or latin-1",
            file=file,
        ) from None


def _refuse_binary(data: bytes, file: str) -> None:
    for magic, kind in ((ZIP_MAGIC, "a zip archive (an .xlsx workbook?)"), (PARQUET_MAGIC, "a Parquet file")):
        if data.startswith(magic):
            raise MalformedFile(f"the file is {kind}, not text; give it the right suffix", file=file)
    if data.startswith(OLE2_MAGIC):
        raise MalformedFile("the file is a legacy Office (.xls) document; save it as .xlsx or CSV", file=file)


def invalid_utf8_offset(data: bytes | memoryview) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence, or None. Fast: validated by Arrow."""
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        pass
    else:
        return None
    # Slow path, only for a bad file: find where, without decoding the whole file at once.
    decoder = codecs.getincrementaldecoder("utf-8")()
    step = 1 << 20
    for start in range(0, len(data), step):
        held = len(decoder.getstate()[0])
        try:
            decoder.decode(data[start : start + step], final=start + step >= len(data))
        except UnicodeDecodeError as exc:
            return start - held + exc.start
    return len(data)  # pragma: no cover - Arrow and Python disagree about validity


def not_utf8(data: bytes, bad: int, file: str, origin: Origin) -> MalformedFile:
    """The error for the invalid UTF-8 byte ``data[bad]`` (``origin`` places ``data`` in the file)."""
    return MalformedFile(
        f"the file is not valid UTF-8: byte 0x{data[bad]:02x} at byte offset {origin.offset + bad:,} cannot be "
        f"decoded (in {line_excerpt(data, bad)}); {_ENCODING_HINT}",
        file=file,
        location=f"line {origin.lines + line_at(data, bad)}",
    )


def _transcode(data: bytes, codec: str, file: str, *, skip: int = 0, counted_from: int = 0) -> bytes:
    try:
        return codecs.decode(memoryview(data)[skip:], codec).encode("utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        lines = line_breaks(codecs.decode(memoryview(data)[skip:at], codec, errors="replace")) + 1
        raise undecodable(codec, data[at], at - counted_from, lines, file) from None


def no_nul(data: bytes, file: str, origin: Origin = Origin()) -> bytes:  # noqa: B008 - immutable
    """``data`` itself, or the error for its first NUL byte (``origin`` places ``data`` in the file)."""
    at = data.find(b"\x00")
    if at >= 0:
        raise MalformedFile(
            f"the file contains a NUL byte (0x00) at byte offset {origin.offset + at:,}: it is binary, or UTF-16 "
            "without a byte-order mark; export it again as UTF-8 text",
            file=file,
            location=f"line {origin.lines + line_at(data, at)}",
        )
    return data


def line_breaks(text: str | bytes) -> int:
    """Line breaks in ``text``: line feeds, carriage return and line feed pairs, lone carriage returns."""
    if isinstance(text, str):
        feeds = text.count("\n")
        return feeds + text.count("\r") - text.count("\r\n") if "\r" in text else feeds
    feeds = text.count(b"\n")
    return feeds + text.count(b"\r") - text.count(b"\r\n") if b"\r" in text else feeds


class LineBreaks:
    """:func:`line_breaks` of text that goes by in pieces: a carriage return ending one piece and the line feed
    starting the next are one line break."""

    def __init__(self, count: int = 0) -> None:
        #: Line breaks so far (``count``: before the first piece).
        self.count = count
        self._ends_in_cr = False

    def through(self, text: str | bytes) -> int:
        """The line breaks before ``text`` and in it (``text`` is not added)."""
        joined = self._ends_in_cr and text[:1] in ("\n", b"\n")
        return self.count + line_breaks(text) - joined

    def add(self, text: str | bytes) -> None:
        self.count = self.through(text)
        if text:
            self._ends_in_cr = text[-1:] in ("\r", b"\r")


def line_at(data: bytes, offset: int) -> int:
    """The line ``data[offset]`` is on, 1-based: a line feed, a carriage return and line feed, or a lone
    carriage return before it each end a line (as the records' lines are counted, :mod:`.lines`)."""
    before = data[:offset]
    # A carriage return whose line feed is at the offset: the pair ends the line the offset is on.
    cut_pair = before.endswith(b"\r") and data[offset : offset + 1] == b"\n"
    return line_breaks(before) - cut_pair + 1


def line_excerpt(data: bytes, offset: int, width: int = 60) -> str:
    start = max(data.rfind(b"\n", 0, offset) + 1, offset - width // 2)
    end = data.find(b"\n", offset)
    end = min(len(data) if end < 0 else end, offset + width // 2)
    return repr(data[start:end].decode("utf-8", errors="backslashreplace"))
