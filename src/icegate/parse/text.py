"""Bytes to valid UTF-8 text: gzip (capped, streaming), byte-order marks, a configured legacy encoding.

Every text format goes through :func:`to_utf8`, so a file that is not text, or not the encoding it
claims, is refused here with the line and byte offset, never decoded into mojibake.
"""

from __future__ import annotations

import codecs
import zlib
from typing import Final

import pyarrow as pa

from icegate.errors import FileTooLarge, MalformedFile, UnsupportedFormat
from icegate.settings import Limits

GZIP_MAGIC: Final = b"\x1f\x8b"
ZIP_MAGIC: Final = b"PK\x03\x04"
PARQUET_MAGIC: Final = b"PAR1"
OLE2_MAGIC: Final = b"\xd0\xcf\x11\xe0"  # legacy .xls and other Office 97 files

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
    cap = limits.max_uncompressed_bytes
    parts: list[bytes] = []
    total = 0
    remaining = data
    while remaining:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = remaining
        while not inflater.eof:
            try:
                piece = inflater.decompress(pending, min(_DECOMPRESS_CHUNK, cap - total + 1))
            except zlib.error as exc:
                raise MalformedFile(f"the gzip data is corrupt ({exc}); compress the file again", file=file) from None
            total += len(piece)
            if total > cap:
                raise FileTooLarge(
                    f"the file expands to more than {cap:,} bytes when decompressed "
                    "(ICEGATE_MAX_UNCOMPRESSED_BYTES); split it into smaller files",
                    file=file,
                )
            parts.append(piece)
            pending = inflater.unconsumed_tail
            if not piece and not pending:
                raise MalformedFile("the gzip data ends early: the file is truncated; upload it again", file=file)
        remaining = inflater.unused_data
        if remaining and not remaining.startswith(GZIP_MAGIC):
            if remaining.count(0) == len(remaining):  # zero padding after the last member is harmless
                break
            raise MalformedFile(f"{len(remaining):,} bytes of non-gzip data follow the compressed data", file=file)
    return b"".join(parts)


def to_utf8(data: bytes, file: str, encoding: str | None = None) -> bytes:
    """Valid UTF-8 without a byte-order mark and without NUL bytes, or a :class:`MalformedFile`.

    A byte-order mark decides the encoding. Without one, UTF-8 input is taken as UTF-8 even when
    ``encoding`` is set (a legacy 8-bit text is valid UTF-8 only by accident, so reading it as
    ``encoding`` would produce mojibake); other input is transcoded from ``encoding`` or refused.
    """
    _refuse_binary(data, file)
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _no_nul(_transcode(data, codec, file, skip=len(bom)), file)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    codec_name = _codec_name(encoding, file) if encoding else None
    if codec_name in ("utf-8", "utf-8-sig"):
        codec_name = None
    if codec_name and codec_name.startswith(("utf-16", "utf-32")):
        return _no_nul(_transcode(data, codec_name, file), file)
    bad = _invalid_utf8_offset(data)
    if bad is None:
        return _no_nul(data, file)
    if codec_name:
        return _no_nul(_transcode(data, codec_name, file), file)
    raise MalformedFile(
        f"the file is not valid UTF-8: byte 0x{data[bad]:02x} at byte offset {bad:,} cannot be decoded "
        f"(in {_line_excerpt(data, bad)}); {_ENCODING_HINT}",
        file=file,
        location=f"line {line_at(data, bad)}",
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


def _invalid_utf8_offset(data: bytes) -> int | None:
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


def _transcode(data: bytes, codec: str, file: str, *, skip: int = 0) -> bytes:
    try:
        return codecs.decode(memoryview(data)[skip:], codec).encode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        lines = codecs.decode(memoryview(data)[skip:offset], codec, errors="replace").count("\n") + 1
        raise MalformedFile(
            f"the file cannot be decoded as {codec}: byte 0x{data[offset]:02x} at byte offset {offset:,} "
            f"is invalid there; {_ENCODING_HINT}",
            file=file,
            location=f"line {lines}",
        ) from None


def _no_nul(data: bytes, file: str) -> bytes:
    at = data.find(b"\x00")
    if at >= 0:
        raise MalformedFile(
            f"the file contains a NUL byte (0x00) at byte offset {at:,}: it is binary, or UTF-16 without a "
            "byte-order mark; export it again as UTF-8 text",
            file=file,
            location=f"line {line_at(data, at)}",
        )
    return data


def line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _line_excerpt(data: bytes, offset: int, width: int = 60) -> str:
    start = max(data.rfind(b"\n", 0, offset) + 1, offset - width // 2)
    end = data.find(b"\n", offset)
    end = min(len(data) if end < 0 else end, offset + width // 2)
    return repr(data[start:end].decode("utf-8", errors="backslashreplace"))
