"""Data files: write sorted, key-clustered Parquet files; find and read the files that can hold keys.

This module is the one place that uses pyiceberg internals (pinned ``pyiceberg==0.12.0``):

- ``data_file_statistics_from_parquet_metadata`` and friends describe the Parquet files we write
  (statistics, partition record) as pyiceberg's own writer would. ``Table.append`` would filter
  the whole batch once per partition and cut files by size only, not by key range.
- ``ArrowScan`` reads chosen files with pyiceberg's projection (schema evolution, delete files);
  ``Table.scan`` cannot prune on thousands of keys.
- :class:`LeanTransaction` skips a deep copy of the table metadata that ``Transaction`` makes on
  every read of its metadata (a dozen per commit, each growing with the snapshot history).
- :class:`_ThreadSafeOverwrite` fixes a race in ``_OverwriteFiles`` (see there).
- :func:`_packed` merges a snapshot's manifests (compaction's, a manifest rewrite's): pyiceberg 0.12 has no
  ``rewrite_manifests``.
"""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.expressions.visitors import manifest_evaluator
from pyiceberg.io.pyarrow import (
    ArrowScan,
    PyArrowFileIO,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update import _apply_table_update, _TableMetadataUpdateContext
from pyiceberg.table.update.snapshot import _ManifestMergeManager, _MergeAppendFiles, _OverwriteFiles
from pyiceberg.typedef import Record
from pyiceberg.types import DateType, PrimitiveType, StringType, TimestampType, TimestamptzType
from pyiceberg.utils.bin_packing import ListPacker
from pyiceberg.utils.properties import property_as_int

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.io.pyarrow import DataFileStatistics
    from pyiceberg.manifest import ManifestFile
    from pyiceberg.schema import Schema
    from pyiceberg.table import FileScanTask
    from pyiceberg.table.metadata import TableMetadata

    from icegate.lake.catalog import FileTarget

#: Columns that tag each row read by :func:`read_files` with its file's index and its position there.
FILE_INDEX = "_icegate_file"
ROW_POSITION = "_icegate_pos"
_PARTITION_PREFIX = "_icegate_part_"
_CLUSTER = "_icegate_cluster"
_READ_THREADS = 4
_WRITE_THREADS = 4


#: Rows written (in memory) to measure what a row of this batch takes on disk.
_SIZE_SAMPLE_ROWS = 10_000


def write_data_files(
    metadata: TableMetadata, io: FileIO, frame: pl.DataFrame, cluster_by: str, target: FileTarget
) -> list[DataFile]:
    """Write rows as data files of the table: one run of files per partition, each file a key range.

    Rows are ordered by partition, then by ``cluster_by`` (the first key column), and each
    partition's run is cut into files of about ``target.size_bytes`` on disk (and at most
    ``target.max_rows`` rows). Each file then covers a narrow key range, so its min/max statistics
    let a later merge skip it.
    """
    if frame.height == 0:
        return []
    schema = metadata.schema()
    spec = metadata.spec()
    frame = _in_table_layout(frame, schema)
    partition_names = [f"{_PARTITION_PREFIX}{i}" for i in range(len(spec.fields))]
    with_order = frame.with_columns(
        *(
            _transformed(frame, schema.find_column_name(field.source_id) or "", field, schema).alias(name)
            for field, name in zip(spec.fields, partition_names, strict=True)
        ),
        _cluster_value(frame.get_column(cluster_by)).alias(_CLUSTER),
    )
    ordered = with_order.sort(_sort_key(with_order, partition_names))

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
    rows_in_order = ordered.drop([*partition_names, _CLUSTER])
    writer = _FileWriter(metadata, io)
    rows_per_file = writer.rows_per_file(rows_in_order, target)
    slices: list[tuple[pl.DataFrame, PartitionKey | None]] = []
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
        files = math.ceil(rows / rows_per_file)
        start = offset
        for part in range(files):
            length = rows // files + (1 if part < rows % files else 0)
            slices.append((rows_in_order.slice(start, length), partition_key))
            start += length
        offset += rows
    with ThreadPoolExecutor(max_workers=min(_WRITE_THREADS, len(slices))) as pool:
        return list(pool.map(lambda job: writer.write(*job), slices))


class _FileWriter:
    """Writes one Parquet data file with polars and describes it as pyiceberg does.

    pyiceberg's ``write_file`` needs the rows as Arrow (a copy of every string) and tries
    dictionary encoding on every column, thrown away on unique ones (ids, URLs); polars writes
    its own frame directly, several columns at a time. The Parquet schema carries the Iceberg
    field ids, and the statistics come from the file's footer through pyiceberg's own helper.
    """

    def __init__(self, metadata: TableMetadata, io: FileIO) -> None:
        self._metadata = metadata
        self._io = io
        self._schema = metadata.schema()
        # Iceberg readers resolve columns by field id, stored in the Parquet schema.
        self._arrow_schema = schema_to_pyarrow(self._schema, include_field_ids=True)
        self._locations = load_location_provider(metadata.location, metadata.properties)
        codec = metadata.properties.get(
            TableProperties.PARQUET_COMPRESSION, TableProperties.PARQUET_COMPRESSION_DEFAULT
        )
        self._compression = "uncompressed" if codec in ("uncompressed", "none") else codec
        self._level = property_as_int(metadata.properties, TableProperties.PARQUET_COMPRESSION_LEVEL)
        self._row_group_rows = property_as_int(
            metadata.properties,
            TableProperties.PARQUET_ROW_GROUP_LIMIT,
            TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT,
        )
        self._statistics_plan = compute_statistics_plan(self._schema, metadata.properties)
        self._column_ids = parquet_path_to_id_mapping(self._schema)
        self._uuid = uuid.uuid4()
        self._counter = itertools.count()

    def rows_per_file(self, rows: pl.DataFrame, target: FileTarget) -> int:
        """How many of these rows make a file of about ``target.size_bytes`` on disk.

        Measured, not guessed: a contiguous run of rows (files are contiguous key ranges, which is how
        they compress) is encoded as the files will be. In-memory size bounds the encoded size from
        above, so a batch smaller than the target in memory is one file per partition without measuring.
        """
        cap = target.max_rows or max(rows.height, 1)
        if rows.height == 0 or rows.estimated_size() <= target.size_bytes:
            return cap
        sample_rows = min(rows.height, _SIZE_SAMPLE_ROWS)
        sample = rows.slice((rows.height - sample_rows) // 2, sample_rows)
        bytes_per_row = len(self._encode(sample)) / sample_rows
        return max(1, min(cap, int(target.size_bytes / bytes_per_row)))

    def _encode(self, rows: pl.DataFrame) -> bytes:
        buffer = BytesIO()
        rows.write_parquet(
            buffer,
            compression=self._compression,  # type: ignore[arg-type]
            compression_level=self._level,
            row_group_size=self._row_group_rows,
            arrow_schema=self._arrow_schema,
        )
        return buffer.getvalue()

    def write(self, rows: pl.DataFrame, partition_key: PartitionKey | None) -> DataFile:
        name = f"00000-{next(self._counter)}-{self._uuid}.parquet"
        path = self._locations.new_data_location(data_file_name=name, partition_key=partition_key)
        content = self._encode(rows)
        with self._io.new_output(path).create(overwrite=True) as stream:
            stream.write(content)
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=pq.read_metadata(pa.BufferReader(content)),
            stats_columns=self._statistics_plan,
            parquet_column_mapping=self._column_ids,
        )
        _drop_unserializable_bounds(statistics)
        data_file = DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=path,
            file_format=FileFormat.PARQUET,
            partition=partition_key.partition if partition_key else Record(),
            file_size_in_bytes=len(content),
            sort_order_id=None,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )
        # Not a field of the file's record (from_args drops it): a group's next plan may replace this file.
        data_file.spec_id = self._metadata.default_spec_id
        return data_file


