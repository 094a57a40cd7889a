"""Parse: the bytes of one scraped file in, an all-string Arrow table in the dataset's shape out.

Pure: no storage, no Lambda. The steps are small functions that tests (and callers) may use alone:

1. :func:`detect_format` from the name, :func:`decompress` for gzip (capped, streaming);
2. one decoder per format (:func:`decode_csv`, :func:`decode_xlsx`, :func:`decode_json`,
   :func:`decode_parquet`) returning every source column as strings under its source header;
3. :func:`map_columns` renaming source headers onto the contract, trimming and normalising values.

Every failure is an :mod:`icegate.errors` class carrying ``file=`` and, where there is one, a
``location=`` ("line 12", "line 12, column 3", "row 5, column 'caption'") and says what to do.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import PurePosixPath
from typing import Any, Final, NoReturn

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from icegate.datasets import Column, Dataset, NormalizeContext
from icegate.errors import EmptyFile, FileTooLarge, MalformedFile, SchemaMismatch, UnsupportedFormat
from icegate.settings import Limits
from icegate.sizing import format_weight

__all__ = [
    "SUPPORTED_FORMATS",
    "ParsedTable",
    "canonical_name",
    "check_limits",
    "decode_csv",
    "decode_json",
    "decode_parquet",
    "decode_xlsx",
    "decompress",
    "detect_format",
    "map_columns",
    "parse_bytes",
    "to_utf8",
]

#: File suffix (after an optional ``.gz``) -> the format name reported in :class:`ParsedTable`.
SUPPORTED_FORMATS: Final[dict[str, str]] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".xlsx": "xlsx",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
}

GZIP_MAGIC: Final = b"\x1f\x8b"
_ZIP_MAGIC: Final = b"PK\x03\x04"
_PARQUET_MAGIC: Final = b"PAR1"
_OLE2_MAGIC: Final = b"\xd0\xcf\x11\xe0"  # legacy .xls and other Office 97 files

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

#: Big enough for pyarrow to parse ~175 MB on two cores in parallel, small enough to split the work.
_CSV_BLOCK_SIZE: Final = 4 * 1024 * 1024
#: The reader gives up listing rows with the wrong number of fields after this many.
_MAX_INVALID_ROWS: Final = 100
_DECOMPRESS_CHUNK: Final = 64 * 1024 * 1024
#: From this many rows on, columns are cleaned in parallel.
_PARALLEL_ROWS: Final = 100_000


@dataclass(frozen=True)
class ParsedTable:
    """A file decoded into the dataset's columns, every value a trimmed string or null."""

    #: ``dataset.column_names`` in contract order; every column ``string`` (or ``large_string``).
    table: pa.Table
    #: ``csv``, ``tsv``, ``xlsx``, ``json``, ``ndjson`` or ``parquet`` (gzip is transparent).
    format: str
    #: Source headers, as written in the file, that match no contract column.
    ignored_columns: list[str]


def parse_bytes(
    data: bytes,
    name: str,
    dataset: Dataset,
    *,
    limits: Limits,
    encoding: str | None = None,
    normalize: NormalizeContext = NormalizeContext(),  # noqa: B008 - immutable
) -> ParsedTable:
    """Decode one file (``name`` is its key or path) into ``dataset``'s columns.

    ``encoding`` is the source encoding of text formats when they are not UTF-8 (None: UTF-8, with
    or without a byte-order mark, or UTF-16/32 with one; anything else is refused). ``normalize``
    is what the contract's normalisers read (the phone region).
    """
    if len(data) > limits.max_bytes:
        raise FileTooLarge(
            f"the file is {len(data):,} bytes; the limit is {limits.max_bytes:,} (ICEGATE_MAX_BYTES). "
            "Split the file or raise the limit",
            file=name,
        )
    fmt = detect_format(name)
    # Compression is recognised by its magic bytes: a ".gz" name on plain bytes still reads.
    if data.startswith(GZIP_MAGIC):
        data = decompress(data, name, limits=limits)
    _check_decoded_size(data, fmt, name, limits)
    decoded, fmt = _decode(data, fmt, name, limits=limits, encoding=encoding)
    if decoded.num_rows == 0:
        raise EmptyFile(
            "the file has no data rows"
            + (f" (only a header: {', '.join(map(repr, decoded.column_names))})" if decoded.num_columns else ""),
            file=name,
        )
    table, ignored = map_columns(decoded, dataset, file=name, normalize=normalize)
    return ParsedTable(table=table, format=fmt, ignored_columns=ignored)


