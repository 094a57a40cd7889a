"""The ingestion ledger: one row per file outcome in the Iceberg table ``icegate_loads``.

The loader records ``loaded`` and ``already_loaded``, the dead-letter stage ``dead_lettered``,
``icegate rollback`` ``rolled_back``. The ledger is the durable, queryable memory of what was
loaded and how good it was; the snapshot marker of a data commit stays the exactly-once proof. So
writing the ledger never breaks or duplicates a load: it happens after the data commit, a failure
is logged (and repaired from the snapshot markers by ``icegate maintain``), and a row is written at
most once per (run id, outcome).

The Iceberg side (schema, table, idempotent append) lives in :mod:`icegate.lake.ledger`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
from pyiceberg.expressions import And, EqualTo, In, Or

from icegate.constants import LEDGER_TABLE
from icegate.dimensions import QUALITY_DIMENSIONS
from icegate.lake.ledger import (
    COLUMN_NAMES,
    RECORDED_BY_MAINTAIN,
    ROLLED_BACK,
    SCORE_COLUMN_PREFIX,
    append_rows,
    arrow_schema,
    ledger_table,
    loaded_filter,
    migrate_legacy_markers,
    record_markers,
    rolled_back_runs,
    scan,
    where,
)
from icegate.lake.markers import MARKER_VERSION
from icegate.payloads import PriorLoad

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from icegate.lake.rollback import Rollback
    from icegate.payloads import DeadLettered, Loaded

log = logging.getLogger(__name__)


__all__ = [
    "COLUMN_NAMES",
    "LEDGER_TABLE",
    "RECORDED_BY_MAINTAIN",
    "content_loads",
    "find_prior_load",
    "history",
    "recent_loaded",
    "record",
    "record_rows",
    "repair_from_markers",
    "row_for_dead_letter",
    "row_for_load",
    "row_for_rollback",
    "source_outcomes",
]


def _time(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _source_columns(source: Mapping[str, Any]) -> dict[str, Any]:
    bucket, key = str(source.get("bucket") or ""), str(source.get("key") or "")
    return {
        "source_bucket": bucket,
        "source_key": key,
        "source_uri": f"s3://{bucket}/{key}" if bucket else key,
        "source_version": source.get("version_id"),
        "source_etag": (str(source["etag"]).strip('"') if source.get("etag") else None),
        "source_size": source.get("size"),
    }


def _quality_columns(quality: Mapping[str, Any] | None, report: Mapping[str, Any] | None) -> dict[str, Any]:
    """Score, threshold, each dimension's score and the quality checks that cost points (from the report)."""
    columns: dict[str, Any] = {}
    if quality:
        columns["quality_score"] = quality.get("score")
        columns["quality_threshold"] = quality.get("threshold")
        dimensions = quality.get("dimensions") or {}
        for name in QUALITY_DIMENSIONS:
            columns[SCORE_COLUMN_PREFIX + name] = dimensions.get(name)
    if report:
        columns["quality_checks"] = {
            f"{dimension['name']}/{check['name']}": int(check["rows_failed"])
            for dimension in report.get("dimensions", [])
            for check in dimension.get("checks", [])
        } or None
    return columns


def _common(state: Mapping[str, Any], report: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "run_id": str(state.get("run_id") or ""),
        **_source_columns(state.get("source") or {}),
        "source_sha256": state.get("sha256") or None,
        "source_uploaded_at": _time(state.get("uploaded_at")),
        "rows_read": state.get("rows") if "parsed_uri" in state else None,
        "rows_valid": state.get("rows_valid") if "valid_uri" in state else None,
        "rows_rejected": state.get("rows_rejected") if "valid_uri" in state else None,
        "rejected_rows_uri": state.get("rejected_uri") or None,
        "failed_checks": dict(state.get("failed_checks") or {}) or None,
        **_quality_columns(state.get("quality"), report),
        "started_at": _time(state.get("started_at")),
        "stage_seconds": dict(state.get("stage_seconds") or {}) or None,
        "replay_of": state.get("replay_of") or None,
        "ignored_columns": list(state.get("ignored_columns") or []) or None,
    }


def row_for_load(
    loaded: Loaded, *, namespace: str, report: Mapping[str, Any] | None = None, table_uuid: str | None = None
) -> dict[str, Any]:
    """The ledger row of a file the loader handled (``loaded`` or ``already_loaded``)."""
    load = loaded.load
    assert load is not None
    state = loaded.to_dict()
    if loaded.prior_load is not None:
        # Answered from the ledger before parsing: no rows were read in this run.
        state = {k: v for k, v in state.items() if k not in ("parsed_uri", "valid_uri", "quality")}
    return {
        **_common(state, report),
        "outcome": "already_loaded" if load.already_loaded else "loaded",
        "dataset": loaded.dataset,
        "table_name": load.table or f"{namespace}.{loaded.dataset}",
        "table_uuid": table_uuid,
        "rows_inserted": load.inserted,
        "rows_updated": load.updated,
        "rows_skipped": load.skipped,
        "rows_duplicate_in_file": load.duplicates_in_file,
        "snapshot_id": load.snapshot_id,
        "finished_at": datetime.now(UTC),
        "recorded_by": "loader",
    }


