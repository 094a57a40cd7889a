"""Data files: write sorted, key-clustered Parquet files; find and read the files that can hold keys.

This module is the one place that uses pyiceberg internals (pinned ``pyiceberg==0.12.0``):

- ``write_file`` + ``WriteTask`` + ``PartitionKey`` write files that pyiceberg describes
  (statistics, partition record, field ids). ``Table.append`` would filter the whole batch once per
  partition and cut files by size only, not by key range.
- ``ArrowScan`` reads chosen files with pyiceberg's projection (schema evolution, delete files);
  ``Table.scan`` cannot prune on thousands of keys.
- :class:`LeanTransaction` skips a deep copy of the table metadata that ``Transaction`` makes on
  every read of its metadata (a dozen per commit, each growing with the snapshot history).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow, write_file
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Transaction, WriteTask
from pyiceberg.types import DateType, PrimitiveType, StringType, TimestampType, TimestamptzType

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table
    from pyiceberg.table.metadata import TableMetadata

#: Column that tags each row read by :func:`read_files` with the index of its file.
FILE_INDEX = "_icegate_file"
_PARTITION_PREFIX = "_icegate_part_"
_CLUSTER = "_icegate_cluster"
_READ_THREADS = 4


def write_data_files(
    metadata: TableMetadata, io: FileIO, frame: pl.DataFrame, cluster_by: str, target_rows: int
) -> list[DataFile]:
    """Write rows as data files of the table: one run of files per partition, each file a key range.

    Rows are ordered by partition, then by ``cluster_by`` (the first key column), and each
    partition's run is cut into files of at most ``target_rows`` rows. Each file then covers a
    narrow key range, so its min/max statistics let a later merge skip it.
    """
    if frame.height == 0:
        return []
    schema = metadata.schema()
    spec = metadata.spec()
    partition_names = [f"{_PARTITION_PREFIX}{i}" for i in range(len(spec.fields))]
    ordered = frame.with_columns(
        *(
            _transformed(frame, schema.find_column_name(field.source_id) or "", field, schema).alias(name)
            for field, name in zip(spec.fields, partition_names, strict=True)
        ),
        _cluster_value(frame.get_column(cluster_by)).alias(_CLUSTER),
    ).sort([*partition_names, _CLUSTER], nulls_last=True)

    if partition_names:
        runs = (
            ordered.select(partition_names)
            .with_columns(pl.struct(partition_names).rle_id().alias("_run"))
            .group_by("_run", maintain_order=True)
            .agg(pl.len().alias("_rows"), *(pl.first(name) for name in partition_names))
            .iter_rows(named=True)
        )
    else:
        runs = iter([{"_rows": ordered.height}])
    target_schema = schema_to_pyarrow(schema, include_field_ids=False)
    table = ordered.drop([*partition_names, _CLUSTER]).to_arrow().cast(target_schema)

    write_uuid = uuid.uuid4()
    tasks: list[WriteTask] = []
    offset = 0
    for run in runs:
        rows: int = run["_rows"]
        partition_key = (
            PartitionKey(
                field_values=[
                    PartitionFieldValue(field, run[name])
                    for field, name in zip(spec.fields, partition_names, strict=True)
                ],
                partition_spec=spec,
                schema=schema,
            )
            if partition_names
            else None
        )
        # Balanced cuts (10 rows at 4 per file: 4, 3, 3), so that no file is a sliver.
        files = math.ceil(rows / target_rows)
        start = 0
        for part in range(files):
            length = rows // files + (1 if part < rows % files else 0)
            tasks.append(
                WriteTask(
                    write_uuid=write_uuid,
                    task_id=len(tasks),
                    schema=schema,
                    record_batches=table.slice(offset + start, length).to_batches(),
                    partition_key=partition_key,
                )
            )
            start += length
        offset += rows
    return list(write_file(io, metadata, iter(tasks)))


def _transformed(frame: pl.DataFrame, column: str, field: Any, schema: Any) -> pl.Expr:
    """The partition value of each row, in Iceberg's representation (e.g. months since 1970-01)."""
    source_type = schema.find_field(field.source_id).field_type
    values = field.transform.pyarrow_transform(source_type)(frame.get_column(column).to_arrow())
    series = pl.Series(values=values)
    if isinstance(source_type, DateType) and series.dtype == pl.Date:
        series = series.cast(pl.Int32)
    return pl.lit(series)


def _cluster_value(column: pl.Series) -> pl.Series:
    """A cheap sort key that orders rows like the column itself.

    Sorting a million strings costs most of a load; the first eight bytes as a big-endian integer
    sort in a fraction of that and give files the same narrow key ranges.
    """
    if column.dtype == pl.String:
        return (
            pl.select(
                (column.fill_null("") + "\x00" * 8)
                .cast(pl.Binary)
                .bin.head(8)
                .bin.reinterpret(dtype=pl.UInt64, endianness="big")
            )
            .to_series()
            .alias(_CLUSTER)
        )
    return column.alias(_CLUSTER)


