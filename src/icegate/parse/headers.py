"""Header mapping: source headers onto the contract's columns, values trimmed, empty -> null, normalised."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from icegate.datasets import Column, Dataset, NormalizeContext
from icegate.errors import SchemaMismatch

#: From this many rows on, columns are cleaned in parallel.
_PARALLEL_ROWS: Final = 100_000
_CAMEL_LOWER_UPPER: Final = re.compile(r"([a-z0-9])([A-Z])")
_CAMEL_ACRONYM: Final = re.compile(r"([A-Z]+)([A-Z][a-z])")
_NOT_WORD: Final = re.compile(r"[\W_]+")
#: Schema metadata of a table decoded from records (JSON, NDJSON), whose "headers" are keys: where each column's
#: key first appears, a JSON list of [row, line or null] in column order. Errors then name records, not columns.
KEY_PLACES: Final = b"icegate.key_places"


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
    key_places = _key_places(table)
    for index, header in enumerate(headers):
        target = spellings.get(canonical_name(header))
        if target is None:
            ignored.append(header)
        elif target in found:
            first = found[target]
            if key_places is None:
                raise SchemaMismatch(
                    f"the headers {headers[first]!r} (column {first + 1}) and {header!r} (column {index + 1}) both "
                    f"mean column {target!r}; remove or rename one of them",
                    file=file,
                    location=f"column {target!r}",
                )
            (first_row, first_line), (row, line) = key_places[first], key_places[index]
            raise SchemaMismatch(
                f"the keys {headers[first]!r} (first in {_record(first_row, first_line)}) and {header!r} (first in "
                f"{_record(row, line)}) both mean column {target!r}; use one spelling in every record",
                file=file,
                location=f"line {line}, column {target!r}" if line is not None else f"row {row}, column {target!r}",
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


def _key_places(table: pa.Table) -> list[tuple[int, int | None]] | None:
    """Where each column's key first appears, for a table of records (:data:`KEY_PLACES`); None for a header."""
    places = (table.schema.metadata or {}).get(KEY_PLACES)
    return None if places is None else [(row, line) for row, line in json.loads(places)]


def _record(row: int, line: int | None) -> str:
    return f"row {row}" if line is None else f"row {row}, line {line}"


def _clean(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Trim surrounding (Unicode) whitespace; an empty value becomes null (without another copy)."""
    trimmed = values if all(map(_nothing_to_trim, values.chunks)) else pc.utf8_trim_whitespace(values)
    return pa.chunked_array([_empty_to_null(chunk) for chunk in trimmed.chunks], type=trimmed.type)


#: Bytes that can start or end a value that has no whitespace at its ends: printable ASCII but space.
#: Every whitespace character, ASCII or not, starts and ends with a byte outside this range.
_VISIBLE_ASCII: Final = (0x21, 0x7E)


def _nothing_to_trim(chunk: pa.Array) -> bool:
    """Whether every value of a chunk starts and ends with a visible ASCII byte (or is empty).

    Trimming then changes nothing, and a column that needs none keeps its own buffers: trimming
    copies every value, and for a big file that copy costs more than the rest of the column's
    cleaning. Only the first and last byte of each value are read. Anything unusual (nulls, a
    sliced chunk) answers no, and the column is trimmed.
    """
    if chunk.null_count or chunk.offset or not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
        return False
    _, offsets_buffer, data_buffer = chunk.buffers()
    if len(chunk) == 0 or data_buffer is None:
        return True
    offset_type = pa.int64() if pa.types.is_large_string(chunk.type) else pa.int32()
    offsets = pa.Array.from_buffers(offset_type, len(chunk) + 1, [None, offsets_buffer])
    data = pa.Array.from_buffers(pa.uint8(), data_buffer.size, [None, data_buffer])
    starts, ends = offsets.slice(0, len(chunk)), offsets.slice(1)
    filled = pc.less(starts, ends)
    ends_bytes = pc.take(data, pc.filter(pc.subtract(ends, 1), filled))
    start_bytes = pc.take(data, pc.filter(starts, filled))
    for edge in (start_bytes, ends_bytes):
        bounds = pc.min_max(edge)
        lowest, highest = bounds["min"].as_py(), bounds["max"].as_py()
        if lowest is not None and (lowest < _VISIBLE_ASCII[0] or highest > _VISIBLE_ASCII[1]):
            return False
    return True


def _empty_to_null(chunk: pa.Array) -> pa.Array:
    keep = pc.fill_null(pc.greater(pc.binary_length(chunk), 0), False)
    if chunk.offset != 0 or keep.offset != 0:  # kernel output starts at 0; stay correct if not
        return pc.if_else(keep, chunk, pa.scalar(None, chunk.type))
    return pa.Array.from_buffers(chunk.type, len(chunk), [keep.buffers()[1], *chunk.buffers()[1:]])
