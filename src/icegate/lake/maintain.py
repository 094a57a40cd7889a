"""Table maintenance: compact small files, expire old snapshots, delete files nothing references.

What pyiceberg 0.12 offers and what we add:

- ``ExpireSnapshots`` removes snapshots from the metadata but deletes no file; we delete the
  manifests, manifest lists and data files that only expired snapshots referenced, after the
  expiry committed. The ledger holds a ``loaded`` row for every expired snapshot's source marker,
  recorded before the expiry commits (see ``markers``), so a rerun of an old file is still recognised.
- There is no ``rewrite_data_files``: :func:`compact` reads a partition's small files and writes
  them back as key-sorted files of the table's target size, in one ``overwrite`` snapshot.
- There is no ``rewrite_manifests``: loads merge manifests as they append (``merge_append``, from 16 on),
  but an upsert's ``overwrite`` never merges, and planning reads every manifest. Compaction's snapshot
  packs the table's manifests into as few as the manifest target size allows; with no file to compact,
  :func:`rewrite_manifests` does the same in a ``replace`` snapshot of its own.
- There is no ``remove_orphan_files``: :func:`remove_orphan_files` lists the table's folders
  and deletes data and manifest files that no snapshot references and that are older than a
  safety margin (a loader may be writing files it has not committed yet).
- Old ``metadata.json`` files go as commits happen (``write.metadata.delete-after-commit``).

Beside the tables, :func:`remove_stale_processing` clears a local lake's ``processing/`` of what killed runs
left (in S3 a lifecycle rule expires the prefix).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyarrow import fs as pafs
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table.update.snapshot import ExpireSnapshots

from icegate import constants as c
from icegate.errors import CommitConflict
from icegate.lake.catalog import MERGE_KEY_PROPERTY, file_target
from icegate.lake.files import (
    FILE_INDEX,
    ROW_POSITION,
    manifests_to_merge,
    overwrite,
    read_files,
    transaction,
    write_data_files,
)
from icegate.lake.files import rewrite_manifests as manifest_rewrite
from icegate.lake.ledger import record_markers

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table
    from pyiceberg.table.snapshots import Snapshot

#: Snapshot-summary key naming the maintenance operation that made a snapshot.
MAINTENANCE = "icegate.maintenance"
_ATTEMPTS = 5
#: The youngest unreferenced file orphan removal may delete without ``force``: longer than any
#: load takes between writing its files and committing them (a younger file may be one of those).
MIN_ORPHAN_AGE = timedelta(days=1)


class UnsafeOrphanAge(ValueError):
    """An orphan age so short that removal could delete a running load's uncommitted files."""


class MaintenanceIncomplete(RuntimeError):
    """Some tables of a namespace could not be maintained; the others were, and their reports are kept."""

    def __init__(self, reports: list[MaintenanceReport], failures: dict[str, str]) -> None:
        self.reports = reports
        self.failures = failures
        named = "; ".join(f"{table}: {reason}" for table, reason in sorted(failures.items()))
        super().__init__(f"maintenance failed for {len(failures)} of {len(failures) + len(reports)} tables: {named}")


@dataclass(frozen=True)
class MaintenanceRequest:
    """What a scheduled run does to every table of a namespace (the maintainer Lambda's event)."""

    expire_after_days: int = 7
    retain_last: int = 10
    #: ``None`` keeps orphans; below :data:`MIN_ORPHAN_AGE` is refused (no ``force`` on a schedule: loads run).
    orphan_after_days: int | None = 3
    compact_files: bool = True
    #: Compaction's target; ``None`` is each table's own ``write.target-file-size-bytes`` (what loads write).
    target_file_size_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.expire_after_days < 0 or self.retain_last < 1:
            raise ValueError(
                f"expire_after_days must be >= 0 and retain_last >= 1, got {self.expire_after_days}, {self.retain_last}"
            )

    @classmethod
    def from_dict(cls, event: dict[str, Any]) -> MaintenanceRequest:
        known = {f: event[f] for f in cls.__dataclass_fields__ if f in event}
        unknown = set(event) - set(cls.__dataclass_fields__)
        if unknown:
            known_names = sorted(cls.__dataclass_fields__)
            raise ValueError(f"unknown maintenance settings {sorted(unknown)}; known: {known_names}")
        return cls(**known)


