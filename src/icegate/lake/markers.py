"""Source markers: which file each commit loaded, so that a rerun is a no-op (invariant I3).

A load's snapshot carries the source identity in its summary: as summary entries when it loaded one
file, as a JSON list of those entries under ``icegate.loads`` when a group commit loaded several.
Expiring snapshots would forget them, so ``icegate maintain`` first makes sure the ledger
(``icegate_loads``) holds a ``loaded`` row for every load whose snapshot it expires, and
:func:`find_loaded` asks the ledger about loads no longer in the history — only once some snapshot
has expired: while the history is complete, its markers are all.
Older versions kept those markers as table properties (``icegate.loaded.<sha256>`` → snapshot id,
one per file, forever); they are still read, and ``icegate maintain`` moves them into the ledger once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from icegate.errors import StorageUnavailable

if TYPE_CHECKING:
    from pyiceberg.table import Table

#: Snapshot-summary keys that record which source a commit loaded (the idempotency marker).
MARKER_SHA256 = "icegate.source-sha256"
MARKER_FILE = "icegate.source-file"
MARKER_VERSION = "icegate.source-version"
MARKER_RUN = "icegate.run-id"
#: Snapshot-summary keys with what the load did, so that the run that committed it can say so again.
MARKER_INSERTED = "icegate.inserted"
MARKER_UPDATED = "icegate.updated"
MARKER_SKIPPED = "icegate.skipped"
#: Snapshot-summary keys of a rollback (``icegate rollback``): the load it undid. A rolled-back
#: snapshot's marker no longer counts as "loaded", so the file loads again.
MARKER_ROLLBACK_OF_SNAPSHOT = "icegate.rollback-of-snapshot"
MARKER_ROLLBACK_OF_RUN = "icegate.rollback-of-run"
MARKER_ROLLBACK_OF_SHA256 = "icegate.rollback-of-sha256"
#: Snapshot-summary key of a snapshot that loaded several files (a group commit): their markers, a JSON list.
MARKER_LOADS = "icegate.loads"
#: Table-property prefix of the markers older versions kept for expired snapshots (moved to the ledger).
LEDGER_PREFIX = "icegate.loaded."


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


def load_markers(loads: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The summary entries of a snapshot that loads these files, given each one's marker entries."""
    if len(loads) == 1:
        return dict(loads[0])
    return {MARKER_LOADS: json.dumps([dict(marker) for marker in loads], separators=(",", ":"))}


def loaded_snapshots(table: Table) -> Iterator[tuple[int, dict[str, str]]]:
    """Each load still in the table's history: its snapshot and its source marker (a group commit's
    snapshot once per file it loaded)."""
    for snapshot in table.metadata.snapshots:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if MARKER_SHA256 in props:
            yield snapshot.snapshot_id, props
        elif MARKER_LOADS in props:
            for marker in json.loads(props[MARKER_LOADS]):
                yield snapshot.snapshot_id, marker


def rolled_back_loads(table: Table) -> set[tuple[int, str]]:
    """Loads (snapshot, run id; still in the history) that a later rollback snapshot undid."""
    return {
        (int(props[MARKER_ROLLBACK_OF_SNAPSHOT]), props.get(MARKER_ROLLBACK_OF_RUN, ""))
        for snapshot in table.metadata.snapshots
        if snapshot.summary and MARKER_ROLLBACK_OF_SNAPSHOT in (props := snapshot.summary.additional_properties)
    }


def is_undone(snapshot_id: int, marker: Mapping[str, str], undone: set[tuple[int, str]]) -> bool:
    """Whether a rollback undid this load (a group commit's snapshot holds other loads that may stand)."""
    return (snapshot_id, marker.get(MARKER_RUN, "")) in undone


def history_is_complete(table: Table) -> bool:
    """Whether every snapshot the table ever had is still in its metadata.

    Each commit of a snapshot takes the next sequence number (format 2) and expiry never gives one
    back, so the history is whole exactly when it holds as many snapshots as numbers were given.
    (Expiry also clears the parent id of the snapshot after an expired one: parents cannot tell.)
    """
    metadata = table.metadata
    return len(metadata.snapshots) == getattr(metadata, "last_sequence_number", -1)  # format 1 has none


def surely_never_loaded(table: Table, *, sha256: str | None = None, source: tuple[str, str] | None = None) -> bool:
    """Whether the table's own history proves that no load took this content (or this source version:
    file URI and version id), without reading the ledger; ``False`` when it cannot tell — once a snapshot
    expired, or while older versions' markers are table properties — and then the ledger must say.

    Every file's "already loaded?" asks this first: a ledger scan costs more the more the ledger holds,
    the markers of a whole history cost a pass over the snapshot summaries in memory.
    """
    if not history_is_complete(table) or any(name.startswith(LEDGER_PREFIX) for name in table.properties):
        return False
    for _, props in loaded_snapshots(table):
        if props[MARKER_SHA256] == sha256 or (props.get(MARKER_FILE), props.get(MARKER_VERSION)) == source:
            return False
    return True


def find_loaded(table: Table, sha256: str) -> int | None:
    """The snapshot that already loaded a source with this content hash, if any (expired ones included)."""
    found = find_marker(table, sha256)
    return found[0] if found is not None else None


def find_marker(table: Table, sha256: str) -> tuple[int, dict[str, str]] | None:
    """The snapshot that loaded this content and its marker (empty once the snapshot expired).

    A load that was rolled back does not count: the rollback snapshot names it, or (once that
    expired) the ledger's ``rolled_back`` row does.
    """
    if (recorded := table.properties.get(LEDGER_PREFIX + sha256)) is not None:
        return int(recorded), {}
    undone = rolled_back_loads(table)
    in_history = (
        (sid, props)
        for sid, props in loaded_snapshots(table)
        if props[MARKER_SHA256] == sha256 and not is_undone(sid, props, undone)
    )
    if (found := next(in_history, None)) is not None:
        return found
    if history_is_complete(table):
        return None  # no snapshot ever expired: the markers above are every load there was
    from icegate.lake.ledger import loaded_snapshot  # the ledger module builds on this one

    try:
        snapshot_id = loaded_snapshot(table, sha256)
    except Exception as exc:
        # Unknown is not "not loaded": loading now could load the file twice. Retry later.
        raise StorageUnavailable(
            f"could not read the ledger to tell whether this content was loaded before ({exc}); retry"
        ) from exc
    return (snapshot_id, {}) if snapshot_id is not None else None
