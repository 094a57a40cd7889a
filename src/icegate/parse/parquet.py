"""Parquet: every column cast to string (dates and timestamps as ISO 8601), checked against the limits first."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from icegate.errors import FileTooLarge, MalformedFile
from icegate.parse.limits import check_limits, too_many_rows
from icegate.settings import Limits


def decode_parquet(data: bytes, file: str, *, limits: Limits) -> pa.Table:
    """Every column of a Parquet file cast to string (dates and timestamps as ISO 8601)."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        meta = parquet.metadata
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise MalformedFile(f"the file is not a readable Parquet file ({exc})", file=file) from None
    if meta.num_rows > limits.max_rows:
        raise too_many_rows(file, limits, meta.num_rows)
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
    # Text columns are read as dictionaries, as they are stored, so that their size is known before any value is
    # repeated in memory: one long text used in every row takes a few bytes a row on disk.
    texts = [field.name for field in schema if _is_text(field.type)]
    try:
        table = pq.ParquetFile(pa.BufferReader(data), metadata=meta, read_dictionary=texts).read()
    except (pa.ArrowException, OSError) as exc:
        raise MalformedFile(f"the Parquet data cannot be read ({exc})", file=file) from None
    expanded = sum(_expanded_bytes(table.column(i), table.field(i).name, file) for i in range(table.num_columns))
    if expanded > limits.max_uncompressed_bytes:
        raise FileTooLarge(
            f"the file's values come to {expanded:,} bytes; the limit is {limits.max_uncompressed_bytes:,} "
            "(ICEGATE_MAX_UNCOMPRESSED_BYTES)",
            file=file,
        )
    strings = pa.table(
        [_as_strings(table.column(i), table.field(i).name, file) for i in range(table.num_columns)],
        names=table.column_names,
    )
    check_limits(strings, file, limits)
    return strings


def _expanded_bytes(column: pa.ChunkedArray, name: str, file: str) -> int:
    """The bytes a column takes once its dictionaries are expanded (one copy of a value per row)."""
    if not pa.types.is_dictionary(column.type):
        return int(column.nbytes)
    total = 0
    for chunk in column.chunks:
        values = chunk.dictionary
        if not _is_text(values.type):
            values = _as_strings(pa.chunked_array([values]), name, file).combine_chunks()  # as it will be cast
        lengths = pc.binary_length(values)
        total += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0) + chunk.indices.nbytes
    return total


def _is_text(kind: pa.DataType) -> bool:
    return any(check(kind) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary))


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