@dataclass(frozen=True)
class MaintenanceReport:
    table: str
    #: Input files merged by compaction, and the files that replaced them.
    files_compacted: int = 0
    files_written: int = 0
    snapshots_expired: int = 0
    #: Files deleted because only expired snapshots referenced them.
    files_deleted: int = 0
    orphans_deleted: int = 0
    #: The current snapshot's manifests before and after (compaction packs them; so does a manifest rewrite).
    manifests_before: int = 0
    manifests_after: int = 0


def maintain(
    catalog: Catalog,
    identifier: tuple[str, str],
    *,
    expire_older_than: timedelta = timedelta(days=7),
    retain_last: int = 10,
    compact_files: bool = True,
    orphans_older_than: timedelta | None = timedelta(days=3),
    force: bool = False,
    target_file_size_bytes: int | None = None,
) -> MaintenanceReport:
    """Compact (data files and manifests), then expire, then remove orphans — each step its own commit.

    Orphan removal younger than :data:`MIN_ORPHAN_AGE` is refused (:class:`UnsafeOrphanAge`) unless
    ``force``: it would delete files that a running load has written and is about to commit.
    A step that keeps losing its commit to loads raises :class:`CommitConflict`, naming the step.
    """
    if orphans_older_than is not None and orphans_older_than < MIN_ORPHAN_AGE and not force:
        raise UnsafeOrphanAge(
            f"removing orphans younger than {_days(MIN_ORPHAN_AGE)} could delete the files of a load that has not "
            "committed yet, and the table would then reference missing files; use a longer age, or force it only "
            "when no load is running"
        )
    manifests_before = _manifest_count(catalog.load_table(identifier))
    compacted, written = (
        compact(catalog, identifier, target_file_size_bytes=target_file_size_bytes) if compact_files else (0, 0)
    )
    if compact_files and not compacted:
        rewrite_manifests(catalog, identifier)
    manifests_after = _manifest_count(catalog.load_table(identifier))
    expired, deleted = expire_snapshots(
        catalog, identifier, older_than=datetime.now(UTC) - expire_older_than, retain_last=retain_last
    )
    orphans = (
        remove_orphan_files(catalog.load_table(identifier), older_than=datetime.now(UTC) - orphans_older_than)
        if orphans_older_than is not None
        else 0
    )
    return MaintenanceReport(
        ".".join(identifier), compacted, written, expired, deleted, orphans, manifests_before, manifests_after
    )


def _manifest_count(table: Table) -> int:
    snapshot = table.current_snapshot()
    return len(snapshot.manifests(table.io)) if snapshot is not None else 0


def maintain_namespace(catalog: Catalog, namespace: str, request: MaintenanceRequest) -> list[MaintenanceReport]:
    """:func:`maintain` every table of ``namespace``, one after the other; one table's failure spares the rest.

    Raises :class:`MaintenanceIncomplete` after the last table when any failed, so a scheduled run that
    left a table unmaintained fails visibly (alarm, retry) instead of reporting success.
    """
    orphan_age = None if request.orphan_after_days is None else timedelta(days=request.orphan_after_days)
    if orphan_age is not None and orphan_age < MIN_ORPHAN_AGE:
        # Checked before any table is touched: a schedule runs while loads run, so there is no ``force``.
        raise UnsafeOrphanAge(f"orphan_after_days must be at least {_days(MIN_ORPHAN_AGE)} on a schedule")
    reports: list[MaintenanceReport] = []
    failures: dict[str, str] = {}
    for identifier in sorted(catalog.list_tables(namespace)):
        table = (identifier[0], identifier[-1])
        try:
            reports.append(
                maintain(
                    catalog,
                    table,
                    expire_older_than=timedelta(days=request.expire_after_days),
                    retain_last=request.retain_last,
                    compact_files=request.compact_files,
                    orphans_older_than=orphan_age,
                    target_file_size_bytes=request.target_file_size_bytes,
                )
            )
        except Exception as exc:  # any cause (a lost race, AccessDenied, a bad file) must spare the other tables
            failures[".".join(table)] = f"{type(exc).__name__}: {exc}"
    if failures:
        raise MaintenanceIncomplete(reports, failures)
    return reports