def _in_table_layout(frame: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """The rows with exactly the table's columns, in its order and types: fields they lack are null.

    The table may hold columns the contract does not (added by another tool); each column the
    rows hold was mapped onto a table field before the load planned (see ``evolve``).
    """
    layout = pl.from_arrow(schema_to_pyarrow(schema).empty_table()).schema  # type: ignore[union-attr]
    if frame.schema == layout:
        return frame
    unknown = [name for name in frame.columns if name not in layout]
    if unknown:
        raise ValueError(f"the columns {unknown} are not in the table's schema")  # a bug: evolve maps every column
    return frame.select(
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in layout.items()
    )


def _drop_unserializable_bounds(statistics: DataFileStatistics) -> None:
    """Leave out a column bound that pyiceberg cannot serialise, so that statistics never fail a load.

    pyiceberg truncates a string max to 16 characters and increments the last one: U+D7FF becomes
    a lone surrogate, which UTF-8 cannot encode. A missing bound only means "may hold any value".
    """
    for aggregate in statistics.column_aggregates.values():
        try:
            aggregate.max_as_bytes()
        except ValueError:  # UnicodeEncodeError is one
            aggregate.current_max = None
        try:
            aggregate.min_as_bytes()
        except ValueError:
            aggregate.current_min = None


def _sort_key(frame: pl.DataFrame, partition_names: list[str]) -> pl.Series | list[str]:
    """One integer that orders rows by partition, then by cluster value (sorting it is ~2x cheaper).

    The partition's dense rank takes the high bits; the cluster value (the key's leading bytes)
    the rest, minus as many low bits as the rank needs: a coarser prefix still gives files
    narrow key ranges. Other cluster types fall back to sorting by the columns.
    """
    if frame.schema[_CLUSTER] != pl.UInt64:
        return [*partition_names, _CLUSTER]
    if not partition_names:
        return frame.get_column(_CLUSTER)
    rank = _partition_rank(frame, partition_names)
    highest = int(rank.max() or 0) + (1 if rank.null_count() else 0)  # type: ignore[arg-type]
    rank = rank.fill_null(highest)  # nulls last
    bits = highest.bit_length()
    key: pl.Series = rank * (2 ** (64 - bits)) + frame.get_column(_CLUSTER) // (2**bits)
    return key


def _partition_rank(frame: pl.DataFrame, partition_names: list[str]) -> pl.Series:
    """The dense rank of each row's partition (from 1), a null partition value first.

    One partition column (the usual month or day) is ranked as a number, several times cheaper
    than ranking a struct of it; its nulls then rank first as they do in a struct.
    """
    if len(partition_names) > 1:
        return frame.select(pl.struct(partition_names).rank("dense").cast(pl.UInt64)).to_series()
    rank = frame.get_column(partition_names[0]).rank("dense").cast(pl.UInt64)
    return (rank + 1).fill_null(1) if rank.null_count() else rank


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


def may_hold_keys(
    tasks: Sequence[FileScanTask],
    probes: Sequence[KeyProbe],
    decoded: MutableMapping[tuple[str, int], tuple[Any, Any]] | None = None,
) -> list[bool]:
    """For each file, whether its statistics allow it to hold any of the keys (never a false "no").

    A file can hold a key only if, for every key column, one of the batch's values lies between
    the file's lower and upper bound (or the batch has a null there and the file may have nulls).
    Missing statistics mean "maybe". ``decoded`` keeps each file's decoded bounds for the next call.
    """
    keep = [True] * len(tasks)
    decoded = {} if decoded is None else decoded
    for probe in probes:
        count = probe.values.len()
        lowers: list[Any] = []
        uppers: list[Any] = []
        for task in tasks:
            bounds = decoded.get((task.file.file_path, probe.field_id))
            if bounds is None:
                lower = (task.file.lower_bounds or {}).get(probe.field_id)
                upper = (task.file.upper_bounds or {}).get(probe.field_id)
                bounds = (_decode(probe.iceberg_type, lower), _decode(probe.iceberg_type, upper))
                decoded[task.file.file_path, probe.field_id] = bounds
            lowers.append(bounds[0])
            uppers.append(bounds[1])
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
    metadata: TableMetadata,
    io: FileIO,
    tasks: Sequence[FileScanTask],
    columns: Iterable[str] | None = None,
    *,
    indexes: Sequence[int] | None = None,
) -> pl.DataFrame:
    """The rows of these files (only ``columns`` when given), tagged with ``FILE_INDEX`` and ``ROW_POSITION``.

    A file's index is its position in ``tasks``, or the matching entry of ``indexes``. Positions are
    stable: reading the same file again yields the same rows in the same order.

    Local files without delete files are read by polars' own Parquet reader (several times faster)
    when every schema the table ever had holds the wanted columns under the same name and type, so
    that every file has them as they are asked for; anything else goes through pyiceberg's
    projection (renamed, added or widened columns).
    """
    schema = metadata.schema()
    projected = schema.select(*columns) if columns is not None else schema
    names = [field.name for field in projected.fields]
    scan = ArrowScan(metadata, io, projected_schema=projected, row_filter=AlwaysTrue())
    empty = pl.DataFrame(
        schema={
            **pl.from_arrow(schema_to_pyarrow(projected).empty_table()).schema,  # type: ignore[union-attr]
            FILE_INDEX: pl.Int32,
            ROW_POSITION: pl.UInt32,
        }
    )
    if not tasks:
        return empty
    tags = list(indexes) if indexes is not None else list(range(len(tasks)))
    stable = _unchanged_in_every_schema(metadata, projected)

    def read(position: int) -> pl.DataFrame:
        task = tasks[position]
        local = _local_path(task.file.file_path)
        if local is not None and stable and not task.delete_files:
            frame = pl.read_parquet(local, columns=names)
        else:
            converted = pl.from_arrow(scan.to_table([task]))
            assert isinstance(converted, pl.DataFrame)
            frame = converted
        return frame.with_columns(
            pl.lit(tags[position], pl.Int32).alias(FILE_INDEX),
            pl.int_range(pl.len(), dtype=pl.UInt32).alias(ROW_POSITION),
        )

    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(tasks))) as pool:
        frames = list(pool.map(read, range(len(tasks))))
    return pl.concat([empty, *frames], how="vertical_relaxed")


