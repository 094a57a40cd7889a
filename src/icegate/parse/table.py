"""What parsing a file gives: the dataset's columns, and where each record was in the file."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


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
