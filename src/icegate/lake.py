"""The Iceberg side: the catalog from settings, table creation, the merge and the commit loop.

We do not use pyiceberg's ``Table.upsert`` (one predicate per key: slow, and it crashes on large
batches) nor its internal commit retries (they re-apply appends without re-checking them, so two
loaders could both insert the same new key). Tables are created with
``commit.retry.num-retries=0`` and :func:`load_batch` owns the loop: on a conflict it reloads the
table, re-checks the source marker, recomputes the merge against the new snapshot and commits again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform, Transform, YearTransform
from pyiceberg.types import DateType, IcebergType, LongType, NestedField, StringType, TimestamptzType

from icegate.errors import CommitConflict
from icegate.payloads import LoadSummary

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from icegate.datasets import Dataset
    from icegate.settings import Settings

#: Snapshot-summary keys that record which source a commit loaded (the idempotency marker).
MARKER_SHA256 = "icegate.source-sha256"
MARKER_FILE = "icegate.source-file"
MARKER_VERSION = "icegate.source-version"
MARKER_RUN = "icegate.run-id"

#: Lineage columns every loaded row carries, after the dataset's own columns.
LINEAGE_COLUMNS: tuple[tuple[str, IcebergType, pa.DataType], ...] = (
    ("ingested_at", TimestamptzType(), pa.timestamp("us", tz="UTC")),
    ("source_file", StringType(), pa.large_string()),
    ("source_version", StringType(), pa.large_string()),
    ("run_id", StringType(), pa.large_string()),
)
_ICEBERG_TYPES: dict[str, IcebergType] = {"string": StringType(), "long": LongType(), "date": DateType()}
_ARROW_TYPES: dict[str, pa.DataType] = {"string": pa.large_string(), "long": pa.int64(), "date": pa.date32()}
_TRANSFORMS: dict[str, Callable[[], Transform[Any, Any]]] = {
    "identity": IdentityTransform,
    "year": YearTransform,
    "month": MonthTransform,
    "day": DayTransform,
}
TABLE_PROPERTIES = {
    # Our loop re-validates on conflict; pyiceberg's own retry would not (see module docstring).
    "commit.retry.num-retries": "0",
    "write.parquet.compression-codec": "zstd",
}


@dataclass(frozen=True)
class SourceIdentity:
    """What a commit records about the file it loaded."""

    sha256: str
    file: str
    version: str | None
    run_id: str

    def snapshot_properties(self) -> dict[str, str]:
        props = {MARKER_SHA256: self.sha256, MARKER_FILE: self.file, MARKER_RUN: self.run_id}
        if self.version:
            props[MARKER_VERSION] = self.version
        return props


def build_catalog(settings: Settings) -> Catalog:
    """The catalog the settings name: SQLite under the lake root by default, Glue in AWS, any other by URI."""
    properties: dict[str, str] = {"type": settings.catalog_type, "warehouse": settings.resolved_warehouse()}
    if settings.catalog_type in ("sql", "rest") or settings.catalog_uri:
        properties["uri"] = settings.resolved_catalog_uri()
    if settings.s3_endpoint:
        properties["s3.endpoint"] = settings.s3_endpoint
    properties.update(settings.catalog_properties)
    return load_catalog(settings.catalog_name, **properties)


def iceberg_schema(dataset: Dataset) -> Schema:
    columns = [(c.name, _ICEBERG_TYPES[c.type]) for c in dataset.columns]
    columns += [(name, iceberg_type) for name, iceberg_type, _ in LINEAGE_COLUMNS]
    # Every field is optional: required-ness is enforced by validation, and Iceberg rejects a
    # nullable Arrow column written into a required field.
    return Schema(
        *(NestedField(i, name, t, required=False) for i, (name, t) in enumerate(columns, start=1)),
    )


def arrow_schema(dataset: Dataset) -> pa.Schema:
    fields = [pa.field(c.name, _ARROW_TYPES[c.type]) for c in dataset.columns]
    fields += [pa.field(name, arrow_type) for name, _, arrow_type in LINEAGE_COLUMNS]
    return pa.schema(fields)


def partition_spec(dataset: Dataset, schema: Schema) -> PartitionSpec:
    return PartitionSpec(
        *(
            PartitionField(
                source_id=schema.find_field(column).field_id,
                field_id=1000 + i,
                transform=_TRANSFORMS[transform](),
                name=column if transform == "identity" else f"{column}_{transform}",
            )
            for i, (column, transform) in enumerate(dataset.partition)
        )
    )


def ensure_table(catalog: Catalog, dataset: Dataset, namespace: str) -> Table:
    """Load the dataset's table, creating the namespace and table on first use (race-safe)."""
    catalog.create_namespace_if_not_exists(namespace)
    schema = iceberg_schema(dataset)
    return catalog.create_table_if_not_exists(
        (namespace, dataset.table),
        schema=schema,
        partition_spec=partition_spec(dataset, schema),
        properties={**TABLE_PROPERTIES, "icegate.merge-key": ",".join(dataset.key)},
    )


