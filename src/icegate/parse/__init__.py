"""Parse: the bytes of one scraped file in, an all-string Arrow table in the dataset's shape out.

Pure: no storage, no Lambda. The steps are small functions that tests (and callers) may use alone:

1. :func:`detect_format` from the name (the registry in :mod:`.formats`), :func:`decompress` for gzip
   and :func:`to_utf8` for text (:mod:`.text`);
2. one decoder per format (:mod:`.delimited`, :mod:`.xlsx`, :mod:`.json_records`, :mod:`.parquet`)
   returning every source column as strings under its source header, held to the limits (:mod:`.limits`);
3. :func:`map_columns` (:mod:`.headers`) renaming source headers onto the contract, trimming and
   normalising values.

:func:`parse_bytes` holds the whole file; :func:`stream_delimited` (:mod:`.stream`) reads a CSV/TSV file
from a stream a block of records at a time, in memory that follows the block, not the file, with the
same rows, lines and errors.

Every failure is an :mod:`icegate.errors` class carrying ``file=`` and, where there is one, a
``location=`` ("line 12", "line 12, column 3", "row 5, column 'caption'") and says what to do.
"""

from __future__ import annotations

import pyarrow as pa

from icegate.datasets import Dataset, NormalizeContext
from icegate.errors import MalformedFile
from icegate.parse.delimited import DELIMITERS, decode_csv, header_names
from icegate.parse.formats import COMPRESSED_SUFFIX, FORMATS, Format, detect_format, format_for
from icegate.parse.headers import canonical_name, map_columns
from icegate.parse.json_records import decode_json
from icegate.parse.limits import check_decoded_size, check_limits, check_size, no_data_rows
from icegate.parse.lines import record_lines
from icegate.parse.parquet import decode_parquet
from icegate.parse.stream import stream_delimited
from icegate.parse.table import ParsedTable
from icegate.parse.text import GZIP_MAGIC, decompress, to_utf8
from icegate.parse.xlsx import decode_xlsx
from icegate.settings import Limits

__all__ = [
    "COMPRESSED_SUFFIX",
    "FORMATS",
    "Format",
    "ParsedTable",
    "canonical_name",
    "check_limits",
    "check_size",
    "decode_csv",
    "decode_json",
    "decode_parquet",
    "decode_xlsx",
    "decompress",
    "detect_format",
    "format_for",
    "map_columns",
    "parse_bytes",
    "stream_delimited",
    "to_utf8",
]


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
    check_size(len(data), name, limits)
    fmt = format_for(name)
    # Compression is recognised by its magic bytes: a ".gz" name on plain bytes still reads.
    if data.startswith(GZIP_MAGIC):
        data = decompress(data, name, limits=limits)
    check_decoded_size(data, fmt.name, name, limits)
    try:
        decoded, found = fmt.decode(data, name, limits, encoding)
    except MalformedFile:
        if fmt.name in DELIMITERS:  # the header is judged before its rows, as a streamed file's first block is
            _check_header(data, name, DELIMITERS[fmt.name], dataset, encoding)
        raise
    if decoded.num_rows == 0:
        raise no_data_rows(name, decoded.column_names)
    table, ignored = map_columns(decoded, dataset, file=name, normalize=normalize)
    lines = None
    if found in DELIMITERS:
        # Counted over the same UTF-8 text the reader read (a UTF-16 file has other bytes, the same lines).
        lines = record_lines(to_utf8(data, name, encoding), DELIMITERS[found], table.num_rows, decoded.num_columns)
    return ParsedTable(table=table, format=found, ignored_columns=ignored, lines=lines)


def _check_header(data: bytes, name: str, delimiter: str, dataset: Dataset, encoding: str | None) -> None:
    """Raise what the header alone is refused for (``SchemaMismatch``: a required column missing, two colliding)."""
    names = header_names(to_utf8(data, name, encoding), name, delimiter)
    empty = pa.Table.from_arrays([pa.array([], pa.string()) for _ in names], names=names)
    map_columns(empty, dataset, file=name)
