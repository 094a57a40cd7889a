"""The ledger's Iceberg side: the ``icegate_loads`` table, its idempotent append and its reads.

The ledger is an ordinary Iceberg table in the namespace, so DuckDB, Athena or Spark read it like
any other. Several loaders and dead-letter stages append to it at once: the table has pyiceberg's
own commit retries off (they would re-apply an append without re-checking it, see ``commit``), and
:func:`append_rows` owns the loop — on a conflict it reloads the table, drops the rows another
writer already recorded (one row per run id and outcome) and commits again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, In
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DoubleType,
    IcebergType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)
from sqlalchemy.exc import DBAPIError

from icegate.constants import LEDGER_OUTCOMES, LEDGER_TABLE
from icegate.constants import ROLLED_BACK as ROLLED_BACK  # re-exported: the ledger modules import it from here
from icegate.dimensions import QUALITY_DIMENSIONS
from icegate.lake.catalog import MERGE_KEY_PROPERTY, TABLE_PROPERTIES, ensure_namespace
from icegate.lake.commit import is_contention
from icegate.lake.files import transaction
from icegate.lake.markers import (
    LEDGER_PREFIX,
    MARKER_FILE,
    MARKER_INSERTED,
    MARKER_ROLLBACK_OF_RUN,
    MARKER_ROLLBACK_OF_SHA256,
    MARKER_RUN,
    MARKER_SHA256,
    MARKER_VERSION,
    loaded_snapshots,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

#: ``recorded_by`` of a row rebuilt from a snapshot marker (lost ledger write, expiry, migration).
RECORDED_BY_MAINTAIN = "maintain"
#: Snapshot-summary key of a ledger commit: how many rows it recorded.
LEDGER_ROWS = "icegate.ledger-rows"

_STRING, _LONG, _DOUBLE, _TIME = StringType(), LongType(), DoubleType(), TimestamptzType()
#: The nested column types, named: their element ids are assigned where the schema is built (:func:`_nested`).
_COUNTS, _SECONDS, _NAMES = "map<string,long>", "map<string,double>", "list<string>"
_NESTED_ARROW = {
    _COUNTS: pa.map_(pa.string(), pa.int64()),
    _SECONDS: pa.map_(pa.string(), pa.float64()),
    _NAMES: pa.list_(pa.string()),
}
#: (name, Iceberg type, documentation) in table order. The README's schema table says the same.
_COLUMNS: tuple[tuple[str, IcebergType | str, str], ...] = (
    ("run_id", _STRING, "execution name (cloud) or local run id"),
    ("outcome", _STRING, f"{', '.join(LEDGER_OUTCOMES[:-1])} or {LEDGER_OUTCOMES[-1]}"),
    ("dataset", _STRING, "dataset contract name (unknown when the file matched none)"),
    ("table_name", _STRING, "namespace.table the rows went to"),
    ("table_uuid", _STRING, "the Iceberg table's UUID (a dropped and recreated table is another table)"),
    ("source_bucket", _STRING, "landing bucket (empty for a local file)"),
    ("source_key", _STRING, "object key or local path"),
    ("source_uri", _STRING, "s3://bucket/key or local path"),
    ("source_version", _STRING, "S3 version id"),
    ("source_etag", _STRING, "S3 ETag"),
    ("source_sha256", _STRING, "content SHA-256: the idempotency key"),
    ("source_size", _LONG, "bytes"),
    ("source_uploaded_at", _TIME, "S3 LastModified or local mtime"),
    ("stage", _STRING, "stage that failed (dead_lettered)"),
    ("error_type", _STRING, "error class name (dead_lettered)"),
    ("error_message", _STRING, "what failed, where, and the gate's reason"),
    ("dead_letter_uri", _STRING, "copy of the source in dlq/"),
    ("error_uri", _STRING, "the DLQ entry's error.json"),
    ("rejected_rows_uri", _STRING, "rejected.parquet of the run, when rows were rejected"),
    ("rows_read", _LONG, "rows parsed"),
    ("rows_valid", _LONG, "rows that passed the schema"),
    ("rows_rejected", _LONG, "rows the schema rejected"),
    ("rows_inserted", _LONG, "rows added to the table"),
    ("rows_updated", _LONG, "stored rows replaced (upsert)"),
    ("rows_skipped", _LONG, "rows whose key the table already held"),
    ("rows_duplicate_in_file", _LONG, "rows dropped for a later row of the same key in the file"),
    ("quality_score", _DOUBLE, "0–100"),
    ("quality_threshold", _DOUBLE, "the gate's threshold"),
    *((f"score_{name}", _DOUBLE, f"{name}, 0–1") for name in QUALITY_DIMENSIONS),
    ("failed_checks", _COUNTS, "schema check → rows it rejected"),
    ("quality_checks", _COUNTS, "dimension/quality check → rows it cost points on"),
    ("snapshot_id", _LONG, "the data snapshot the file went into (loaded, already_loaded)"),
    ("started_at", _TIME, "the run's first stage started"),
    ("finished_at", _TIME, "the outcome was decided"),
    ("stage_seconds", _SECONDS, "stage → seconds it took"),
    ("recorded_by", _STRING, "loader, dead_letter, or maintain (a row repaired from a snapshot marker)"),
    # Columns added later go last: a ledger created before them gains them on its next write.
    ("replay_of", _STRING, "the run whose dead-lettered file or rejected rows this run replayed (icegate replay)"),
    ("ignored_columns", _NAMES, "source headers that matched no contract column, so were not loaded (the first 50)"),
)
MAP_COLUMNS = {name for name, kind, _ in _COLUMNS if kind in (_COUNTS, _SECONDS)}
COLUMN_NAMES = tuple(name for name, _, _ in _COLUMNS)
SCORE_COLUMN_PREFIX = "score_"


def ledger_schema() -> Schema:
    fields: list[NestedField] = []
    next_id = len(_COLUMNS) + 1
    for field_id, (name, kind, doc) in enumerate(_COLUMNS, start=1):
        if isinstance(kind, str):
            kind, next_id = _nested(kind, next_id)
        fields.append(NestedField(field_id, name, kind, required=False, doc=doc))
    return Schema(*fields)


def _nested(kind: str, next_id: int) -> tuple[IcebergType, int]:
    """A nested column type with its element ids from ``next_id`` on, and the next id free after them."""
    if kind == _NAMES:
        return ListType(next_id, _STRING, element_required=False), next_id + 1
    value_type: IcebergType = _LONG if kind == _COUNTS else _DOUBLE
    return MapType(next_id, _STRING, next_id + 1, value_type, value_required=False), next_id + 2


def arrow_schema() -> pa.Schema:
    """The Arrow schema rows are appended with (matches :func:`ledger_schema`)."""
    result: list[pa.Field] = []
    for name, kind, _ in _COLUMNS:
        if isinstance(kind, str):
            arrow_type: pa.DataType = _NESTED_ARROW[kind]
        elif isinstance(kind, LongType):
            arrow_type = pa.int64()
        elif isinstance(kind, DoubleType):
            arrow_type = pa.float64()
        elif isinstance(kind, TimestamptzType):
            arrow_type = pa.timestamp("us", tz="UTC")
        else:
            arrow_type = pa.string()
        result.append(pa.field(name, arrow_type))
    return pa.schema(result)


_LEDGER_PROPERTIES = {
    **TABLE_PROPERTIES,
    # Compaction (``icegate maintain icegate_loads``) sorts by content hash, so the "already loaded" lookup
    # prunes files by their min/max statistics.
    MERGE_KEY_PROPERTY: "source_sha256",
    # A write skips the rows already recorded by looking its run ids up: the whole id in each file's statistics
    # lets that lookup skip the files of other runs (the default keeps 16 characters, the same for all the
    # local runs of ten hours, so every write read them all).
    "write.metadata.metrics.column.run_id": "full",
}


def ledger_table(catalog: Catalog, namespace: str, *, create: bool) -> Table | None:
    """The ledger table; created on first use when ``create`` (race-safe), else ``None`` when absent."""
    identifier = (namespace, LEDGER_TABLE)
    try:
        table = catalog.load_table(identifier)
        return _up_to_date(table) if create else table
    except NoSuchTableError:
        if not create:
            return None
    ensure_namespace(catalog, namespace)
    return catalog.create_table_if_not_exists(identifier, schema=ledger_schema(), properties=_LEDGER_PROPERTIES)


def _up_to_date(table: Table) -> Table:
    """The ledger with the columns and properties added since it was created (plain columns and lists; the maps
    are as old as the ledger); a concurrent writer adding the same ones makes this commit fail, and the caller's
    retry then finds them."""
    present = {field.name for field in table.schema().fields}
    missing = [(name, kind, doc) for name, kind, doc in _COLUMNS if name not in present and name not in MAP_COLUMNS]
    unset = {name: value for name, value in _LEDGER_PROPERTIES.items() if table.properties.get(name) != value}
    if not missing and not unset:
        return table
    with table.transaction() as transaction:
        if unset:  # a ledger created before a property was: its next writes get it
            transaction.set_properties(unset)
        if missing:
            with transaction.update_schema() as update:
                for name, kind, doc in missing:
                    # A nested type's ids are placeholders here: the schema update assigns fresh ones.
                    update.add_column(name, _nested(kind, 1)[0] if isinstance(kind, str) else kind, doc=doc)
    return table


def append_rows(
    catalog: Catalog,
    namespace: str,
    rows: Sequence[dict[str, Any]],
    *,
    attempts: int = 8,
    backoff: float = 0.05,
    unrecorded: Collection[str] = (),
) -> int:
    """Append ledger rows, skipping any whose (run id, outcome) is already recorded. Returns rows written.

    ``unrecorded``: run ids whose rows the caller knows cannot exist yet (the load of its own file it just
    committed), so the check — a ledger scan whose cost grows with the ledger's files until maintenance
    compacts them — leaves them out (and is skipped when it is all of them), unless an attempt may have
    landed unseen (a busy catalog database). Every other run id is looked for on every attempt: a commit
    that lost to another writer may have lost to the very row it holds.
    """
    if not rows:
        return 0
    unseen = set(unrecorded)
    for attempt in range(attempts):
        if attempt:
            time.sleep(random.uniform(0, min(2.0, backoff * 2**attempt)))
        try:
            table = ledger_table(catalog, namespace, create=True)
            assert table is not None
            look_for = {str(row["run_id"]) for row in rows} - unseen
            recorded = _recorded_keys(table, look_for) if look_for else set()
            fresh = [row for row in rows if (row["run_id"], row["outcome"]) not in recorded]
            if not fresh:
                return 0
            batch = pa.Table.from_pylist([_normalise(row) for row in fresh], schema=arrow_schema())
            pending = transaction(table)  # lean: a ledger with many snapshots is not deep-copied per read
            pending.append(batch, snapshot_properties={LEDGER_ROWS: str(len(fresh))})
            pending.commit_transaction()
            return len(fresh)
        except CommitFailedException:
            continue
        except DBAPIError as exc:
            if not is_contention(exc):
                raise
            unseen = set()  # whether that commit landed is unknown: look for every row
            continue
    raise CommitFailedException(f"{attempts} commits to {namespace}.{LEDGER_TABLE} lost to concurrent writers")


def _recorded_keys(table: Table, run_ids: set[str]) -> set[tuple[str, str]]:
    if table.current_snapshot() is None:
        return set()
    found = scan(table, In("run_id", run_ids), ("run_id", "outcome"))  # type: ignore[arg-type, call-arg]
    return set(zip(found.column("run_id").to_pylist(), found.column("outcome").to_pylist(), strict=True))


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    out = {name: row.get(name) for name in COLUMN_NAMES}
    for name in MAP_COLUMNS:
        if (value := out[name]) is not None:
            out[name] = list(dict(value).items())
    return out


def scan(table: Table, row_filter: BooleanExpression | None = None, columns: Sequence[str] = ("*",)) -> pa.Table:
    """Ledger rows matching a filter (files pruned by their statistics first)."""
    if table.current_snapshot() is None:
        return arrow_schema().empty_table()
    if row_filter is None:
        rows = table.scan(selected_fields=tuple(columns)).to_arrow()
    else:
        rows = table.scan(row_filter=row_filter, selected_fields=tuple(columns)).to_arrow()
    if tuple(columns) != ("*",):
        return rows
    # A ledger not written since columns were added gains them on its next write; until then they read as null.
    for field in arrow_schema():
        if field.name not in rows.column_names:
            rows = rows.append_column(field, pa.nulls(rows.num_rows, field.type))
    return rows


def where(*, since: datetime | None = None, **equal: str | None) -> BooleanExpression | None:
    """A row filter: each given column equal to its value, ``finished_at`` at or after ``since``."""
    conditions: list[BooleanExpression] = [
        EqualTo(column, value)  # type: ignore[arg-type, call-arg]  # pydantic model confuses mypy
        for column, value in equal.items()
        if value is not None
    ]
    if since is not None:
        conditions.append(GreaterThanOrEqual("finished_at", since.isoformat()))  # type: ignore[arg-type, call-arg]
    if not conditions:
        return None
    result = conditions[0]
    for condition in conditions[1:]:
        result = And(result, condition)
    return result


def loaded_filter(sha256: str, table_name: str) -> BooleanExpression:
    condition = where(source_sha256=sha256, table_name=table_name, outcome="loaded")
    assert condition is not None
    return condition


def table_name_of(table: Table) -> str:
    return ".".join(table.name()[-2:])


def loaded_snapshot(table: Table, sha256: str) -> int | None:
    """The snapshot the ledger says loaded this content into this very table (same UUID), if any.

    The memory of loads whose snapshots expired. Rows without a UUID (the loader could not read it)
    count too: a UUID that differs means the table was dropped and recreated since.
    """
    catalog = getattr(table, "catalog", None)
    if catalog is None:
        return None
    identifier = table.name()
    ledger = ledger_table(catalog, ".".join(identifier[:-1]), create=False)
    if ledger is None:
        return None
    row_filter = where(source_sha256=sha256, table_name=table_name_of(table), outcome="loaded")
    assert row_filter is not None
    found = scan(ledger, row_filter, ("run_id", "snapshot_id", "table_uuid")).to_pylist()
    undone = rolled_back_runs(ledger, {r["run_id"] for r in found}, table_name_of(table))
    uuid = str(table.metadata.table_uuid)
    return next(
        (
            r["snapshot_id"]
            for r in found
            if r["snapshot_id"] is not None and r["table_uuid"] in (None, uuid) and r["run_id"] not in undone
        ),
        None,
    )


def rolled_back_runs(ledger: Table, run_ids: set[str], table_name: str) -> set[str]:
    """Which of these runs' loads into ``table_name`` were rolled back (a ``rolled_back`` row)."""
    if not run_ids:
        return set()
    row_filter = And(
        In("run_id", run_ids),  # type: ignore[arg-type, call-arg]
        where(outcome=ROLLED_BACK, table_name=table_name),  # type: ignore[arg-type]
    )
    return set(scan(ledger, row_filter, ("run_id",)).column("run_id").to_pylist())