def _check_decoded_size(data: bytes, fmt: str, file: str, limits: Limits) -> None:
    """Refuse text that decodes into more memory than the limit allows (JSON costs more per byte than CSV)."""
    weight = format_weight(fmt)
    if weight > 1 and len(data) * weight > limits.max_uncompressed_bytes:
        raise FileTooLarge(
            f"the {fmt.upper()} text is {len(data):,} bytes; decoding JSON takes about {weight:.1f} times the memory "
            f"of CSV per byte, so the limit for it is {int(limits.max_uncompressed_bytes / weight):,} bytes "
            "(ICEGATE_MAX_UNCOMPRESSED_BYTES / weight). Export it as CSV, or split it",
            file=file,
        )


def _decode(data: bytes, fmt: str, file: str, *, limits: Limits, encoding: str | None) -> tuple[pa.Table, str]:
    if fmt in ("csv", "tsv"):
        return decode_csv(data, file, limits=limits, delimiter="\t" if fmt == "tsv" else ",", encoding=encoding), fmt
    if fmt == "xlsx":
        return decode_xlsx(data, file, limits=limits), fmt
    if fmt in ("json", "ndjson"):
        return decode_json(data, file, limits=limits, encoding=encoding, lines=fmt == "ndjson")
    return decode_parquet(data, file, limits=limits), fmt


# --------------------------------------------------------------------------------------------------
# Format and compression
# --------------------------------------------------------------------------------------------------


def detect_format(name: str) -> str:
    """The format named by the file's suffix (case-insensitive, a trailing ``.gz`` ignored)."""
    base = PurePosixPath(name.replace("\\", "/")).name.lower()
    base = base.removesuffix(".gz")
    suffix = PurePosixPath(base).suffix
    try:
        return SUPPORTED_FORMATS[suffix]
    except KeyError:
        supported = ", ".join(SUPPORTED_FORMATS)
        what = f"suffix {suffix!r}" if suffix else "no suffix"
        raise UnsupportedFormat(
            f"the file has {what}; supported: {supported} (each optionally gzip-compressed, .gz)", file=name
        ) from None


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