def _unchanged_in_every_schema(metadata: TableMetadata, projected: Schema) -> bool:
    for field in projected.fields:
        for schema in metadata.schemas:
            earlier = next((f for f in schema.fields if f.field_id == field.field_id), None)
            if earlier is None or earlier.name != field.name or earlier.field_type != field.field_type:
                return False
    return True


def _local_path(location: str) -> str | None:
    # Exactly as pyiceberg's FileIO resolved it when it wrote the file: no percent-decoding.
    scheme, _, path = PyArrowFileIO.parse_location(location)
    return path if scheme == "file" else None


class LeanTransaction(Transaction):
    """A ``Transaction`` that reads its metadata without copying it.

    pyiceberg recomputes (and deep-copies) the metadata on each read of ``table_metadata``, and a
    snapshot producer reads it a dozen times; the copy of a table with a few hundred snapshots costs
    tens of milliseconds each time, and a group commit reads it once per file it stages. Here the
    table's metadata is read as is until an update is staged, and staged updates are applied once,
    incrementally (pyiceberg's models are immutable: applying an update copies what it changes). The
    catalog's commit still applies the updates to the committed metadata and validates the result.
    """

    _staged: tuple[int, TableMetadata] | None = None
    _context: _TableMetadataUpdateContext | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        if not self._updates:
            return self._table.metadata
        applied, metadata = self._staged or (0, self._table.metadata)
        if applied != len(self._updates):
            self._context = self._context or _TableMetadataUpdateContext()
            for update in self._updates[applied:]:
                metadata = _apply_table_update(update, metadata, self._context)
            self._staged = (len(self._updates), metadata)
        return metadata


