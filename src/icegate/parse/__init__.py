"""Parse: the bytes of one scraped file in, an all-string Arrow table in the dataset's shape out.

Pure: no storage, no Lambda. The steps are small functions that tests (and callers) may use alone:

1. :func:`detect_format` from the name (the registry in :mod:`.formats`), :func:`decompress` for gzip
   and :func:`to_utf8` for text (:mod:`.text`);
2. one decoder per format (:mod:`.delimited`, :mod:`.xlsx`, :mod:`.json_records`, :mod:`.parquet`)
   returning every source column as strings under its source header, held to the limits (:mod:`.limits`);
3. :func:`map_columns` (:mod:`.headers`) renaming source headers onto the contract, trimming and
   normalising values.

Every failure is an :mod:`icegate.errors` class carrying ``file=`` and, where there is one, a
``location=`` ("line 12", "line 12, column 3", "row 5, column 'caption'") and says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from icegate.datasets import Dataset, NormalizeContext
from icegate.errors import EmptyFile
from icegate.parse.delimited import decode_csv
from icegate.parse.formats import COMPRESSED_SUFFIX, FORMATS, Format, detect_format, format_for
from icegate.parse.headers import canonical_name, map_columns
from icegate.parse.json_records import decode_json
from icegate.parse.limits import check_decoded_size, check_limits, check_size
from icegate.parse.lines import record_lines
from icegate.parse.parquet import decode_parquet
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
    "to_utf8",
]


@dataclass(frozen=True)
class ParsedTable:
    """A file decoded into the dataset's columns, every value a trimmed string or null."""

    #: ``dataset.column_names`` in contract order; every column ``string`` (or ``large_string``).
    table: pa.Table
    #: ``csv``, ``tsv``, ``xlsx``, ``json``, ``ndjson`` or ``parquet`` (gzip is transparent).
    format: str
    #: Source headers, as written in the file, that match no contract column.
    ignored_columns: list[str]
    #: For CSV/TSV: the first and last physical line of each record (``lines.LINE``, ``lines.LAST_LINE``);
    #: None for formats whose records are not lines (their row number is the record's number).
    lines: pa.Table | None = None

    def with_lines(self) -> pa.Table:
        """The table plus its line columns, when known (what the parse stage hands to validation)."""
        if self.lines is None:
            return self.table
        return pa.Table.from_arrays(
            [*self.table.columns, *self.lines.columns], names=[*self.table.column_names, *self.lines.column_names]
        )


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
    decoded, found = fmt.decode(data, name, limits, encoding)
    if decoded.num_rows == 0:
        raise EmptyFile(
            "the file has no data rows"
            + (f" (only a header: {', '.join(map(repr, decoded.column_names))})" if decoded.num_columns else ""),
            file=name,
        )
    table, ignored = map_columns(decoded, dataset, file=name, normalize=normalize)
    lines = None
    if found in _DELIMITERS:
        # Counted over the same UTF-8 text the reader read (a UTF-16 file has other bytes, the same lines).
        lines = record_lines(to_utf8(data, name, encoding), _DELIMITERS[found], table.num_rows)
    return ParsedTable(table=table, format=found, ignored_columns=ignored, lines=lines)


_DELIMITERS = {"csv": ",", "tsv": "\t"}
