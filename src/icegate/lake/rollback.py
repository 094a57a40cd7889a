"""Roll back one load: remove the rows it inserted, restore the rows it replaced, as a new snapshot.

A load's snapshot carries its source marker (run id, content hash). Its rows carry the run id in
the ``run_id`` lineage column, wherever compaction has moved them since; the rows an upsert
replaced are in the data files that snapshot deleted (still on storage while any retained snapshot
uses them). A rollback is one copy-on-write ``overwrite``: the current files that hold the load's
rows are rewritten without them, plus the replaced rows of the keys the load still holds. It runs
the same commit protocol as a load (the head is asserted; on a conflict: reload, re-plan, retry)
and marks its snapshot with the load it undid, so the marker of that load stops counting as
"loaded" (:func:`icegate.lake.markers.find_marker`).

A later load that replaced some of the load's rows (an upsert of the same keys) makes the rollback
refuse: undoing it would silently lose the later rows or resurrect values older than them. With
``force`` those keys keep the later rows; only the keys the load still holds are rolled back.

So does a later load that skipped rows because their keys were stored: some may have been this load's
keys, and once this load's rows go, nothing holds those keys, while the later file counts as loaded (a
run of it again would be "already loaded"). Which keys a load skipped is not recorded, so any skip after
the load refuses; roll the later loads back first (newest first) and run their files again afterwards, or
``force`` this one alone.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import EqualTo
from pyiceberg.manifest import ManifestContent, ManifestEntryStatus
from pyiceberg.table import FileScanTask
from sqlalchemy.exc import DBAPIError

from icegate.errors import IcegateError
from icegate.lake.catalog import MERGE_KEY_PROPERTY, file_target
from icegate.lake.commit import commit_snapshot, is_contention
from icegate.lake.files import FILE_INDEX, ROW_POSITION, read_files, write_data_files
from icegate.lake.markers import (
    MARKER_FILE,
    MARKER_ROLLBACK_OF_RUN,
    MARKER_ROLLBACK_OF_SHA256,
    MARKER_ROLLBACK_OF_SNAPSHOT,
    MARKER_RUN,
    MARKER_SHA256,
    MARKER_SKIPPED,
    is_undone,
    loaded_snapshots,
    rolled_back_loads,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

RUN_COLUMN = "run_id"
#: Snapshot-summary keys of a rollback: rows it removed and restored.
MARKER_ROWS_REMOVED = "icegate.rows-removed"
MARKER_ROWS_RESTORED = "icegate.rows-restored"


class RollbackError(IcegateError):
    """A rollback that cannot or must not be done (unknown load, expired snapshot, later changes)."""


class LaterChanges(RollbackError):
    """Later loads replaced rows of the load; rolling back would undo or contradict them."""

    def __init__(self, message: str, *, later_runs: list[str], keys: int) -> None:
        super().__init__(message)
        self.later_runs = later_runs
        self.keys = keys


@dataclass(frozen=True)
class Rollback:
    """What a rollback did."""

    table: str
    run_id: str
    source_file: str
    source_sha256: str
    #: The load's snapshot, and the new snapshot that undid it.
    rolled_back_snapshot_id: int
    snapshot_id: int
    rows_removed: int
    rows_restored: int
    #: Keys whose later rows were kept (``force``), and the runs that wrote them.
    keys_kept_later: int = 0
    later_runs: list[str] = field(default_factory=list)
    #: The marker of the load, for the ledger row.
    marker: dict[str, str] = field(default_factory=dict, repr=False)


def find_load(table: Table, *, run_id: str | None = None, file: str | None = None) -> tuple[int, dict[str, str]]:
    """The snapshot (still in the history) and marker of the load of ``run_id``, or the newest load of ``file``.

    ``file`` is the source as the marker records it (``s3://bucket/key`` or a local path), or its
    trailing part (a key, a file name) when that names one source.
    """
    undone = rolled_back_loads(table)
    loads = list(loaded_snapshots(table))
    if run_id is not None:
        matches = [(sid, props) for sid, props in loads if props.get(MARKER_RUN) == run_id]
        what = f"run {run_id!r}"
    else:
        assert file is not None
        matches = [(sid, props) for sid, props in loads if _names(props.get(MARKER_FILE, ""), file)]
        sources = sorted({props.get(MARKER_FILE, "") for _, props in matches})
        if len(sources) > 1:
            raise RollbackError(f"{file!r} names several loaded sources: {', '.join(sources)}; give the full path")
        what = f"file {file!r}"
    name = ".".join(table.name()[-2:])
    if not matches:
        if _ledger_knows(table, run_id, file):
            raise RollbackError(
                f"the snapshot of the load of {what} into {name} expired (icegate maintain): a load can be "
                "rolled back only while its snapshot is retained"
            )
        raise RollbackError(f"no load of {what} in {name}")
    live = [(sid, props) for sid, props in matches if not is_undone(sid, props, undone)]
    if not live:
        raise RollbackError(f"the load of {what} into {name} was already rolled back")
    return live[-1]  # history order: the newest load of the file


def _ledger_knows(table: Table, run_id: str | None, file: str | None) -> bool:
    """Whether the ledger has a ``loaded`` row of this run or file in this table (best effort)."""
    from icegate.lake.ledger import ledger_table, scan, table_name_of, where

    catalog = getattr(table, "catalog", None)
    try:
        ledger = ledger_table(catalog, ".".join(table.name()[:-1]), create=False) if catalog else None
        if ledger is None:
            return False
        found = scan(ledger, where(table_name=table_name_of(table), outcome="loaded", run_id=run_id))
    except Exception:
        return False  # only the wording of a refusal depends on it
    return any(run_id is not None or _names(uri or "", file or "") for uri in found.column("source_uri").to_pylist())


def _names(recorded: str, given: str) -> bool:
    return recorded == given or recorded.endswith("/" + given.lstrip("/"))


def rollback(
    catalog: Catalog,
    identifier: tuple[str, str],
    *,
    run_id: str | None = None,
    file: str | None = None,
    force: bool = False,
    attempts: int = 8,
    backoff_seconds: float = 0.05,
) -> Rollback:
    """Undo one load of ``identifier`` (by run id or source file) in a new snapshot; see the module doc."""
    if (run_id is None) == (file is None):
        raise RollbackError("name the load to roll back: a run id or a file, one of them")
    for attempt in range(attempts):
        if attempt:
            time.sleep(random.uniform(0, min(2.0, backoff_seconds * 2**attempt)))
        table = catalog.load_table(identifier)
        snapshot_id, marker = find_load(table, run_id=run_id, file=file)
        try:
            return _rollback_once(table, snapshot_id, marker, force=force)
        except (CommitFailedException, ValidationException):
            continue  # another writer committed first: re-plan against its snapshot
        except DBAPIError as exc:
            if not is_contention(exc):
                raise
            # Unknown whether it landed: the next attempt's find_load says ("already rolled back").
            continue
    raise RollbackError(f"{attempts} rollback commits to {'.'.join(identifier)} lost to concurrent writers; retry")


def _rollback_once(table: Table, load_snapshot: int, marker: dict[str, str], *, force: bool) -> Rollback:
    run = marker[MARKER_RUN]
    key = _merge_key(table)
    head = table.current_snapshot()
    assert head is not None  # a load snapshot exists
    # Files of the current snapshot holding the load's rows: pruned by the run_id column's bounds.
    holding = list(table.scan(row_filter=EqualTo(RUN_COLUMN, run)).plan_files())  # type: ignore[arg-type, call-arg]
    current = read_files(table.metadata, table.io, holding)
    ours = current.filter(pl.col(RUN_COLUMN) == run)
    added, deleted = _changed_files(table, load_snapshot)
    at_load = read_files(table.metadata, table.io, [FileScanTask(f) for f in added], [*key, RUN_COLUMN]).filter(
        pl.col(RUN_COLUMN) == run
    )
    # Keys the load wrote that no longer hold its row: a later load replaced them.
    lost = at_load.select(key).join(ours.select(key), on=key, how="anti", nulls_equal=True).unique()
    later_runs: list[str] = []
    if lost.height:
        later_runs = sorted(
            set(_rows_with_keys(table, lost, key).get_column(RUN_COLUMN).drop_nulls().to_list()) - {run}
        )
        if not force:
            raise LaterChanges(
                f"later loads changed {lost.height} of the keys run {run!r} wrote "
                f"(runs: {', '.join(later_runs) or 'unknown, or the rows were deleted'}); rolling back would "
                "undo or contradict them. --force rolls back only the keys the load still holds",
                later_runs=later_runs,
                keys=lost.height,
            )
    skipping = _later_loads_that_skipped(table, load_snapshot, run)
    if skipping and not force:
        raise LaterChanges(
            f"later loads skipped rows whose keys were already stored (runs: {', '.join(skipping)}); some may be "
            f"keys run {run!r} inserted, and rolling it back would leave those keys without any row while the "
            "later files count as loaded. Roll the later loads back first (newest first) and run their files "
            "again after, or --force to roll back this load alone",
            later_runs=skipping,
            keys=0,
        )
    later_runs = sorted({*later_runs, *skipping})
    try:
        replaced = read_files(table.metadata, table.io, [FileScanTask(f) for f in deleted])
    except FileNotFoundError as exc:
        raise RollbackError(
            f"the rows run {run!r} replaced are gone: their files were deleted when older snapshots expired "
            f"(icegate maintain), so they cannot be restored ({exc})"
        ) from None
    # The replaced rows of keys the load still holds (other rows of those files were kept by the load).
    restored = replaced.join(ours.select(key).unique(), on=key, how="semi", nulls_equal=True)
    kept = current.filter(pl.col(RUN_COLUMN).is_null() | (pl.col(RUN_COLUMN) != run))
    rows = pl.concat(
        [kept.drop(FILE_INDEX, ROW_POSITION), restored.drop(FILE_INDEX, ROW_POSITION)], how="vertical_relaxed"
    )
    new_files = write_data_files(table.metadata, table.io, rows, key[0], file_target(table))
    properties = {
        MARKER_ROLLBACK_OF_SNAPSHOT: str(load_snapshot),
        MARKER_ROLLBACK_OF_RUN: run,
        MARKER_ROLLBACK_OF_SHA256: marker.get(MARKER_SHA256, ""),
        MARKER_ROWS_REMOVED: str(ours.height),
        MARKER_ROWS_RESTORED: str(restored.height),
    }
    try:
        removed = [task.file for task in holding]
        snapshot_id = commit_snapshot(table, new_files, removed, properties, merge_manifests=False)
    except BaseException:
        for data_file in new_files:
            table.io.delete(data_file.file_path)
        raise
    return Rollback(
        table=".".join(table.name()[-2:]),
        run_id=run,
        source_file=marker.get(MARKER_FILE, ""),
        source_sha256=marker.get(MARKER_SHA256, ""),
        rolled_back_snapshot_id=load_snapshot,
        snapshot_id=snapshot_id,
        rows_removed=ours.height,
        rows_restored=restored.height,
        keys_kept_later=lost.height,
        later_runs=later_runs,
        marker=marker,
    )


def _later_loads_that_skipped(table: Table, load_snapshot: int, run: str) -> list[str]:
    """Runs of the live loads after this one (in history order, group members after it included) that skipped
    rows whose keys were stored."""
    undone = rolled_back_loads(table)
    later: list[str] = []
    after = False
    for snapshot_id, marker in loaded_snapshots(table):
        if (snapshot_id, marker.get(MARKER_RUN)) == (load_snapshot, run):
            after = True
        elif after and not is_undone(snapshot_id, marker, undone) and int(marker.get(MARKER_SKIPPED) or 0):
            later.append(marker.get(MARKER_RUN, ""))
    return sorted(set(later))


def _merge_key(table: Table) -> list[str]:
    recorded = table.properties.get(MERGE_KEY_PROPERTY)
    if not recorded:
        raise RollbackError(f"{'.'.join(table.name()[-2:])} has no {MERGE_KEY_PROPERTY} property: not an icegate table")
    return recorded.split(",")


def _changed_files(table: Table, snapshot_id: int) -> tuple[list[DataFile], list[DataFile]]:
    """The data files a snapshot added and deleted (its own manifest entries)."""
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    assert snapshot is not None
    added: list[DataFile] = []
    deleted: list[DataFile] = []
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA or manifest.added_snapshot_id != snapshot_id:
            continue  # entries a snapshot wrote live in the manifests it wrote
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            if entry.snapshot_id != snapshot_id:
                continue
            if entry.status == ManifestEntryStatus.ADDED:
                added.append(entry.data_file)
            elif entry.status == ManifestEntryStatus.DELETED:
                deleted.append(entry.data_file)
    return added, deleted


def _rows_with_keys(table: Table, keys: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Current rows (key and run id) with any of these keys."""
    tasks = list(table.scan().plan_files())
    stored = read_files(table.metadata, table.io, tasks, [*key, RUN_COLUMN])
    return stored.join(keys, on=key, how="semi", nulls_equal=True)
