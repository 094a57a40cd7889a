"""Size, row, column and field-length limits every format is held to (:class:`icegate.settings.Limits`)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from icegate.errors import EmptyFile, FileTooLarge, MalformedFile
from icegate.parse.origin import Origin
from icegate.settings import Limits
from icegate.sizing import format_weight


def check_size(size: int, file: str, limits: Limits) -> None:
    """Refuse an object over ``limits.max_bytes``: called on its stored size before download, and on the bytes."""
    if size > limits.max_bytes:
        raise too_many_bytes(file, limits, size)


def too_many_bytes(file: str, limits: Limits, size: int | None = None) -> FileTooLarge:
    """The error for a file over ``limits.max_bytes``; a stream read past the limit knows no ``size``."""
    count = f"{size:,} bytes" if size is not None else f"more than {limits.max_bytes:,} bytes"
    return FileTooLarge(
        f"the file is {count}; the limit is {limits.max_bytes:,} (ICEGATE_MAX_BYTES). "
        "Split the file or raise the limit",
        file=file,
    )


def check_decoded_size(data: bytes, fmt: str, file: str, limits: Limits) -> None:
    """Refuse text that decodes into more memory than the limit allows (JSON costs more per byte than CSV)."""
    weight = format_weight(fmt)
    if weight > 1 and len(data) * weight > limits.max_uncompressed_bytes:
        raise FileTooLarge(
            f"the {fmt.upper()} text is {len(data):,} bytes; decoding JSON takes about {weight:.1f} times the memory "
            f"of CSV per byte, so the limit for it is {int(limits.max_uncompressed_bytes / weight):,} bytes "
            "(ICEGATE_MAX_UNCOMPRESSED_BYTES / weight). Export it as CSV, or split it",
            file=file,
        )


def check_limits(table: pa.Table, file: str, limits: Limits, *, origin: Origin | None = None) -> None:
    """Rows, columns and the byte length of every field (vectorised) against ``limits``.

    ``origin``: the table is a block of a streamed file; its rows count after ``origin.rows`` others,
    and a file over the limit has "more than" it (the rest is not read).
    """
    rows_before = origin.rows if origin else 0
    if rows_before + table.num_rows > limits.max_rows:
        raise too_many_rows(file, limits, None if origin else table.num_rows)
    if table.num_columns > limits.max_columns:
        raise MalformedFile(
            f"the file has {table.num_columns:,} columns; the limit is {limits.max_columns:,} (ICEGATE_MAX_COLUMNS)",
            file=file,
        )
    first: tuple[int, int, str] | None = None  # the earliest value over the limit: row, its length, column
    for index, name in enumerate(table.column_names):
        lengths = pc.binary_length(table.column(index))
        longest = pc.max(lengths).as_py()
        if longest is not None and longest > limits.max_field_bytes:
            row = pc.index(pc.greater(lengths, limits.max_field_bytes), True).as_py()
            if first is None or row < first[0]:
                first = (row, lengths[row].as_py(), name)
    if first is not None:  # the file's first such value, as a streamed file's blocks meet it
        row, length, name = first
        raise field_too_long(name, length, rows_before + row + 1, file, limits)


def field_too_long(column: str, length: int, row: int, file: str, limits: Limits) -> MalformedFile:
    """The error for the first value over the field limit: ``length`` bytes, in data ``row`` of ``column``."""
    return MalformedFile(
        f"a value in column {column!r} is {length:,} bytes long; the limit is "
        f"{limits.max_field_bytes:,} (ICEGATE_MAX_FIELD_BYTES). It is the file's first such value, in data row "
        f"{row}; a quote that is never closed can also swallow the rest of a file into one value",
        file=file,
        location=f"row {row}, column {column!r}",
    )


def no_data_rows(file: str, header: list[str]) -> EmptyFile:
    """The error for a file that decodes to no data rows (``header``: its source columns, if any)."""
    return EmptyFile(
        "the file has no data rows" + (f" (only a header: {', '.join(map(repr, header))})" if header else ""),
        file=file,
    )


def too_many_rows(file: str, limits: Limits, rows: int | None = None) -> FileTooLarge:
    count = f"{rows:,}" if rows is not None else f"more than {limits.max_rows:,}"
    return FileTooLarge(
        f"the file has {count} data rows; the limit is {limits.max_rows:,} (ICEGATE_MAX_ROWS). Split the file",
        file=file,
    )


def limited_table(names: list[str], columns: list[list[str | None]], file: str, limits: Limits) -> pa.Table:
    """An all-string table from decoded columns, held to ``limits``."""
    table = pa.table([pa.array(values, pa.string()) for values in columns], names=names)
    check_limits(table, file, limits)
    return table