# --------------------------------------------------------------------------------------------------
# Text encodings
# --------------------------------------------------------------------------------------------------


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
        location=f"line {_line_at(data, bad)}",
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
    for magic, kind in ((_ZIP_MAGIC, "a zip archive (an .xlsx workbook?)"), (_PARQUET_MAGIC, "a Parquet file")):
        if data.startswith(magic):
            raise MalformedFile(f"the file is {kind}, not text; give it the right suffix", file=file)
    if data.startswith(_OLE2_MAGIC):
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
            location=f"line {_line_at(data, at)}",
        )
    return data


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _line_excerpt(data: bytes, offset: int, width: int = 60) -> str:
    start = max(data.rfind(b"\n", 0, offset) + 1, offset - width // 2)
    end = data.find(b"\n", offset)
    end = min(len(data) if end < 0 else end, offset + width // 2)
    return repr(data[start:end].decode("utf-8", errors="backslashreplace"))


# --------------------------------------------------------------------------------------------------
# CSV / TSV
# --------------------------------------------------------------------------------------------------


class _InvalidRows:
    """``invalid_row_handler`` for pyarrow: skips blank lines, remembers rows of the wrong width."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, str]] = []

    def __call__(self, row: Any) -> str:
        if not row.text.strip():
            return "skip"  # a line of spaces is a blank line too
        self.rows.append((row.expected_columns, row.actual_columns, row.text))
        return "error" if len(self.rows) >= _MAX_INVALID_ROWS else "skip"


def decode_csv(
    data: bytes, file: str, *, limits: Limits, delimiter: str = ",", encoding: str | None = None
) -> pa.Table:
    """Every field of a delimited text file as a string, under the header row's names.

    Quoted fields may hold delimiters, doubled quotes and line breaks; blank lines are skipped;
    empty fields stay empty strings (:func:`map_columns` turns them into nulls).
    """
    text = to_utf8(data, file, encoding)
    if not text or text.isspace():
        raise EmptyFile("the file is empty: no header row and no data", file=file)
    names = _csv_header(text, file, delimiter)
    if len(names) > limits.max_columns:
        raise MalformedFile(
            f"the header has {len(names):,} columns; the limit is {limits.max_columns:,} (ICEGATE_MAX_COLUMNS). "
            "Check the delimiter, or drop unused columns",
            file=file,
            location="line 1",
        )
    invalid = _InvalidRows()
    table = _read_csv(text, file, delimiter, names, invalid)
    if invalid.rows:
        _raise_invalid_row(text, file, delimiter, invalid.rows)
    _refuse_unclosed_quote(text, table, file, delimiter)
    check_limits(table, file, limits)
    return table


def _parse_options(delimiter: str, handler: Callable[[Any], str]) -> Any:
    return pa_csv.ParseOptions(
        delimiter=delimiter,
        quote_char='"',
        double_quote=True,
        escape_char=False,
        newlines_in_values=True,
        ignore_empty_lines=True,
        invalid_row_handler=handler,
    )


def _csv_header(text: bytes, file: str, delimiter: str) -> list[str]:
    """The header row's names as pyarrow will read them (duplicates kept), from the first block only."""
    block = 1 << 20
    while True:
        try:
            reader = pa_csv.open_csv(
                pa.BufferReader(text),
                read_options=pa_csv.ReadOptions(block_size=block, use_threads=False),
                parse_options=_parse_options(delimiter, lambda row: "skip"),
                convert_options=pa_csv.ConvertOptions(check_utf8=False),
            )
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc) and block < len(text):
                block *= 4
                continue
            raise _csv_error(exc, text, file) from None
        names: list[str] = reader.schema.names
        reader.close()
        return names


def _read_csv(text: bytes, file: str, delimiter: str, names: list[str], invalid: _InvalidRows) -> pa.Table:
    convert = pa_csv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        check_utf8=False,  # to_utf8 validated the whole file; fields are cut at ASCII bytes
    )
    block = _CSV_BLOCK_SIZE
    while True:
        try:
            return pa_csv.read_csv(
                pa.BufferReader(text),
                read_options=pa_csv.ReadOptions(block_size=block, use_threads=True),
                parse_options=_parse_options(delimiter, invalid),
                convert_options=convert,
            )
        except pa.ArrowInvalid as exc:
            if invalid.rows:
                return pa.table({})  # reported by the caller, with the line
            # A row longer than a block: read the file as one block (serial, still correct).
            if "straddl" in str(exc) and block <= len(text):
                block = len(text) + 1
                continue
            raise _csv_error(exc, text, file) from None


def _csv_error(exc: Exception, text: bytes, file: str) -> MalformedFile:
    message = str(exc)
    if "Empty CSV file" in message:  # the text is not blank, yet pyarrow found no complete row
        quote = text.find(b'"')
        return MalformedFile(
            "no complete header row: a quoted value opened here is never closed; close the quote",
            file=file,
            location=f"line {_line_at(text, quote)}" if quote >= 0 else None,
        )
    return MalformedFile(f"the file cannot be read as delimited text: {message}", file=file)


def _raise_invalid_row(text: bytes, file: str, delimiter: str, rows: list[tuple[int, int, str]]) -> NoReturn:
    located = sorted(
        ((_find_row(text, row_text), expected, actual, row_text) for expected, actual, row_text in rows),
        key=lambda item: (item[0] is None, item[0] or 0),
    )
    offset, expected, actual, row_text = located[0]
    shown = "a tab" if delimiter == "\t" else repr(delimiter)
    hint = (
        f"a value that contains {shown} must be quoted"
        if actual > expected
        else "a field is missing, or a quote opened in this row is never closed"
        if '"' in row_text
        else "a field is missing"
    )
    more = f" ({len(rows)}{'+' if len(rows) >= _MAX_INVALID_ROWS else ''} such rows)" if len(rows) > 1 else ""
    preview = row_text if len(row_text) <= 80 else row_text[:77] + "..."
    raise MalformedFile(
        f"a row has {actual} fields but the header has {expected}{more}: {preview!r}; {hint}",
        file=file,
        location=f"line {_line_at(text, offset)}" if offset is not None else None,
    )


