"""The quality report: one self-contained static HTML file drawn from the ledger.

Everything the page needs is inside it (data as JSON, CSS, and the JavaScript that draws SVG charts),
so it opens offline, from a laptop or from S3, with no CDN. The aggregations are done here, in
Python, and embedded; the page only draws them.

In the cloud the stages that end a file's story publish it (:func:`publish_quietly`), at most once per
``report_min_interval_seconds``: in a burst of 1 000 files that is one full ledger read a minute rather than
1 000. What a skip leaves out, the next file brings in, or the scheduled :func:`refresh`, which rebuilds
the page only when the ledger moved since it was drawn (the page names the ledger snapshot it shows).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

import polars as pl

from icegate.constants import REPORTS_PREFIX
from icegate.dimensions import QUALITY_DIMENSIONS
from icegate.errors import SourceNotFound
from icegate.lake.ledger import ROLLED_BACK, SCORE_COLUMN_PREFIX
from icegate.ledger import live_loads
from icegate.storage import Storage, is_s3, join, split_s3

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from icegate.settings import Settings

log = logging.getLogger(__name__)

#: Where the cloud keeps the latest report (under the lake root), rewritten after each load.
REPORT_NAME = "icegate-report.html"
#: The per-file table shows this many newest outcomes (the charts use every row).
MAX_FILES = 2000
TOP_CHECKS = 12
_PLACEHOLDER = "/*__ICEGATE_DATA__*/null"
#: In the page's head: the ledger snapshot the page was drawn from ("" for no ledger yet), so that a refresh
#: can tell a current page from a stale one without reading the ledger.
_SNAPSHOT_META = '<meta name="icegate-ledger-snapshot" content="{}">'
_SNAPSHOT_META_PATTERN = re.compile(r'<meta name="icegate-ledger-snapshot" content="(\d*)">')


def report_data(history: pl.DataFrame, *, title: str, now: datetime | None = None) -> dict[str, Any]:
    """What the page draws, from ledger rows (:func:`icegate.ledger.history`)."""
    rows = history.sort("finished_at", nulls_last=False).to_dicts()
    # A rolled-back load no longer counts: its rows left the table.
    loaded = live_loads(history).sort("finished_at", nulls_last=False).to_dicts()
    datasets: dict[str, list[dict[str, Any]]] = {}
    for row in loaded:
        if row["quality_score"] is None:
            continue  # a row repaired from a snapshot marker carries no score
        datasets.setdefault(row["dataset"] or "unknown", []).append(
            {
                "time": _iso(row["finished_at"]),
                "file": _name(row["source_key"]),
                "score": row["quality_score"],
                "rows": row["rows_read"],
                "dimensions": {d: row[SCORE_COLUMN_PREFIX + d] for d in QUALITY_DIMENSIONS},
            }
        )
    per_day: Counter[str] = Counter()
    for row in loaded:
        if row["finished_at"] is not None:
            per_day[row["finished_at"].date().isoformat()] += row["rows_inserted"] or 0
    # A rerun that fails the same way on the same content (a replay included) is noted in the first DLQ entry,
    # not filed again: count entries, as `icegate dlq` lists them, not the ledger rows that share one.
    entries: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["outcome"] == "dead_lettered":
            entries.setdefault(row["error_uri"] or row["run_id"], row)
    first_runs = {row["run_id"] for row in entries.values()}
    reasons = Counter(r["error_type"] or "unknown" for r in entries.values())
    checks: Counter[str] = Counter()
    for row in rows:
        if row["outcome"] == "dead_lettered" and row["run_id"] not in first_runs:
            continue  # the same rows failing the same checks as the entry's first run
        for name, count in (row["failed_checks"] or {}).items():
            checks[f"schema: {name}"] += count
        for name, count in (row["quality_checks"] or {}).items():
            dimension, _, check = name.partition("/")
            if dimension != "validity":  # the same rows as the schema checks above
                checks[f"{dimension}: {check}"] += count
    return {
        "title": title,
        "generated_at": _iso(now or datetime.now(UTC)),
        "dimensions": list(QUALITY_DIMENSIONS),
        "datasets": datasets,
        "rows_per_day": [{"day": day, "rows": per_day[day]} for day in sorted(per_day)],
        "dead_letter_reasons": [{"label": k, "value": v} for k, v in reasons.most_common()],
        "top_checks": [{"label": k, "value": v} for k, v in checks.most_common(TOP_CHECKS)],
        "totals": {
            # Files by content (a rerun, a replay, a rollback of one file is one file); outcomes are ledger rows.
            "files": len({_file_identity(r) for r in rows}),
            "outcomes": len(rows),
            "loaded": len(loaded),
            "already_loaded": sum(r["outcome"] == "already_loaded" for r in rows),
            "dead_lettered": len(entries),
            "rolled_back": sum(r["outcome"] == ROLLED_BACK for r in rows),
            "rows_inserted": sum(r["rows_inserted"] or 0 for r in loaded),
        },
        "files": [_file_row(r) for r in reversed(rows[-MAX_FILES:])],
        "files_shown": min(len(rows), MAX_FILES),
    }


def _file_identity(row: dict[str, Any]) -> str:
    """One file whatever became of it: its content, else (failed before it was read) its DLQ entry or source."""
    return str(row["source_sha256"] or row["error_uri"] or row["source_uri"] or row["run_id"])


def build(catalog: Catalog, settings: Settings, *, now: datetime | None = None) -> str:
    """The report of the whole ledger, as HTML."""
    from icegate import ledger

    # Read before the rows: a commit in between makes the page look older than it is (refreshed once more),
    # never newer.
    snapshot = ledger_snapshot(catalog, settings.namespace)
    rows = ledger.history(catalog, settings.namespace)
    data = report_data(rows, title=f"icegate quality report — {settings.lake_root}", now=now)
    return render(data, ledger_snapshot=snapshot)


def ledger_snapshot(catalog: Catalog, namespace: str) -> int | None:
    """The ledger's current snapshot id (``None`` before its first row): one catalog call, no data read."""
    from icegate.lake.ledger import ledger_table

    table = ledger_table(catalog, namespace, create=False)
    return None if table is None else table.metadata.current_snapshot_id