def compact(
    catalog: Catalog, identifier: tuple[str, str], *, min_files: int = 2, target_file_size_bytes: int | None = None
) -> tuple[int, int]:
    """Merge each partition's small files into key-sorted files of the target size.

    The target is the table's (``write.target-file-size-bytes``, as loads write) unless given. A file is
    small below half the target size (or half its row cap). Files with delete files attached are left
    alone. The same snapshot packs the table's manifests (see :func:`rewrite_manifests`). Returns
    (files replaced, files written).
    """
    for _ in range(_ATTEMPTS):
        table = catalog.load_table(identifier)
        if table.current_snapshot() is None:
            return 0, 0
        target = file_target(table, target_file_size_bytes)
        groups: dict[tuple[int, Any], list[FileScanTask]] = defaultdict(list)
        for task in table.scan().plan_files():
            below_target = task.file.file_size_in_bytes < target.size_bytes // 2 and (
                target.max_rows is None or task.file.record_count < target.max_rows // 2
            )
            if not task.delete_files and below_target:
                groups[(task.file.spec_id, task.file.partition)].append(task)
        small = [task for tasks in groups.values() if len(tasks) >= min_files for task in tasks]
        if not small:
            return 0, 0
        rows = read_files(table.metadata, table.io, small).drop(FILE_INDEX, ROW_POSITION)
        cluster_by = table.properties.get(MERGE_KEY_PROPERTY, rows.columns[0]).split(",")[0]
        added = write_data_files(table.metadata, table.io, rows, cluster_by, target)
        try:
            _commit_swap(table, [task.file for task in small], added)
        except CommitFailedException:
            _delete(table, (f.file_path for f in added))
            continue
        return len(small), len(added)
    raise CommitConflict(
        f"compaction lost {_ATTEMPTS} commits in a row to concurrent writers; nothing was compacted, "
        "run maintenance again when loads are quieter",
        location=".".join(identifier),
    )


def _commit_swap(table: Table, removed: list[DataFile], added: list[DataFile]) -> None:
    pending = transaction(table)
    with overwrite(pending, {MAINTENANCE: "compact"}, pack_manifests=True) as swap:
        for data_file in removed:
            swap.delete_data_file(data_file)
        for data_file in added:
            swap.append_data_file(data_file)
    pending.commit_transaction()


def rewrite_manifests(catalog: Catalog, identifier: tuple[str, str]) -> tuple[int, int]:
    """Merge the current snapshot's small data manifests into few, in one snapshot that changes no row.

    Planning a scan reads every manifest of the snapshot, and upserts (``overwrite``) add one or two per
    load and never merge them. Manifests are packed per partition spec into
    ``commit.manifest.target-size-bytes`` (8 MB). Returns (manifests merged, manifests written).
    """
    for _ in range(_ATTEMPTS):
        table = catalog.load_table(identifier)
        snapshot = table.current_snapshot()
        if snapshot is None:
            return 0, 0
        before = snapshot.manifests(table.io)
        merged = manifests_to_merge(table.metadata, before)
        if not merged:
            return 0, 0
        pending = transaction(table)
        with manifest_rewrite(pending, {MAINTENANCE: "rewrite-manifests"}):
            pass  # nothing added or removed: the producer writes the packed manifests on commit
        try:
            updated = pending.commit_transaction()
        except CommitFailedException:
            continue  # pyiceberg deleted the manifests the lost attempt wrote
        after = updated.current_snapshot()
        assert after is not None
        return merged, merged - (len(before) - len(after.manifests(updated.io)))
    raise CommitConflict(
        f"manifest rewrite lost {_ATTEMPTS} commits in a row to concurrent writers; nothing was rewritten, "
        "run maintenance again when loads are quieter",
        location=".".join(identifier),
    )


def expire_snapshots(
    catalog: Catalog, identifier: tuple[str, str], *, older_than: datetime, retain_last: int = 1
) -> tuple[int, int]:
    """Expire snapshots older than ``older_than`` beyond the ``retain_last`` newest; delete what only they used.

    Returns (snapshots expired, files deleted).
    """
    for _ in range(_ATTEMPTS):
        table = catalog.load_table(identifier)
        protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
        newest_first = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
        cutoff = older_than.timestamp() * 1000
        expired = {
            s.snapshot_id
            for s in newest_first[max(retain_last, 0) :]
            if s.timestamp_ms < cutoff and s.snapshot_id not in protected
        }
        if not expired:
            return 0, 0
        gone = [s for s in table.metadata.snapshots if s.snapshot_id in expired]
        # Their markers live on in the ledger, recorded first: if that fails, nothing expires.
        record_markers(catalog, identifier[0], table, snapshot_ids=expired)
        pending = transaction(table)
        ExpireSnapshots(pending).by_ids(sorted(expired)).commit()
        try:
            updated = pending.commit_transaction()
        except CommitFailedException:
            continue
        unreferenced = _referenced(updated, gone) - _referenced(updated, updated.metadata.snapshots)
        _delete(updated, unreferenced)
        return len(expired), len(unreferenced)
    raise CommitConflict(
        f"snapshot expiry lost {_ATTEMPTS} commits in a row to concurrent writers; nothing was expired, "
        "run maintenance again when loads are quieter",
        location=".".join(identifier),
    )