def transaction(table: Table) -> Transaction:
    return LeanTransaction(table)


def staged_table(table: Table, pending: Transaction) -> Table:
    """``table`` as it will be once ``pending`` commits: what the next file of a group commit is planned against."""
    return Table(table.name(), pending.table_metadata, table.metadata_location, table.io, table.catalog)


class _ThreadSafeOverwrite(_OverwriteFiles):
    """pyiceberg's overwrite, with manifest evaluators that threads do not share.

    ``_OverwriteFiles._deleted_entries`` checks manifests from its thread pool with one
    ``_ManifestEvalVisitor``, which keeps the manifest under evaluation in an attribute: two
    threads can swap partition summaries, skip the manifest that holds a file to delete and fail
    the commit with "Missing required files to delete" (seen under concurrent upserts; fails safe,
    but fails). Each thread here gets its own visitor.
    """

    def _build_manifest_evaluator(self, spec_id: int) -> Callable[[ManifestFile], bool]:
        spec, schema, predicate = self.spec(spec_id), self.schema(), self.partition_filters[spec_id]
        per_thread = threading.local()

        def evaluate(manifest: ManifestFile) -> bool:
            if not hasattr(per_thread, "evaluate"):
                per_thread.evaluate = manifest_evaluator(spec, schema, predicate, self._case_sensitive)
            result: bool = per_thread.evaluate(manifest)
            return result

        return evaluate