@dataclass(frozen=True)
class KeyProbe:
    """What a merge looks for in the table: the batch's distinct values of one key column."""

    column: str
    field_id: int
    iceberg_type: PrimitiveType
    #: Sorted distinct non-null values, in the physical representation of the column's bounds.
    values: pl.Series
    has_null: bool


def key_probe(frame: pl.DataFrame, column: str, field_id: int, iceberg_type: PrimitiveType) -> KeyProbe:
    series = frame.get_column(column)
    return KeyProbe(
        column=column,
        field_id=field_id,
        iceberg_type=iceberg_type,
        values=_physical(series.drop_nulls().unique()).sort(),
        has_null=series.null_count() > 0,
    )


def _physical(series: pl.Series) -> pl.Series:
    """Values as Iceberg stores them in bounds: dates as days, timestamps as microseconds."""
    if series.dtype == pl.Date:
        return series.cast(pl.Int32).cast(pl.Int64)
    if isinstance(series.dtype, pl.Datetime):
        return series.dt.cast_time_unit("us").cast(pl.Int64)
    return series


def may_hold_keys(tasks: Sequence[FileScanTask], probes: Sequence[KeyProbe]) -> list[bool]:
    """For each file, whether its statistics allow it to hold any of the keys (never a false "no").

    A file can hold a key only if, for every key column, one of the batch's values lies between
    the file's lower and upper bound (or the batch has a null there and the file may have nulls).
    Missing statistics mean "maybe".
    """
    keep = [True] * len(tasks)
    for probe in probes:
        count = probe.values.len()
        lowers: list[Any] = []
        uppers: list[Any] = []
        for task in tasks:
            lower = (task.file.lower_bounds or {}).get(probe.field_id)
            upper = (task.file.upper_bounds or {}).get(probe.field_id)
            lowers.append(_decode(probe.iceberg_type, lower))
            uppers.append(_decode(probe.iceberg_type, upper))
        dtype = probe.values.dtype
        first = (
            probe.values.search_sorted(pl.Series(lowers, dtype=dtype), side="left").fill_null(0)
            if count
            else pl.Series([0] * len(tasks))
        )
        after = (
            probe.values.search_sorted(pl.Series(uppers, dtype=dtype), side="right").fill_null(count)
            if count
            else pl.Series([0] * len(tasks))
        )
        for i, task in enumerate(tasks):
            if not keep[i]:
                continue
            in_range = lowers[i] is None or uppers[i] is None or after[i] > first[i]
            hits = count > 0 and in_range
            if probe.has_null:
                nulls = (task.file.null_value_counts or {}).get(probe.field_id)
                hits = hits or nulls is None or nulls > 0
            keep[i] = hits
    return keep


def _decode(iceberg_type: PrimitiveType, raw: bytes | None) -> Any:
    if raw is None:
        return None
    value = from_bytes(iceberg_type, raw)
    if isinstance(iceberg_type, StringType) and isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(iceberg_type, (TimestampType, TimestamptzType, DateType)):
        return int(value)
    return value


def read_files(
    metadata: TableMetadata, io: FileIO, tasks: Sequence[FileScanTask], columns: Iterable[str] | None = None
) -> pl.DataFrame:
    """The rows of these files (only ``columns`` when given), each tagged with its file's index."""
    schema = metadata.schema()
    projected = schema.select(*columns) if columns is not None else schema
    scan = ArrowScan(metadata, io, projected_schema=projected, row_filter=AlwaysTrue())
    empty = pl.DataFrame(
        schema={**pl.from_arrow(schema_to_pyarrow(projected).empty_table()).schema, FILE_INDEX: pl.Int32}  # type: ignore[union-attr]
    )
    if not tasks:
        return empty

    def read(indexed: tuple[int, FileScanTask]) -> pl.DataFrame:
        index, task = indexed
        frame = pl.from_arrow(scan.to_table([task]))
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(pl.lit(index, pl.Int32).alias(FILE_INDEX))

    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(tasks))) as pool:
        frames = list(pool.map(read, enumerate(tasks)))
    return pl.concat([empty, *frames], how="vertical_relaxed")


class LeanTransaction(Transaction):
    """A ``Transaction`` that reads the table's metadata as is while it has staged no update.

    pyiceberg recomputes (and deep-copies) the metadata on each read of ``table_metadata``, and a
    snapshot producer reads it a dozen times before it stages anything; the copy of a table with a
    few hundred snapshots costs milliseconds each time. Nothing here mutates the metadata it reads.
    """

    @property
    def table_metadata(self) -> TableMetadata:
        if not self._updates:
            return self._table.metadata
        return super().table_metadata


def transaction(table: Table) -> Transaction:
    return LeanTransaction(table)
