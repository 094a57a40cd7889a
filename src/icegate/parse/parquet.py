"""Parquet: every column cast to string (dates and timestamps as ISO 8601, doubles as a spreadsheet shows
them), checked against the limits first."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from icegate.errors import FileTooLarge, MalformedFile
from icegate.parse.doubles import double_strings
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
    _refuse_list_items_past_limit(parquet, file, limits)
    # Text is read as dictionaries, as it is stored, so that its size is known before any value is repeated in
    # memory: one long text used in every row (or every list item) takes a few bytes a row on disk.
    texts = [column.path for column in map(parquet.schema.column, range(len(parquet.schema))) if _stores_text(column)]
    try:
        reader = pq.ParquetFile(pa.BufferReader(data), metadata=meta, read_dictionary=texts)
        # A row group at a time: pyarrow reads no nested dictionary column of several row groups at once.
        groups = [reader.read_row_group(group) for group in range(meta.num_row_groups)]
        table = pa.concat_tables(groups) if groups else reader.read()
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


# A list item's slot once read (its value or dictionary index, and its offset), before any text.
_LIST_ITEM_BYTES = 8
# The values of a list or struct column are laid out as Python objects this much text at a time, at most.
_NESTED_BATCH_BYTES = 16 << 20


def _refuse_list_items_past_limit(parquet: pq.ParquetFile, file: str, limits: Limits) -> None:
    """Refuse, from the metadata alone, list and map columns whose items would not fit the limit once read: a
    run-length encoded column stores any number of equal items in a few bytes."""
    meta, schema = parquet.metadata, parquet.schema
    repeated = [leaf for leaf in range(len(schema)) if schema.column(leaf).max_repetition_level > 0]
    items = sum(
        meta.row_group(group).column(leaf).num_values for group in range(meta.num_row_groups) for leaf in repeated
    )
    if items * _LIST_ITEM_BYTES > limits.max_uncompressed_bytes:
        raise FileTooLarge(
            f"the file's list and map columns hold {items:,} items, {items * _LIST_ITEM_BYTES:,} bytes once "
            f"read; the limit is {limits.max_uncompressed_bytes:,} (ICEGATE_MAX_UNCOMPRESSED_BYTES)",
            file=file,
        )


def _stores_text(column: pq.ColumnSchema) -> bool:
    return column.physical_type == "BYTE_ARRAY" and column.logical_type.type in ("STRING", "NONE")


def _expanded_bytes(column: pa.ChunkedArray, name: str, file: str) -> int:
    """The bytes a column takes once its dictionaries are expanded (one copy of a value per row or item)."""
    if pa.types.is_nested(column.type):
        return sum(int(pc.sum(_text_bytes(chunk, name, file)).as_py() or 0) for chunk in column.chunks)
    if not pa.types.is_dictionary(column.type):
        return int(column.nbytes)
    return sum(
        int(pc.sum(_text_bytes(chunk, name, file)).as_py() or 0) + chunk.indices.nbytes for chunk in column.chunks
    )


def _text_bytes(array: pa.Array, name: str, file: str) -> pa.Array:
    """Each value's size as text (int64, one per value), found without laying out a dictionary's values again."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        values = array.dictionary
        if not _is_text(values.type):
            values = _as_strings(pa.chunked_array([values]), name, file).combine_chunks()  # as it will be cast
        return pc.take(pc.binary_length(values).cast(pa.int64()), array.indices).fill_null(0)
    if pa.types.is_map(kind) or pa.types.is_fixed_size_list(kind):
        return _text_bytes(array.cast(_as_list(kind)), name, file)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        items = pc.cumulative_sum(_text_bytes(array.values, name, file).fill_null(0))
        ends = pa.concat_arrays([pa.array([0], pa.int64()), items])
        offsets = array.offsets
        per_list = pc.subtract(pc.take(ends, offsets[1:]), pc.take(ends, offsets[:-1]))
        return per_list.fill_null(0)
    if pa.types.is_struct(kind):
        total = pa.nulls(len(array), pa.int64()).fill_null(0)
        for field in array.flatten():
            total = pc.add(total, _text_bytes(field, name, file).fill_null(0))
        return total
    if _is_text(kind):
        return pc.binary_length(array).cast(pa.int64()).fill_null(0)
    return pa.nulls(len(array), pa.int64()).fill_null(max(kind.bit_width // 8, 1) if pa.types.is_primitive(kind) else 8)


def _as_list(kind: pa.DataType) -> pa.DataType:
    """A map as a list of key/value structs, a fixed-size list as a list: the same items, offsets to count by."""
    if pa.types.is_map(kind):
        return pa.list_(pa.struct([pa.field("key", kind.key_type), pa.field("value", kind.item_type)]))
    return pa.list_(kind.value_field)


def _without_dictionaries(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(kind):
        return kind.value_type
    if pa.types.is_map(kind):
        return pa.map_(_without_dictionaries(kind.key_type), _without_dictionaries(kind.item_type))
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_without_dictionaries(field.type)) for field in kind])
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_without_dictionaries(kind.value_type)))
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_without_dictionaries(kind.value_type)))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_without_dictionaries(kind.value_type)), kind.list_size)
    return kind


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
        return pa.chunked_array([_nested_strings(chunk, name, file) for chunk in column.chunks], pa.string())
    if pa.types.is_float64(kind):
        # As the same double reads from a spreadsheet: Arrow's own text puts whole numbers from 1e10 in exponent
        # form (pandas writes an integer column with a gap as doubles: a phone 12125550100 read 1.21255501e+10).
        return pa.chunked_array([double_strings(chunk) for chunk in column.chunks], pa.string())
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        raise MalformedFile(
            f"column {name!r} holds binary data that is not UTF-8 text", file=file, location=f"column {name!r}"
        ) from None
    except pa.ArrowNotImplementedError:
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())])


def _nested_strings(chunk: pa.Array, name: str, file: str) -> pa.Array:
    """Each list or struct value as JSON, laid out as Python objects a batch of rows at a time."""
    sizes = _text_bytes(chunk, name, file).to_pylist()
    plain = _without_dictionaries(chunk.type)
    texts: list[str | None] = []
    start = 0
    while start < len(chunk):
        end, batch = start + 1, sizes[start]
        while end < len(chunk) and batch + sizes[end] <= _NESTED_BATCH_BYTES:
            batch += sizes[end]
            end += 1
        batch_values = chunk.slice(start, end - start).cast(plain)  # a dictionary's values read one by one are slow
        texts.extend(_nested_text(value) for value in batch_values.to_pylist())
        start = end
    return pa.array(texts, pa.string())


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