def record_markers(
    catalog: Catalog,
    namespace: str,
    table: Table,
    *,
    dataset: str | None = None,
    snapshot_ids: set[int] | None = None,
) -> int:
    """Record a ``loaded`` row for each snapshot marker of ``table`` (or of ``snapshot_ids``) the ledger
    lacks, and a ``rolled_back`` row for each rollback snapshot.

    Run before snapshots expire (their markers then live on in the ledger only) and by ``icegate
    maintain`` to repair a loader's lost ledger write. A rebuilt row says what the marker and the
    snapshot summary know (source, hash, run, rows added by an append), ``recorded_by=maintain``.
    Returns rows written.
    """
    name = table_name_of(table)
    ledger = ledger_table(catalog, namespace, create=False)
    known: set[str] = set()
    if ledger is not None:
        found = scan(ledger, where(table_name=name, outcome="loaded"), ("run_id",))
        known = set(found.column("run_id").to_pylist())
    snapshots = {s.snapshot_id: s for s in table.metadata.snapshots}
    rows = []
    for snapshot_id, props in loaded_snapshots(table):
        run_id = props.get(MARKER_RUN, "")
        if not run_id or run_id in known or (snapshot_ids is not None and snapshot_id not in snapshot_ids):
            continue
        snapshot = snapshots[snapshot_id]
        operation = snapshot.summary.operation.value if snapshot.summary else ""
        added = props.get(MARKER_INSERTED) or (props.get("added-records") if operation == "append" else None)
        uri = props.get(MARKER_FILE, "")
        bucket, _, key = uri.removeprefix("s3://").partition("/") if uri.startswith("s3://") else ("", "", uri)
        rows.append(
            {
                **_marker_row(table, name, props[MARKER_SHA256], snapshot_id, dataset),
                "run_id": run_id,
                "source_bucket": bucket,
                "source_key": key,
                "source_uri": uri,
                "source_version": props.get(MARKER_VERSION),
                # The marker's count; else an append's added rows (an overwrite also rewrites kept rows).
                "rows_inserted": int(added) if added is not None else None,
                "finished_at": datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC),
            }
        )
    rows.extend(_rollback_rows(ledger, table, name, dataset, snapshot_ids))
    return append_rows(catalog, namespace, rows)


