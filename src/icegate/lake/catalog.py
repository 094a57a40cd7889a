"""The catalog from settings, and the dataset's table: schema, partition spec, properties, creation."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    NamespaceAlreadyExistsError,
    NoSuchIcebergTableError,
    NoSuchPropertyException,
    NoSuchTableError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform, Transform, YearTransform
from pyiceberg.types import DateType, IcebergType, LongType, NestedField, StringType, TimestamptzType
from sqlalchemy.exc import DBAPIError

from icegate.constants import ENV_PREFIX
from icegate.errors import CatalogUnavailable, UnsafeSchemaChange
from icegate.transient import MISSING_TABLE_METADATA

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from icegate.datasets import Dataset
    from icegate.settings import Settings

#: Lineage columns every loaded row carries, after the dataset's own columns.
LINEAGE_COLUMNS: tuple[tuple[str, IcebergType, pa.DataType], ...] = (
    ("ingested_at", TimestamptzType(), pa.timestamp("us", tz="UTC")),
    ("source_file", StringType(), pa.large_string()),
    ("source_version", StringType(), pa.large_string()),
    ("run_id", StringType(), pa.large_string()),
)
_ICEBERG_TYPES: dict[str, IcebergType] = {"string": StringType(), "long": LongType(), "date": DateType()}
_TRANSFORMS: dict[str, Callable[[], Transform[Any, Any]]] = {
    "identity": IdentityTransform,
    "year": YearTransform,
    "month": MonthTransform,
    "day": DayTransform,
}

#: Iceberg's table property for the size of the data files a writer aims at (bytes on disk). Files are
#: cut by key range inside a partition, so an upsert rewrites (copy-on-write) only the few files whose
#: range holds its keys. 128 MB: large enough for Athena/Trino to read efficiently, small enough that a
#: copy-on-write rewrite of one file stays cheap.
TARGET_FILE_SIZE_BYTES = "write.target-file-size-bytes"
DEFAULT_TARGET_FILE_SIZE_BYTES = 128 * 1024 * 1024
#: Optional table property: at most this many rows per file, on top of the size (none by default).
TARGET_FILE_ROWS = "icegate.target-file-rows"
#: Iceberg's table property for how often pyiceberg re-applies a commit that lost a race: 0 on every table a
#: load writes, since our loop re-validates on conflict and pyiceberg's own retry would not (see commit.py).
COMMIT_RETRIES_PROPERTY = "commit.retry.num-retries"
TABLE_PROPERTIES = {
    COMMIT_RETRIES_PROPERTY: "0",
    "write.parquet.compression-codec": "zstd",
    # Every commit writes a metadata file that holds all snapshots: keep a bounded history only.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    # Appends merge small manifests, so that planning reads a few manifests, not one per load.
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    TARGET_FILE_SIZE_BYTES: str(DEFAULT_TARGET_FILE_SIZE_BYTES),
}
#: Table property: the merge key the table was created with, comma-separated.
MERGE_KEY_PROPERTY = "icegate.merge-key"
#: SQLite waits this long for another writer's lock before "database is locked" (Python's default: 5 s).
SQLITE_BUSY_TIMEOUT_SECONDS = 30


def build_catalog(settings: Settings) -> Catalog:
    """The catalog the settings name: SQLite under the lake root by default, Glue in AWS, any other by URI.

    ``ICEGATE_CATALOG_URI=postgresql+psycopg://user@host/db`` gives a SQL catalog that many machines
    can commit to at once; SQLite suits one machine.
    """
    properties: dict[str, str] = {"type": settings.catalog_type, "warehouse": settings.resolved_warehouse()}
    if settings.catalog_type in ("sql", "rest") or settings.catalog_uri:
        properties["uri"] = _with_sqlite_timeout(settings.resolved_catalog_uri())
    if settings.s3_endpoint:
        properties["s3.endpoint"] = settings.s3_endpoint
    properties.update(settings.catalog_properties)
    # Several loaders starting on a fresh SQL catalog race to create its tables; the losers see a
    # database error once and find the tables on the next try.
    for attempt in range(4):
        try:
            catalog = load_catalog(settings.catalog_name, **properties)
        except DBAPIError:
            if attempt == 3:
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        else:
            if settings.is_local and not settings.catalog_uri:
                _refuse_a_moved_lake(catalog)
            return catalog
    raise AssertionError("unreachable")


def _refuse_a_moved_lake(catalog: Catalog) -> None:
    """A local lake's catalog keeps its tables' metadata by absolute path: a lake folder moved or renamed points
    at files that are gone. Said once, here, rather than by every file retried and dead-lettered for it."""
    from sqlalchemy import text

    engine = getattr(catalog, "engine", None)
    if engine is None:
        return
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT metadata_location FROM iceberg_tables WHERE catalog_name = :name"), {"name": catalog.name}
        )
        missing = [
            location for (location,) in rows if location and "://" not in location and not Path(location).exists()
        ]
    if missing:
        raise CatalogUnavailable(
            f"{MISSING_TABLE_METADATA}: {missing[0]} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )


def _with_sqlite_timeout(uri: str) -> str:
    if not uri.startswith("sqlite") or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_BUSY_TIMEOUT_SECONDS}"


def iceberg_schema(dataset: Dataset) -> Schema:
    columns = [(c.name, _ICEBERG_TYPES[c.type]) for c in dataset.columns]
    columns += [(name, iceberg_type) for name, iceberg_type, _ in LINEAGE_COLUMNS]
    # Every field is optional: required-ness is enforced by validation, and Iceberg rejects a
    # nullable Arrow column written into a required field.
    return Schema(
        *(NestedField(i, name, t, required=False) for i, (name, t) in enumerate(columns, start=1)),
    )


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


def ensure_table(catalog: Catalog, dataset: Dataset, namespace: str, *, file: str | None = None) -> Table:
    """Load the dataset's table, creating the namespace and table on first use (race-safe).

    Loading comes first: creating writes a metadata file before it learns that the table exists. A table of
    that name that is not Iceberg (a Glue crawler's, a Hive table) is :class:`UnsafeSchemaChange` naming it
    and ``file``, never pyiceberg's bare words.
    """
    identifier = (namespace, dataset.table)
    try:
        return catalog.load_table(identifier)
    except NoSuchIcebergTableError as exc:  # before its base class, NoSuchTableError
        raise _not_iceberg(identifier, exc, file) from None
    except NoSuchTableError:
        pass
    except (NoSuchPropertyException, ValueError) as exc:  # what the Glue catalog raises on a table with no
        raise _not_iceberg(identifier, exc, file) from None  # Iceberg properties, or no properties at all
    ensure_namespace(catalog, namespace)
    schema = iceberg_schema(dataset)
    return catalog.create_table_if_not_exists(
        identifier,
        schema=schema,
        partition_spec=partition_spec(dataset, schema),
        properties={**TABLE_PROPERTIES, MERGE_KEY_PROPERTY: ",".join(dataset.key)},
    )


def _not_iceberg(identifier: tuple[str, str], exc: Exception, file: str | None) -> UnsafeSchemaChange:
    name = ".".join(identifier)
    return UnsafeSchemaChange(
        f"the catalog's table {name} is not an Iceberg table ({exc}); another tool (a Glue crawler?) made it "
        f"under the dataset's table name: drop or rename it, or load into another namespace ({ENV_PREFIX}NAMESPACE)",
        file=file,
    )


@dataclass(frozen=True)
class FileTarget:
    """The data files a writer aims at: about ``size_bytes`` on disk, never more than ``max_rows`` rows."""

    size_bytes: int = DEFAULT_TARGET_FILE_SIZE_BYTES
    max_rows: int | None = None


def file_target(table: Table, size_bytes: int | None = None) -> FileTarget:
    """The table's target (``write.target-file-size-bytes``, ``icegate.target-file-rows``); ``size_bytes`` overrides."""
    size = size_bytes or int(table.properties.get(TARGET_FILE_SIZE_BYTES, DEFAULT_TARGET_FILE_SIZE_BYTES))
    rows = table.properties.get(TARGET_FILE_ROWS)
    return FileTarget(size_bytes=max(1, size), max_rows=max(1, int(rows)) if rows else None)


def ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create ``namespace`` only when it does not exist yet.

    Ask before creating: pyiceberg's create_namespace_if_not_exists tries CreateDatabase first and only
    then catches "already exists"; on Glue, IAM refuses a role without glue:CreateDatabase before Glue
    can say so. The deployed database is the stack's (CDK creates it), so no stage is granted
    CreateDatabase at all: they only read the database (GetDatabase).
    """
    if not catalog.namespace_exists(namespace):
        try:
            catalog.create_namespace(namespace)
        except (NamespaceAlreadyExistsError, DBAPIError):
            # Two first loads raced: the SQL catalog reports the loser as an integrity error.
            if not catalog.namespace_exists(namespace):
                raise