def loaded_snapshots(table: Table) -> Iterator[tuple[int, dict[str, str]]]:
    """Snapshots committed by icegate, with their source markers."""
    for snapshot in table.metadata.snapshots:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if MARKER_SHA256 in props:
            yield snapshot.snapshot_id, props


def find_loaded(table: Table, sha256: str) -> int | None:
    """The snapshot that already loaded a source with this content hash, if any."""
    return next((sid for sid, props in loaded_snapshots(table) if props[MARKER_SHA256] == sha256), None)


def with_lineage(batch: pl.DataFrame, dataset: Dataset, identity: SourceIdentity, ingested_at: datetime) -> pa.Table:
    frame = batch.select(dataset.column_names).with_columns(
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
        pl.lit(identity.file).alias("source_file"),
        pl.lit(identity.version).cast(pl.String).alias("source_version"),
        pl.lit(identity.run_id).alias("run_id"),
    )
    return frame.to_arrow().cast(arrow_schema(dataset))


def dedupe_in_file(batch: pl.DataFrame, key: tuple[str, ...]) -> tuple[pl.DataFrame, int]:
    """One row per key; the last occurrence wins (a scraper appends, so later rows are newer)."""
    unique = batch.unique(subset=list(key), keep="last", maintain_order=True)
    return unique, batch.height - unique.height


def existing_keys(table: Table, key: tuple[str, ...]) -> pl.DataFrame:
    keys = table.scan(selected_fields=key).to_arrow()
    frame = pl.from_arrow(keys)
    assert isinstance(frame, pl.DataFrame)
    return frame


def plan_insert_new(batch: pl.DataFrame, stored_keys: pl.DataFrame, key: tuple[str, ...]) -> tuple[pl.DataFrame, int]:
    """Rows whose key the table does not hold yet (null key parts compare equal), and how many were skipped."""
    if stored_keys.height == 0:
        return batch, 0
    stored = stored_keys.select(pl.col(k).cast(batch.schema[k]) for k in key)
    new_rows = batch.join(stored, on=list(key), how="anti", nulls_equal=True)
    return new_rows, batch.height - new_rows.height


def load_batch(
    catalog: Catalog,
    dataset: Dataset,
    batch: pl.DataFrame,
    identity: SourceIdentity,
    *,
    namespace: str,
    attempts: int = 8,
    backoff_seconds: float = 0.05,
) -> LoadSummary:
    """Merge validated rows into the dataset's table, exactly once per source content."""
    table_name = f"{namespace}.{dataset.table}"
    rows, duplicates = dedupe_in_file(batch, dataset.key)
    ensure_table(catalog, dataset, namespace)
    for attempt in range(attempts):
        table = catalog.load_table((namespace, dataset.table))
        if (snapshot_id := find_loaded(table, identity.sha256)) is not None:
            return LoadSummary(table_name, dataset.strategy, 0, 0, 0, duplicates, snapshot_id, already_loaded=True)
        if dataset.strategy == "insert_new":
            new_rows, skipped = plan_insert_new(rows, existing_keys(table, dataset.key), dataset.key)
        else:
            new_rows, skipped = rows, 0
        try:
            table.append(
                with_lineage(new_rows, dataset, identity, datetime.now(UTC)),
                snapshot_properties=identity.snapshot_properties(),
            )
        except CommitFailedException:
            time.sleep(backoff_seconds * 2**attempt * random.uniform(0.5, 1.5))
            continue
        snapshot_id = find_loaded(table, identity.sha256)
        return LoadSummary(table_name, dataset.strategy, new_rows.height, 0, skipped, duplicates, snapshot_id)
    raise CommitConflict(
        f"{attempts} commits to {table_name} lost to concurrent writers; the load will be retried",
        file=identity.file,
    )