def report_location(settings: Settings) -> str:
    """``<lake>/reports/icegate-report.html``."""
    return join(settings.lake_path(REPORTS_PREFIX), REPORT_NAME)


def publish(catalog: Catalog, settings: Settings, storage: Storage) -> str:
    """Write the report to :func:`report_location`; returns where."""
    target = report_location(settings)
    storage.write_bytes(target, build(catalog, settings).encode("utf-8"))
    return target


def publish_quietly(
    settings: Settings, storage: Storage, catalog: Catalog | None = None, *, now: datetime | None = None
) -> str | None:
    """:func:`publish`, for the stage Lambdas after each file, unless the report was written less than
    ``settings.report_min_interval_seconds`` ago (then ``None``: the next file or the scheduled
    :func:`refresh` brings this outcome in). A failure is logged, never raised: the file's outcome is
    decided and recorded, and the next publication brings the report up to date."""
    from icegate.lake import build_catalog

    try:
        target = report_location(settings)
        if _written_within(storage, target, settings.report_min_interval_seconds, now or datetime.now(UTC)):
            log.info(
                "the quality report was rebuilt less than %d s ago; the next file or the scheduled refresh "
                "brings this outcome in",
                settings.report_min_interval_seconds,
            )
            return None
        return publish(catalog or build_catalog(settings), settings, storage)
    except Exception:
        log.warning("could not publish the quality report", exc_info=True)
        return None


def refresh(catalog: Catalog, settings: Settings, storage: Storage) -> str | None:
    """Rebuild the report when the ledger moved since the page was drawn (or there is no page); ``None``
    when it is current. Costs one catalog call and one read of the page when there is nothing to do."""
    target = report_location(settings)
    try:
        found = _SNAPSHOT_META_PATTERN.search(storage.read_bytes(target).decode("utf-8", errors="replace"))
    except SourceNotFound:
        found = None
    current = ledger_snapshot(catalog, settings.namespace)
    if found is not None and found.group(1) == ("" if current is None else str(current)):
        return None
    return publish(catalog, settings, storage)


def _written_within(storage: Storage, target: str, seconds: int, now: datetime) -> bool:
    if seconds <= 0:
        return False
    try:
        written = storage.stat(target).last_modified
    except SourceNotFound:
        return False
    # A clock behind S3's (written "in the future") counts as just written.
    return now - written < timedelta(seconds=seconds)


def render(data: dict[str, Any], *, ledger_snapshot: int | None = None) -> str:
    """The HTML page with ``data`` embedded (safe inside a script element), naming the ledger snapshot."""
    template = resources.files("icegate").joinpath("templates/report.html").read_text(encoding="utf-8")
    payload = json.dumps(data, ensure_ascii=False, default=str)
    # "</script>" or "<!--" inside a string must not end the script element.
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    meta = _SNAPSHOT_META.format("" if ledger_snapshot is None else ledger_snapshot)
    return template.replace("<head>\n", f"<head>\n{meta}\n", 1).replace(_PLACEHOLDER, payload, 1)


def _file_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": _iso(row["finished_at"]),
        "dataset": row["dataset"],
        "file": _name(row["source_key"]),
        "source": row["source_uri"],
        "outcome": row["outcome"],
        "score": row["quality_score"],
        "rows_read": row["rows_read"],
        "rows_inserted": row["rows_inserted"],
        "rows_rejected": row["rows_rejected"],
        "snapshot_id": str(row["snapshot_id"]) if row["snapshot_id"] is not None else None,
        "error_type": row["error_type"],
        "message": row["error_message"],
        "error_link": link(row["error_uri"]),
        "run_id": row["run_id"],
    }


def link(uri: str | None) -> str | None:
    """A link a browser can follow to a DLQ entry: the S3 console for s3://, a file:// URL locally."""
    if not uri:
        return None
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    from pathlib import Path

    # Path.as_uri percent-encodes, which is what a browser wants (unlike pyiceberg's FileIO).
    return Path(uri).resolve().as_uri()


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment is not None else None


def _name(key: str | None) -> str:
    return (key or "").rsplit("/", 1)[-1]