def row_for_dead_letter(
    state: Mapping[str, Any], entry: DeadLettered, *, report: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ledger row of a dead-lettered file, from the state it failed in and its DLQ entry."""
    source = state.get("source", state)
    return {
        # A rerun that reuses an earlier DLQ entry is still its own outcome, under its own run id.
        **_common({**state, "source": source, "run_id": state.get("run_id") or entry.run_id}, report),
        "outcome": "dead_lettered",
        "dataset": entry.dataset,
        "table_name": None,
        "stage": entry.stage,
        "error_type": entry.error_type,
        "error_message": entry.message,
        "dead_letter_uri": entry.dlq_uri,
        "error_uri": entry.error_uri,
        "finished_at": datetime.now(UTC),
        "recorded_by": "dead_letter",
    }


def row_for_rollback(done: Rollback, *, dataset: str, table_uuid: str | None = None) -> dict[str, Any]:
    """The ledger row of a rolled-back load: the load's run id (the link to its ``loaded`` row), the
    rollback's snapshot, rows restored (``rows_inserted``) and keys left to later loads (``rows_skipped``)."""
    uri = done.source_file
    bucket, _, key = uri.removeprefix("s3://").partition("/") if uri.startswith("s3://") else ("", "", uri)
    return {
        "run_id": done.run_id,
        "outcome": ROLLED_BACK,
        "dataset": dataset,
        "table_name": done.table,
        "table_uuid": table_uuid,
        "source_bucket": bucket,
        "source_key": key,
        "source_uri": uri,
        "source_version": done.marker.get(MARKER_VERSION),
        "source_sha256": done.source_sha256 or None,
        "rows_inserted": done.rows_restored,
        "rows_skipped": done.keys_kept_later,
        "snapshot_id": done.snapshot_id,
        "finished_at": datetime.now(UTC),
        "recorded_by": "rollback",
    }


def record(catalog: Catalog | Callable[[], Catalog], namespace: str, row: Mapping[str, Any]) -> bool:
    """Write one ledger row (idempotent per run id and outcome). Never raises: the outcome it records
    has already happened, and ``icegate maintain`` repairs a loaded file's lost row from its marker.
    """
    return record_rows(catalog, namespace, [row])


def record_rows(
    catalog: Catalog | Callable[[], Catalog],
    namespace: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    just_committed: Collection[str] = (),
) -> bool:
    """Write ledger rows in one append (a group commit's files), as :func:`record` writes one.

    ``just_committed``: run ids whose rows cannot be recorded yet — the caller's own file, whose load this
    very call committed — so they are appended without a look for them. Not the other files of a group
    commit: their own loaders record them too once they find their marker, maybe before this append lands.
    """
    try:
        resolved = catalog() if callable(catalog) else catalog
        append_rows(resolved, namespace, [dict(row) for row in rows], unrecorded=just_committed)
    except Exception:
        log.exception(
            "could not record %s in the ledger %s.%s; `icegate maintain` repairs a loaded file's row",
            ", ".join(f"{row.get('outcome')} of run {row.get('run_id')}" for row in rows),
            namespace,
            LEDGER_TABLE,
        )
        return False
    return True


def find_prior_load(
    catalog: Catalog,
    namespace: str,
    table_name: str,
    *,
    sha256: str | None = None,
    version: tuple[str, str, str] | None = None,
) -> PriorLoad | None:
    """The ``loaded`` ledger row of this content — by hash, or by S3 (bucket, key, version id), which
    names immutable bytes — in this table, if any (the newest when several)."""
    table = ledger_table(catalog, namespace, create=False)
    if table is None:
        return None
    if version is not None:
        bucket, key, version_id = version
        row_filter = where(
            source_bucket=bucket, source_key=key, source_version=version_id, table_name=table_name, outcome="loaded"
        )
    else:
        assert sha256 is not None
        row_filter = loaded_filter(sha256, table_name)
    found = scan(table, row_filter).to_pylist()
    # A rolled-back load no longer counts: the file loads again.
    undone = rolled_back_runs(table, {r["run_id"] for r in found}, table_name)
    found = [r for r in found if r["run_id"] not in undone]
    if not found:
        return None
    row = max(found, key=lambda r: r["finished_at"] or datetime.min.replace(tzinfo=UTC))
    dimensions = {
        name: float(row[SCORE_COLUMN_PREFIX + name])
        for name in QUALITY_DIMENSIONS
        if row[SCORE_COLUMN_PREFIX + name] is not None
    }
    return PriorLoad(
        row["run_id"],
        row["snapshot_id"],
        row["source_sha256"] or "",
        row["quality_score"],
        row["quality_threshold"],
        dimensions,
    )


def history(
    catalog: Catalog,
    namespace: str,
    *,
    dataset: str | None = None,
    since: datetime | None = None,
    outcome: str | None = None,
) -> pl.DataFrame:
    """Ledger rows, oldest first, optionally for one dataset, since a time, of one outcome."""
    table = ledger_table(catalog, namespace, create=False)
    if table is None:
        arrow = arrow_schema().empty_table()
    else:
        arrow = scan(table, where(since=since, dataset=dataset or None, outcome=outcome or None))
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    # One row per run, outcome and table: a loader records its just-committed loads without looking
    # for their rows first, and `icegate maintain` may have rebuilt one in between from its marker;
    # the loader's own row says more.
    rebuilt = pl.col("recorded_by").eq(RECORDED_BY_MAINTAIN).fill_null(False)
    once = frame.sort(rebuilt, maintain_order=True).unique(
        ["run_id", "outcome", "table_name"], keep="first", maintain_order=True
    )
    return once.sort("finished_at", nulls_last=False, maintain_order=True)


#: What :func:`source_outcomes` reads of each row: the source's identity, the outcome and its time.
_SOURCE_COLUMNS = (
    "run_id",
    "outcome",
    "table_name",
    "source_bucket",
    "source_key",
    "source_version",
    "source_etag",
    "source_size",
    "source_sha256",
    "finished_at",
)


def source_outcomes(catalog: Catalog, namespace: str, bucket: str) -> pl.DataFrame:
    """Every outcome recorded for sources of ``bucket`` ("" for local files), and every rollback, in one
    scan of the ledger's identity columns: what a backfill needs to tell which files are done.

    Rollbacks come whatever their bucket: one rebuilt from a snapshot marker names no source file.
    """
    table = ledger_table(catalog, namespace, create=False)
    if table is None:
        arrow = arrow_schema().empty_table().select(list(_SOURCE_COLUMNS))
    else:
        row_filter = Or(
            EqualTo("source_bucket", bucket),  # type: ignore[arg-type, call-arg]
            EqualTo("outcome", ROLLED_BACK),  # type: ignore[arg-type, call-arg]
        )
        arrow = scan(table, row_filter, _SOURCE_COLUMNS)
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    return frame


def content_loads(catalog: Catalog, namespace: str, sha256s: Iterable[str]) -> pl.DataFrame:
    """The ``loaded`` and ``already_loaded`` rows of these contents, under any source: a dead-lettered file
    retried from its DLQ copy (``icegate run lake/dlq/...``, ``icegate replay``) is recorded under that copy."""
    wanted = sorted(set(sha256s))
    table = ledger_table(catalog, namespace, create=False) if wanted else None
    if table is None:
        arrow = arrow_schema().empty_table().select(list(_SOURCE_COLUMNS))
    else:
        row_filter = And(
            In("source_sha256", wanted),  # type: ignore[arg-type, call-arg]
            In("outcome", ("loaded", "already_loaded")),  # type: ignore[arg-type, call-arg]
        )
        arrow = scan(table, row_filter, _SOURCE_COLUMNS)
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    return frame


def live_loads(rows: pl.DataFrame) -> pl.DataFrame:
    """The ``loaded`` rows of ``rows`` whose load was not rolled back since (a ``rolled_back`` row of the same
    run and table): what the tables hold now, for baselines and reports."""
    undone = rows.filter(pl.col("outcome") == ROLLED_BACK).select("run_id", "table_name")
    return rows.filter(pl.col("outcome") == "loaded").join(undone, on=["run_id", "table_name"], how="anti")


def recent_loaded(catalog: Catalog, namespace: str, dataset: str, count: int) -> pl.DataFrame:
    """The ``count`` most recent live loads of a dataset, newest first (the trend gate's baseline)."""
    rows = live_loads(history(catalog, namespace, dataset=dataset))
    return rows.sort("finished_at", descending=True, nulls_last=True).head(count)


def repair_from_markers(catalog: Catalog, namespace: str, data_table: Table, dataset: str) -> int:
    """Record the loads of ``data_table`` the ledger lacks, from its snapshot markers, and move the
    markers older versions kept as table properties into the ledger. Returns rows written."""
    repaired = record_markers(catalog, namespace, data_table, dataset=dataset)
    return repaired + migrate_legacy_markers(catalog, namespace, data_table, dataset=dataset)