def overwrite(
    pending: Transaction, snapshot_properties: dict[str, str], *, pack_manifests: bool = False
) -> _OverwriteFiles:
    """An overwrite snapshot producer for a table that has a snapshot (what ``update_snapshot().overwrite()`` gives).

    ``pack_manifests``: the snapshot's data manifests are also merged (:func:`_packed`), as compaction does.
    """
    producer = _PackingOverwrite if pack_manifests else _ThreadSafeOverwrite
    return producer(
        operation=Operation.OVERWRITE,
        transaction=pending,
        io=pending._table.io,
        snapshot_properties=snapshot_properties,
    )


def _manifest_target_bytes(metadata: TableMetadata) -> int:
    target = property_as_int(
        metadata.properties,
        TableProperties.MANIFEST_TARGET_SIZE_BYTES,
        TableProperties.MANIFEST_TARGET_SIZE_BYTES_DEFAULT,
    )
    assert target is not None
    return target


def _packed(producer: Any, manifests: list[ManifestFile]) -> list[ManifestFile]:
    """A new snapshot's data manifests merged into as few as ``commit.manifest.target-size-bytes`` (8 MB) allows.

    pyiceberg's own merge (a merge-append's) but of every bin, not only bins of
    ``commit.manifest.min-count-to-merge``: entries this snapshot added or deleted keep that status,
    the others become "existing" (Iceberg's ``rewrite_manifests``, which pyiceberg 0.12 lacks).
    """
    merger = _ManifestMergeManager(
        target_size_bytes=_manifest_target_bytes(producer._transaction.table_metadata),
        min_count_to_merge=1,
        merge_enabled=True,
        snapshot_producer=producer,
    )
    data = [m for m in manifests if m.content == ManifestContent.DATA]
    return merger.merge_manifests(data) + [m for m in manifests if m.content != ManifestContent.DATA]


class _PackingOverwrite(_ThreadSafeOverwrite):
    """An overwrite that also merges the snapshot's data manifests (compaction: one snapshot, not two)."""

    def _process_manifests(self, manifests: list[ManifestFile]) -> list[ManifestFile]:
        return _packed(self, manifests)


class _ManifestRewrite(_MergeAppendFiles):
    """A snapshot that adds and removes no data file and writes the current data manifests anew, packed.

    Built as a merge-append of nothing; its summary says ``replace``, since the rows are unchanged
    (pyiceberg 0.12 computes totals only for append, overwrite and delete, so they are computed as an
    append of nothing).
    """

    def _process_manifests(self, manifests: list[ManifestFile]) -> list[ManifestFile]:
        return _packed(self, manifests)

    def _summary(self, snapshot_properties: dict[str, str] | None = None) -> Summary:
        appended_nothing = super()._summary(snapshot_properties or {})
        return Summary(Operation.REPLACE, **appended_nothing.additional_properties)


def manifests_to_merge(metadata: TableMetadata, manifests: Sequence[ManifestFile]) -> int:
    """How many of these data manifests :func:`_packed` would merge (0: each is alone in its bin already)."""
    by_spec: dict[int, list[ManifestFile]] = {}
    for manifest in manifests:
        if manifest.content == ManifestContent.DATA:
            by_spec.setdefault(manifest.partition_spec_id, []).append(manifest)
    packer: ListPacker[ManifestFile] = ListPacker(
        target_weight=_manifest_target_bytes(metadata), lookback=1, largest_bin_first=False
    )
    return sum(
        len(manifest_bin)
        for group in by_spec.values()
        for manifest_bin in packer.pack_end(group, lambda m: m.manifest_length)
        if len(manifest_bin) > 1
    )


def rewrite_manifests(pending: Transaction, snapshot_properties: dict[str, str]) -> _MergeAppendFiles:
    """A snapshot producer that rewrites the current snapshot's data manifests (see :class:`_ManifestRewrite`)."""
    return _ManifestRewrite(
        operation=Operation.APPEND,
        transaction=pending,
        io=pending._table.io,
        snapshot_properties=snapshot_properties,
    )