def _rollback_rows(
    ledger: Table | None, table: Table, name: str, dataset: str | None, snapshot_ids: set[int] | None
) -> list[dict[str, Any]]:
    """``rolled_back`` rows the ledger lacks, rebuilt from rollback snapshots: once such a snapshot
    expires, the ledger alone remembers that the load it undid no longer counts as loaded."""
    rollbacks = [
        (s, s.summary.additional_properties)
        for s in table.metadata.snapshots
        if s.summary
        and MARKER_ROLLBACK_OF_RUN in s.summary.additional_properties
        and (snapshot_ids is None or s.snapshot_id in snapshot_ids)
    ]
    if not rollbacks:
        return []
    known: set[str] = set()
    if ledger is not None:
        found = scan(ledger, where(table_name=name, outcome=ROLLED_BACK), ("run_id",))
        known = set(found.column("run_id").to_pylist())
    return [
        {
            **_marker_row(table, name, props.get(MARKER_ROLLBACK_OF_SHA256, ""), snapshot.snapshot_id, dataset),
            "outcome": ROLLED_BACK,
            "run_id": props[MARKER_ROLLBACK_OF_RUN],
            "finished_at": datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC),
        }
        for snapshot, props in rollbacks
        if props[MARKER_ROLLBACK_OF_RUN] not in known
    ]