def _find_row(text: bytes, row_text: str) -> int | None:
    """Byte offset where a whole row with exactly this raw text starts, or None."""
    needle = row_text.encode("utf-8")
    at = text.find(needle)
    while at >= 0:
        end = at + len(needle)
        starts_line = at == 0 or text[at - 1] in b"\r\n"
        ends_line = end == len(text) or text[end] in b"\r\n"
        if starts_line and ends_line:
            return at
        at = text.find(needle, at + 1)
    return None


def _refuse_unclosed_quote(text: bytes, table: pa.Table, file: str, delimiter: str) -> None:
    """pyarrow reads an unclosed quote in the last column to the end of the file without a word.

    Then, and only then, the file ends with the opening quote plus the (re-escaped) last value,
    and that quote starts a field.
    """
    if table.num_rows == 0 or table.num_columns == 0:
        return
    last = table.column(table.num_columns - 1)[-1].as_py()
    tail = b'"' + last.replace('"', '""').encode("utf-8")
    if not text.endswith(tail):
        return
    opening = len(text) - len(tail)
    if opening == 0 or text[opening - 1] in (delimiter.encode() + b"\r\n"):
        raise MalformedFile(
            "a quoted value opened here is never closed, so the rest of the file was read into it; "
            'close the quote (a quote inside a quoted value is written twice: "")',
            file=file,
            location=f"line {_line_at(text, opening)}",
        )


# --------------------------------------------------------------------------------------------------
# XLSX
# --------------------------------------------------------------------------------------------------


def decode_xlsx(data: bytes, file: str, *, limits: Limits) -> pa.Table:
    """The first worksheet as strings; its first non-empty row is the header."""
    if data.startswith(_OLE2_MAGIC):
        raise MalformedFile("the file is a legacy .xls workbook; save it as .xlsx (or CSV)", file=file)
    _check_zip(data, file, limits)
    import openpyxl  # imported here: a cold start pays for it only when a workbook arrives

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # style and data-validation warnings say nothing about the data
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds (KeyError, ValueError, XML errors) for a broken file
        raise MalformedFile(f"the workbook cannot be opened ({type(exc).__name__}: {exc})", file=file) from None
    try:
        if not workbook.worksheets:
            raise EmptyFile("the workbook has no worksheet", file=file)
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()  # a wrong <dimension> tag would otherwise cut rows short
        return _sheet_table(sheet.iter_rows(values_only=True), file, limits)
    except (EmptyFile, MalformedFile, FileTooLarge):
        raise
    except Exception as exc:  # a sheet part that is broken only shows while reading
        raise MalformedFile(f"the worksheet cannot be read ({type(exc).__name__}: {exc})", file=file) from None
    finally:
        workbook.close()


def _check_zip(data: bytes, file: str, limits: Limits) -> None:
    """Refuse a zip whose members would expand past the cap (zipfile stops at the declared sizes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise MalformedFile(
            f"the file is not a valid .xlsx workbook (not a readable zip archive: {exc})", file=file
        ) from None
    if expanded > limits.max_uncompressed_bytes:
        raise FileTooLarge(
            f"the workbook expands to {expanded:,} bytes; the limit is {limits.max_uncompressed_bytes:,} "
            "(ICEGATE_MAX_UNCOMPRESSED_BYTES). Export it as CSV, or split it",
            file=file,
        )


def _sheet_table(rows: Iterable[tuple[Any, ...]], file: str, limits: Limits) -> pa.Table:
    from openpyxl.utils import get_column_letter

    header: list[str] | None = None
    columns: list[list[str | None]] = []
    count = 0
    for number, row in enumerate(rows, start=1):
        values = [_cell_text(value) for value in row]
        while values and values[-1] is None:
            values.pop()
        if not any(v is not None and v.strip() for v in values):
            continue
        if header is None:
            if len(values) > limits.max_columns:
                raise MalformedFile(
                    f"the header has {len(values):,} columns; the limit is {limits.max_columns:,} "
                    "(ICEGATE_MAX_COLUMNS)",
                    file=file,
                    location=f"row {number}",
                )
            header = [v or "" for v in values]
            columns = [[] for _ in header]
            continue
        if len(values) > len(header):
            cell, last = get_column_letter(len(values)), get_column_letter(len(header))
            raise MalformedFile(
                f"cell {cell}{number} holds a value right of the last header (column {last}); "
                "give that column a header or delete the cell",
                file=file,
                location=f"row {number}, column {cell}",
            )
        if count >= limits.max_rows:
            raise _too_many_rows(file, limits)
        count += 1
        values.extend([None] * (len(header) - len(values)))
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    if header is None:
        raise EmptyFile("the first worksheet is empty", file=file)
    table = _string_table(header, columns)
    check_limits(table, file, limits)
    return table


def _cell_text(value: Any) -> str | None:
    """A cell as the text a user typed: 123, 1.5, 2026-01-13, 2026-01-13T17:53:19, true."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        # Excel keeps 15 significant digits; beyond them a double only carries binary noise.
        return repr(float(f"{value:.15g}"))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------------------------------