def _days(age: timedelta) -> str:
    return f"{age.days} day" + ("s" if age.days != 1 else "")


def _referenced(table: Table, snapshots: Iterable[Snapshot]) -> set[str]:
    """Manifest lists, manifests and live data/delete files of these snapshots."""
    paths: set[str] = set()
    seen_manifests: set[str] = set()
    for snapshot in snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            paths.add(manifest.manifest_path)
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            paths.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True))
    return paths


def remove_orphan_files(table: Table, *, older_than: datetime) -> int:
    """Delete data and manifest files under the table that no snapshot references, if older than ``older_than``.

    The margin matters: a loader writes its files before it commits them.
    """
    referenced = _referenced(table, table.metadata.snapshots)
    location = table.location()
    scheme, _, rest = location.rpartition("://")
    filesystem = _filesystem(table, scheme or "file", rest.split("/", 1)[0] if scheme not in ("", "file") else None)
    root = rest
    prefix = f"{scheme}://" if scheme else ""
    cutoff = older_than.timestamp()
    orphans: list[str] = []
    for folder in ("data", "metadata"):
        selector = pafs.FileSelector(f"{root.rstrip('/')}/{folder}", recursive=True, allow_not_found=True)
        for info in filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File or not info.path.endswith((".parquet", ".avro")):
                continue
            if info.mtime is None or info.mtime.timestamp() >= cutoff:
                continue
            if (uri := prefix + info.path) not in referenced:
                orphans.append(uri)
    _delete(table, orphans)
    return len(orphans)


def remove_stale_processing(processing: Path, *, older_than: datetime) -> int:
    """Delete what runs no longer running left under a local lake's ``processing/``; returns how many entries.

    A run removes its ``<run_id>/`` folder when its file ends, so one that stays is a killed run's: it goes once
    nothing in it has changed since ``older_than`` (a running run writes into it as its stages go). A group
    commit's waiting entry (``_waiting/<dataset>/``) lives only while its loader takes its turn: one older than
    that is a killed loader's. The caller keeps the margin that orphan removal keeps.
    """
    cutoff = older_than.timestamp()
    removed = 0
    for entry in sorted(processing.iterdir()) if processing.is_dir() else []:
        if entry.name == c.WAITING_FOLDER:
            for waiting in [f for f in entry.rglob("*") if f.is_file() and _last_change(f) < cutoff]:
                waiting.unlink(missing_ok=True)
                removed += 1
        elif entry.is_dir() and _last_change(entry) < cutoff:
            with contextlib.suppress(FileNotFoundError):  # its own run, or another maintain, removed it meanwhile
                shutil.rmtree(entry)
            removed += 1
    return removed


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` and all under it; one vanishing meanwhile counts as now (in use)."""
    try:
        newest = path.stat().st_mtime
        for folder, folders, files in os.walk(path):
            for name in (*folders, *files):
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime)
    except FileNotFoundError:
        return float("inf")
    return newest


def _filesystem(table: Table, scheme: str, netloc: str | None) -> pafs.FileSystem:
    """The table FileIO's own filesystem (endpoint, credentials), else one from the URI."""
    fs_by_scheme = getattr(table.io, "fs_by_scheme", None)
    if callable(fs_by_scheme):
        filesystem = fs_by_scheme(scheme, netloc)
        if isinstance(filesystem, pafs.FileSystem):
            return filesystem
    return pafs.FileSystem.from_uri(table.location())[0]


def _delete(table: Table, paths: Iterable[str]) -> None:
    """Delete files; one already gone is fine, one that cannot be deleted (access denied) fails the run.

    Swallowing a denied delete would report files as deleted that are still there.
    """
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            table.io.delete(path)