def migrate_legacy_markers(catalog: Catalog, namespace: str, table: Table, *, dataset: str | None = None) -> int:
    """Move the markers older versions kept as table properties (``icegate.loaded.<sha256>``) into the ledger.

    One time per table: the rows are committed first, then the properties removed, so a marker is
    findable throughout (``find_loaded`` reads both). Returns the markers moved.
    """
    legacy = {k.removeprefix(LEDGER_PREFIX): int(v) for k, v in table.properties.items() if k.startswith(LEDGER_PREFIX)}
    if not legacy:
        return 0
    name = table_name_of(table)
    append_rows(
        catalog,
        namespace,
        [
            {**_marker_row(table, name, sha, snapshot_id, dataset), "run_id": f"migrated-marker-{sha}"}
            for sha, snapshot_id in legacy.items()
        ],
    )
    for _ in range(8):
        current = catalog.load_table(table.name())
        keys = [k for k in current.properties if k.startswith(LEDGER_PREFIX)]
        if not keys:
            break
        try:
            current.transaction().remove_properties(*keys).commit_transaction()
            break
        except CommitFailedException:
            continue
    return len(legacy)


def _marker_row(table: Table, name: str, sha256: str, snapshot_id: int, dataset: str | None) -> dict[str, Any]:
    return {
        "outcome": "loaded",
        "dataset": dataset or table.name()[-1],
        "table_name": name,
        "table_uuid": str(table.metadata.table_uuid),
        "source_sha256": sha256,
        "snapshot_id": snapshot_id,
        "recorded_by": RECORDED_BY_MAINTAIN,
    }