# JSON / NDJSON
# --------------------------------------------------------------------------------------------------


class _JsonNumber(str):
    """A JSON number kept as its source text (``1.50`` stays ``1.50``; big integers stay exact)."""

    __slots__ = ()


_JSON = json.JSONDecoder(parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_JsonNumber)


def decode_json(
    data: bytes, file: str, *, limits: Limits, encoding: str | None = None, lines: bool = False
) -> tuple[pa.Table, str]:
    """Records from a JSON array of objects, one JSON object, or NDJSON (one object per line).

    Returns the table and the format found (``json`` or ``ndjson``). The header is the union of
    the keys in first-seen order; numbers keep their JSON text, booleans read ``true``/``false``,
    nested values are JSON text.
    """
    text = to_utf8(data, file, encoding).decode("utf-8")
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise EmptyFile("the file is empty", file=file)
    if not lines and text[start] == "[":
        records = _json_document(text, file)
        if not isinstance(records, list):  # pragma: no cover - a document starting with "[" is a list
            records = [records]
        return _records_table(_numbered(records, "array item"), file, limits), "json"
    if not lines:
        first, end = _json_value(text, start, file)
        if not text[end:].strip():
            return _records_table(_numbered([first], "document"), file, limits), "json"
    return _records_table(_ndjson_records(text, file), file, limits), "ndjson"


def _json_document(text: str, file: str) -> Any:
    try:
        return _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc, file) from None


def _json_value(text: str, start: int, file: str) -> tuple[Any, int]:
    try:
        value, end = _JSON.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise _json_error(exc, file) from None
    return value, end


def _json_error(exc: json.JSONDecodeError, file: str, line: int | None = None) -> MalformedFile:
    where = f"line {line or exc.lineno}, column {exc.colno}"
    return MalformedFile(f"invalid JSON: {exc.msg}; fix the syntax there", file=file, location=where)


def _numbered(records: list[Any], what: str) -> Iterator[tuple[str, Any]]:
    for index, record in enumerate(records, start=1):
        yield f"{what} {index}", record


def _ndjson_records(text: str, file: str) -> Iterator[tuple[str, Any]]:
    # Split on "\n" only: U+2028 and friends may sit unescaped inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value, end = _JSON.raw_decode(line, len(line) - len(line.lstrip()))
        except json.JSONDecodeError as exc:
            raise _json_error(exc, file, line=number) from None
        if line[end:].strip():
            raise MalformedFile(
                "more than one JSON value on this line; NDJSON holds one object per line",
                file=file,
                location=f"line {number}, column {end + 1}",
            )
        yield f"line {number}", value


def _records_table(records: Iterable[tuple[str, Any]], file: str, limits: Limits) -> pa.Table:
    columns: dict[str, list[str | None]] = {}
    for index, (where, record) in enumerate(records):
        if not isinstance(record, dict):
            kind = "an array" if isinstance(record, list) else "a value" if record is not None else "null"
            raise MalformedFile(f"expected a JSON object (one record) but found {kind}", file=file, location=where)
        if index >= limits.max_rows:
            raise _too_many_rows(file, limits)
        for key, value in record.items():
            column = columns.get(key)
            if column is None:
                if len(columns) >= limits.max_columns:
                    raise MalformedFile(
                        f"the records have more than {limits.max_columns:,} distinct keys (ICEGATE_MAX_COLUMNS)",
                        file=file,
                        location=where,
                    )
                column = columns[key] = [None] * index
            column.append(_json_text(value))
        for column in columns.values():
            if len(column) == index:  # the record lacks this key
                column.append(None)
    table = _string_table(list(columns), list(columns.values()))
    check_limits(table, file, limits)
    return table


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)  # also turns a _JsonNumber into a plain str
    return _json_dumps(value)


def _json_dumps(value: Any) -> str:
    """``json.dumps`` that writes numbers back as their source text."""
    if isinstance(value, _JsonNumber):
        return str(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}: {_json_dumps(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------------


def decode_parquet(data: bytes, file: str, *, limits: Limits) -> pa.Table:
    """Every column of a Parquet file cast to string (dates and timestamps as ISO 8601)."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        meta = parquet.metadata
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise MalformedFile(f"the file is not a readable Parquet file ({exc})", file=file) from None
    if meta.num_rows > limits.max_rows:
        raise _too_many_rows(file, limits, meta.num_rows)
    if len(schema) > limits.max_columns:
        raise MalformedFile(
            f"the file has {len(schema):,} columns; the limit is {limits.max_columns:,} (ICEGATE_MAX_COLUMNS)",
            file=file,
        )
    expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if expanded > limits.max_uncompressed_bytes:
        raise FileTooLarge(
            f"the file expands to {expanded:,} bytes; the limit is {limits.max_uncompressed_bytes:,} "
            "(ICEGATE_MAX_UNCOMPRESSED_BYTES)",
            file=file,
        )
    try:
        table = parquet.read()
    except (pa.ArrowException, OSError) as exc:
        raise MalformedFile(f"the Parquet data cannot be read ({exc})", file=file) from None
    strings = pa.table(
        [_as_strings(table.column(i), table.field(i).name, file) for i in range(table.num_columns)],
        names=table.column_names,
    )
    check_limits(strings, file, limits)
    return strings


def _as_strings(column: pa.ChunkedArray, name: str, file: str) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _as_strings(column.cast(kind.value_type), name, file)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column
    if pa.types.is_null(kind):
        return pa.chunked_array([pa.nulls(len(column), pa.string())])
    if pa.types.is_timestamp(kind):
        return _timestamp_strings(column)
    if pa.types.is_nested(kind):
        return pa.chunked_array([pa.array([_nested_text(v) for v in column.to_pylist()], pa.string())])
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        raise MalformedFile(
            f"column {name!r} holds binary data that is not UTF-8 text", file=file, location=f"column {name!r}"
        ) from None
    except pa.ArrowNotImplementedError:
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())])


def _timestamp_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601; a naive timestamp at midnight is a date (how dates arrive from pandas and Excel)."""
    if column.type.tz is None:
        text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
        text = pc.replace_substring_regex(text, pattern=r"\.0+$", replacement="")
        return pc.replace_substring_regex(text, pattern=r"T00:00:00$", replacement="")
    text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S%z")
    return pc.replace_substring_regex(text, pattern=r"\.0+([+-]\d{4})$", replacement=r"\1")


def _nested_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------------------------------
# Limits shared by all formats
# --------------------------------------------------------------------------------------------------


def check_limits(table: pa.Table, file: str, limits: Limits) -> None:
    """Rows, columns and the byte length of every field (vectorised) against ``limits``."""
    if table.num_rows > limits.max_rows:
        raise _too_many_rows(file, limits, table.num_rows)
    if table.num_columns > limits.max_columns:
        raise MalformedFile(
            f"the file has {table.num_columns:,} columns; the limit is {limits.max_columns:,} (ICEGATE_MAX_COLUMNS)",
            file=file,
        )
    for index, name in enumerate(table.column_names):
        lengths = pc.binary_length(table.column(index))
        longest = pc.max(lengths).as_py()
        if longest is not None and longest > limits.max_field_bytes:
            row = pc.index(pc.greater(lengths, limits.max_field_bytes), True).as_py() + 1
            raise MalformedFile(
                f"a value in column {name!r} is {longest:,} bytes long; the limit is "
                f"{limits.max_field_bytes:,} (ICEGATE_MAX_FIELD_BYTES). The first such value is in data row {row}; "
                "a quote that is never closed can also swallow the rest of a file into one value",
                file=file,
                location=f"row {row}, column {name!r}",
            )


def _too_many_rows(file: str, limits: Limits, rows: int | None = None) -> FileTooLarge:
    count = f"{rows:,}" if rows is not None else f"more than {limits.max_rows:,}"
    return FileTooLarge(
        f"the file has {count} data rows; the limit is {limits.max_rows:,} (ICEGATE_MAX_ROWS). Split the file",
        file=file,
    )


def _string_table(names: list[str], columns: list[list[str | None]]) -> pa.Table:
    return pa.table([pa.array(values, pa.string()) for values in columns], names=names)


# --------------------------------------------------------------------------------------------------
# Header mapping and value normalisation
# --------------------------------------------------------------------------------------------------

_CAMEL_LOWER_UPPER: Final = re.compile(r"([a-z0-9])([A-Z])")
_CAMEL_ACRONYM: Final = re.compile(r"([A-Z]+)([A-Z][a-z])")
_NOT_WORD: Final = re.compile(r"[\W_]+")


def canonical_name(header: str) -> str:
    """``" Posted Date"``, ``postedDate``, ``POSTED-DATE`` -> ``posted_date``."""
    text = header.replace("\ufeff", "").strip()
    text = _CAMEL_ACRONYM.sub(r"\1_\2", _CAMEL_LOWER_UPPER.sub(r"\1_\2", text))
    return _NOT_WORD.sub("_", text.lower()).strip("_")


def map_columns(
    table: pa.Table,
    dataset: Dataset,
    *,
    file: str,
    normalize: NormalizeContext = NormalizeContext(),  # noqa: B008 - immutable
) -> tuple[pa.Table, list[str]]:
    """Rename source columns onto ``dataset``'s, trim values, empty -> null, apply its normalisers.

    Returns the table in contract column order and the source headers that matched nothing.
    """
    spellings: dict[str, str] = {}
    for column in dataset.columns:  # a column's own name wins over another column's alias
        spellings.setdefault(canonical_name(column.name), column.name)
    for column in dataset.columns:
        for alias in column.aliases:
            spellings.setdefault(canonical_name(alias), column.name)

    found: dict[str, int] = {}
    ignored: list[str] = []
    headers = table.column_names
    for index, header in enumerate(headers):
        target = spellings.get(canonical_name(header))
        if target is None:
            ignored.append(header)
        elif target in found:
            first = found[target]
            raise SchemaMismatch(
                f"the headers {headers[first]!r} (column {first + 1}) and {header!r} (column {index + 1}) both "
                f"mean column {target!r}; remove or rename one of them",
                file=file,
                location=f"column {target!r}",
            )
        else:
            found[target] = index

    missing = [c for c in dataset.columns if c.required and c.name not in found]
    if missing:
        accepted = "; ".join(f"{c.name}: {', '.join((c.name, *c.aliases))}" for c in missing)
        raise SchemaMismatch(
            f"required column(s) {', '.join(c.name for c in missing)} missing for dataset {dataset.name!r}; "
            f"the header has {', '.join(map(repr, headers)) or 'no columns'}. "
            f"Rename the header(s); accepted spellings (any case, spaces or underscores): {accepted}",
            file=file,
            location="header",
        )

    def prepared(column: Column) -> pa.ChunkedArray:
        if column.name not in found:
            return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
        values = _clean(table.column(found[column.name]))
        return column.normalizer(values, normalize) if column.normalizer else values

    if table.num_rows < _PARALLEL_ROWS:
        arrays = [prepared(column) for column in dataset.columns]
    else:  # Arrow kernels release the GIL: clean columns side by side on all cores
        with ThreadPoolExecutor(max_workers=pa.cpu_count()) as pool:
            arrays = list(pool.map(prepared, dataset.columns))
    return pa.table(arrays, names=list(dataset.column_names)), ignored


def _clean(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Trim surrounding (Unicode) whitespace; an empty value becomes null (without another copy)."""
    trimmed = pc.utf8_trim_whitespace(values)
    return pa.chunked_array([_empty_to_null(chunk) for chunk in trimmed.chunks], type=trimmed.type)


def _empty_to_null(chunk: pa.Array) -> pa.Array:
    keep = pc.fill_null(pc.greater(pc.binary_length(chunk), 0), False)
    if chunk.offset != 0 or keep.offset != 0:  # kernel output starts at 0; stay correct if not
        return pc.if_else(keep, chunk, pa.scalar(None, chunk.type))
    return pa.Array.from_buffers(chunk.type, len(chunk), [keep.buffers()[1], *chunk.buffers()[1:]])
