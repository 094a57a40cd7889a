"""The load: plan the merge against the current snapshot, write files, commit them as one snapshot.

pyiceberg 0.12 retries a lost commit by re-applying it to the new snapshot without re-checking the
merge, so two loaders could both insert the same new key. Tables are created with
``commit.retry.num-retries=0`` and :func:`load_batch` owns the loop (:func:`commit_loop`, which
``stream.load_stream`` runs too): on a conflict it reloads the table, re-checks the source marker,
recomputes the merge against the new snapshot and commits again — a bounded number of times with
jittered backoff, then :class:`CommitConflict`, which the state machine retries. Each attempt first
fits the contract onto the table's current schema (``evolve``), and re-plans too when maintenance
removed the files its plan was reading.

A snapshot carries the source marker of each file it loaded: an ``append`` of new files, or for an
``upsert`` that replaces stored rows an ``overwrite`` that swaps the rewritten files for new ones
(copy-on-write) in the same commit as the new rows.

Group commit (:func:`load_group`): a loader commits the files waiting for the same table together
with its own (``icegate.waiting`` says who waits), in one catalog commit asserting the head the group
was planned against. Files that replace nothing (``insert_new``, ``append``) are planned from one
reading of the stored keys, each skipping the keys the files before it insert; their rows are written
together (one run of data files per partition for the group, not per file) and committed as one
snapshot whose summary lists every file's marker. Upserts, which may rewrite what the file before
them wrote, are planned one after another against the table as the files before leave it, and get a
snapshot each. A burst of N files thus costs a few contended commits instead of N, and every file
stays loaded exactly once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import polars as pl
from pyiceberg.exceptions import CommitFailedException, ValidationException
from sqlalchemy.exc import DBAPIError

from icegate.datasets import POLARS_TYPES
from icegate.errors import CommitConflict, TransientError
from icegate.lake.catalog import ensure_table, file_target
from icegate.lake.evolve import evolve_table
from icegate.lake.files import (
    key_probe,
    may_hold_keys,
    overwrite,
    read_files,
    staged_table,
    transaction,
    write_data_files,
)
from icegate.lake.markers import (
    MARKER_INSERTED,
    MARKER_RUN,
    MARKER_SKIPPED,
    MARKER_UPDATED,
    SourceIdentity,
    find_marker,
    load_markers,
)
from icegate.lake.merge import ROW_INDEX, dedupe_in_file, drop_replaced, plan_insert_new, plan_upsert
from icegate.payloads import LoadSummary

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table, Transaction

    from icegate.datasets import Dataset
    from icegate.lake.evolve import SchemaFit

logger = logging.getLogger(__name__)

#: Longest pause between two commit attempts.
MAX_BACKOFF_SECONDS = 2.0
#: Files of a group written at once when their rows cannot be written together (Parquet encoding and file I/O
#: release the GIL).
WRITERS = 4

_Result = TypeVar("_Result")


def with_lineage(
    batch: pl.DataFrame, dataset: Dataset, identity: SourceIdentity, ingested_at: datetime
) -> pl.DataFrame:
    """The dataset's columns followed by the lineage columns, typed as the table stores them."""
    return batch.select(
        *(pl.col(c.name).cast(POLARS_TYPES[c.type]) for c in dataset.columns),
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
        pl.lit(identity.file, pl.String).alias("source_file"),
        pl.lit(identity.version, pl.String).alias("source_version"),
        pl.lit(identity.run_id, pl.String).alias("run_id"),
    )


@dataclass(frozen=True)
class LoadPlan:
    """What one commit attempt writes and replaces, decided against one snapshot."""

    #: Rows to write: incoming rows that go in, plus the surviving rows of rewritten files.
    rows: pl.DataFrame
    #: Files whose rows are rewritten (copy-on-write).
    replaced_files: list[DataFile]
    inserted: int
    updated: int
    skipped: int
    #: Which incoming rows go in (their ``ROW_INDEX``): with the same replaced files, the same files.
    incoming: pl.Series = field(repr=False)
    #: The table schema the plan was made against: files written for another carry other field ids.
    schema_id: int

    def counts(self) -> dict[str, str]:
        """The counts as snapshot-summary entries of the marker."""
        return {
            MARKER_INSERTED: str(self.inserted),
            MARKER_UPDATED: str(self.updated),
            MARKER_SKIPPED: str(self.skipped),
        }

    def same_output(self, other: LoadPlan) -> bool:
        return (
            self.schema_id == other.schema_id
            and {f.file_path for f in self.replaced_files} == {f.file_path for f in other.replaced_files}
            and self.incoming.equals(other.incoming)
        )


@dataclass
class Written:
    plan: LoadPlan
    files: list[DataFile]
    #: A commit attempt with these files ended with an unknown outcome: they may be in the table.
    maybe_committed: bool = False


@dataclass(frozen=True)
class Incoming:
    """One file's validated rows on their way into a table: deduplicated, with lineage, numbered."""

    identity: SourceIdentity
    #: The rows with the lineage columns and ``ROW_INDEX``.
    rows: pl.DataFrame = field(repr=False)
    #: Rows dropped because a later row of the same file had the same key.
    duplicates: int


def prepare(dataset: Dataset, batch: pl.DataFrame, identity: SourceIdentity) -> Incoming:
    """What a load commits of ``batch``: deduplicated on the business key, with its lineage."""
    rows, duplicates = (
        (batch, 0) if dataset.strategy == "append" else dedupe_in_file(batch, dataset.key, dataset.ordering_column)
    )
    incoming = with_lineage(rows, dataset, identity, datetime.now(UTC)).with_row_index(ROW_INDEX)
    return Incoming(identity, incoming, duplicates)


@dataclass(frozen=True)
class GroupLoad:
    """What one group commit did: the summary of each file it committed, and the files it left out."""

    #: Run id -> the load of each file the commit holds (the caller's own file first).
    loads: dict[str, LoadSummary]
    #: Run id -> why a waiting file was left out of the group (its own loader meets the error alone).
    left_out: dict[str, str] = field(default_factory=dict)
    #: Whether this call committed the loads; ``False`` when its own file was found loaded before.
    committed: bool = True


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
    own = prepare(dataset, batch, identity)
    group = load_group(catalog, dataset, own, namespace=namespace, attempts=attempts, backoff_seconds=backoff_seconds)
    return group.loads[identity.run_id]


def load_group(
    catalog: Catalog,
    dataset: Dataset,
    own: Incoming,
    *,
    namespace: str,
    waiting: Callable[[], Sequence[Incoming]] = tuple,
    attempts: int = 8,
    backoff_seconds: float = 0.05,
) -> GroupLoad:
    """Commit ``own`` — with the files ``waiting`` for the same table — in one catalog commit, exactly once each.

    Each file is planned against the table as the files before it leave it and keeps its own marker
    (one snapshot for a group that replaces nothing, a snapshot per file for upserts); the group is
    one catalog commit, so a burst of N files costs one contended commit instead of N. If the commit
    loses a race, every file is re-checked and re-planned; a file another writer committed meanwhile
    drops out (its marker says so). When ``own`` is found already
    committed — by an earlier run, or by another loader's group — nothing is written.
    """
    table_name = f"{namespace}.{dataset.table}"
    written: dict[str, Written] = {}
    left_out: dict[str, str] = {}

    def loaded_before(snapshot_id: int, marker: dict[str, str]) -> GroupLoad:
        summary = summary_of_loaded(table_name, dataset, own.identity, own.duplicates, snapshot_id, marker)
        return GroupLoad({own.identity.run_id: summary}, committed=False)

    def attempt(table: Table, fit: SchemaFit) -> GroupLoad | None:
        ordering = fit.names[dataset.ordering_column] if dataset.ordering_column else None
        members = [own, *_still_waiting(table, own, waiting(), left_out)]
        pending = transaction(table)
        staged = table
        live = LiveFiles(table)
        plans: dict[str, LoadPlan] = {}
        staged_files: list[DataFile] = []
        snapshots: dict[str, int] = {}
        if dataset.strategy == "upsert":
            for member in members:
                run_id = member.identity.run_id
                try:
                    plan = plan_upsert_load(staged, dataset, member.rows.rename(fit.renames), ordering, live)
                    if must_write(table, written, run_id, plan):
                        written[run_id] = Written(plan, write_files(staged, dataset, plan))
                except (FileNotFoundError, OSError, TransientError):
                    raise
                except Exception as exc:
                    if member is own:
                        raise
                    # A waiting file this loader cannot plan is its own loader's to fail, with its own error.
                    _leave_out(left_out, run_id, exc)
                    discard_written(table, written.pop(run_id, None))
                    continue
                properties = {**member.identity.snapshot_properties(), **plan.counts()}
                files, replaced = written[run_id].files, plan.replaced_files
                # Manifests are merged once per commit, by its last snapshot.
                last = member is members[-1]
                snapshots[run_id] = stage_snapshot(pending, files, replaced, properties, merge_manifests=last)
                staged = staged_table(table, pending)
                live.stage(files, replaced)
                staged_files += files
                plans[run_id] = plan
        else:
            # Nothing is replaced: plan every file from one reading, write their rows together, and
            # commit them as one snapshot whose summary holds every file's marker.
            plans = _plan_inserts(table, dataset, members, fit.renames, live, left_out)
            if (group_files := _write_together(table, dataset, plans, written, own, left_out)) is None:
                return None  # a waiting file could not be written, and the files after it counted its keys
            members = [m for m in members if m.identity.run_id in plans]
            marker = load_markers(
                [{**m.identity.snapshot_properties(), **plans[m.identity.run_id].counts()} for m in members]
            )
            snapshot_id = stage_snapshot(pending, group_files, [], marker, merge_manifests=True)
            snapshots = dict.fromkeys(plans, snapshot_id)
            staged = staged_table(table, pending)
            live.stage(group_files, [])
            staged_files = group_files
        commit_staged(pending)
        live.committed(head_snapshot(staged) or 0)
        # Files an earlier attempt wrote for a group this commit did not take: never committed.
        committed = {data_file.file_path for data_file in staged_files}
        discard_written(table, *(w for w in written.values() if not any(f.file_path in committed for f in w.files)))
        loads = {
            run_id: LoadSummary(
                table_name,
                dataset.strategy,
                plan.inserted,
                plan.updated,
                plan.skipped,
                next(m.duplicates for m in members if m.identity.run_id == run_id),
                snapshots[run_id],
            )
            for run_id, plan in plans.items()
        }
        return GroupLoad(loads, {k: v for k, v in left_out.items() if k not in loads})

    return commit_loop(
        catalog,
        dataset,
        own.identity,
        written,
        attempt,
        loaded_before,
        namespace=namespace,
        attempts=attempts,
        backoff_seconds=backoff_seconds,
    )


def commit_loop(
    catalog: Catalog,
    dataset: Dataset,
    identity: SourceIdentity,
    written: Mapping[str, Written],
    attempt: Callable[[Table, SchemaFit], _Result | None],
    loaded_before: Callable[[int, dict[str, str]], _Result],
    *,
    namespace: str,
    attempts: int,
    backoff_seconds: float,
) -> _Result:
    """The commit protocol every load runs: up to ``attempts`` tries, each against the table's current snapshot.

    Each attempt reloads the table, re-checks the source marker of ``identity`` (found: the files
    ``written`` are deleted and ``loaded_before`` says what to report), fits the contract onto the table
    (``evolve``), then runs ``attempt``, which plans, writes (recording its files in ``written``),
    stages and commits, and returns what to report — or ``None`` to try again. A commit that lost a
    race, a plan whose files maintenance removed, a busy catalog database: the next attempt re-plans
    (files that may have landed are kept). Out of attempts: the files ``written`` are deleted and
    :class:`CommitConflict` is raised, which the state machine retries.
    """
    table_name = f"{namespace}.{dataset.table}"
    table = ensure_table(catalog, dataset, namespace, file=identity.file)
    for number in range(attempts):
        if number:
            _sleep_before_retry(number, backoff_seconds)
        planned_against: int | None = None
        try:
            if number:
                table = catalog.load_table((namespace, dataset.table))
            if (found := find_marker(table, identity.sha256)) is not None:
                discard_written(table, *written.values())
                return loaded_before(*found)
            # Another tool may have added, renamed or dropped columns, or the contract gained some.
            table, fit = evolve_table(table, dataset, file=identity.file)
            planned_against = head_snapshot(table)
            if (result := attempt(table, fit)) is None:
                continue
        except (CommitFailedException, ValidationException):
            # pyiceberg raises these only when the commit did not land: another writer won the
            # race, or its own checks found the plan's snapshot no longer matching. Re-plan.
            continue
        except FileNotFoundError:
            # Maintenance replaced (compaction) and deleted (expiry) files this plan was reading:
            # a newer snapshot no longer needs them, so re-plan against it. A file missing from
            # the snapshot that is still current is a damaged table, not a race.
            if head_snapshot(catalog.load_table((namespace, dataset.table))) == planned_against:
                raise
            continue
        except DBAPIError as exc:
            if not is_contention(exc):
                raise
            # The catalog's database was busy; whether a commit landed is unknown, and the source
            # marker check of the next attempt tells.
            for maybe in written.values():
                maybe.maybe_committed = True
            continue
        return result
    discard_written(table, *written.values())
    raise CommitConflict(
        f"{attempts} commits to {table_name} lost to concurrent writers; the load will be retried",
        file=identity.file,
    )


def _plan_inserts(
    table: Table,
    dataset: Dataset,
    members: Sequence[Incoming],
    renames: Mapping[str, str],
    live: LiveFiles,
    left_out: dict[str, str],
) -> dict[str, LoadPlan]:
    """Plans of files that replace no stored row (``insert_new``, ``append``), each against the table as the
    files before it leave it: the stored keys of all of them are read at once, then each file skips the
    keys stored or inserted by a file before it. The same plans as planning each against the staged
    snapshot of the one before, without reading the table again per file. A waiting file that cannot be
    planned is left out (its keys count for no one); the loader's own file raises."""
    schema_id = table.metadata.current_schema_id
    batches: dict[str, pl.DataFrame] = {}
    for member in members:
        try:
            batch = member.rows.rename(dict(renames))
            if dataset.strategy == "insert_new":
                batch.select(dataset.key)  # a file lacking a key column fails here, alone
            batches[member.identity.run_id] = batch
        except Exception as exc:
            if member is members[0]:
                raise
            _leave_out(left_out, member.identity.run_id, exc)
    if dataset.strategy == "append":
        return {run_id: insert_plan(rows, 0, schema_id) for run_id, rows in batches.items()}
    key = list(dataset.key)
    everyone = pl.concat([batch.select(key) for batch in batches.values()], how="vertical_relaxed")
    stored = everyone.clear()
    if table.current_snapshot() is not None:
        candidates = candidate_files(table, dataset, everyone, live)
        stored = read_files(table.metadata, table.io, candidates, key).select(key)
    plans = {}
    for run_id, batch in batches.items():
        new_rows, skipped = plan_insert_new(batch, stored, dataset.key)
        plans[run_id] = insert_plan(new_rows, skipped, schema_id)
        stored = pl.concat([stored, new_rows.select(key)], how="vertical_relaxed")
    return plans


def _write_together(
    table: Table,
    dataset: Dataset,
    plans: Mapping[str, LoadPlan],
    written: dict[str, Written],
    own: Incoming,
    left_out: dict[str, str],
) -> list[DataFile] | None:
    """The data files holding the rows of ``plans``: every file's rows written together, so that a group
    of small files makes one run of files per partition, not one per file and partition.

    Files an earlier attempt wrote for the same rows are kept. If the rows cannot be written together,
    each file's are written alone to find which cannot: ``None`` when a waiting file could not be written
    (it is left out, and the plans after it, which counted its keys as inserted, must be made again); the
    loader's own file raises.
    """
    together = _together(plans)
    key = _TOGETHER + "/".join(plans)
    if not must_write(table, written, key, together):
        return written[key].files
    try:
        files = write_files(table, dataset, together)
    except (FileNotFoundError, OSError, TransientError):
        raise
    except Exception:
        logger.info("the rows of %d files could not be written together; writing each file's alone", len(plans))
        return _write_each(table, dataset, plans, written, own, left_out)
    written[key] = Written(together, files)
    return files


#: Key in a group's written files of the files that hold several loads' rows (a run id never starts with it).
_TOGETHER = "+"


def _together(plans: Mapping[str, LoadPlan]) -> LoadPlan:
    """One plan inserting the rows of every plan (each file's incoming rows told apart by its place)."""
    parts = list(plans.values())
    return LoadPlan(
        pl.concat([plan.rows for plan in parts], how="vertical_relaxed"),
        [],
        sum(plan.inserted for plan in parts),
        0,
        sum(plan.skipped for plan in parts),
        pl.concat([plan.incoming.cast(pl.Int64) + (place << 32) for place, plan in enumerate(parts)]),
        parts[0].schema_id,
    )


def _write_each(
    table: Table,
    dataset: Dataset,
    plans: Mapping[str, LoadPlan],
    written: dict[str, Written],
    own: Incoming,
    left_out: dict[str, str],
) -> list[DataFile] | None:
    """Write each plan's files on its own, side by side (see :func:`_write_together`)."""
    todo = [(run_id, plan) for run_id, plan in plans.items() if must_write(table, written, run_id, plan)]
    failed: dict[str, Exception] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(WRITERS, len(todo)))) as pool:
        futures = {run_id: pool.submit(write_files, table, dataset, plan) for run_id, plan in todo}
        for (run_id, plan), future in zip(todo, futures.values(), strict=True):
            try:
                written[run_id] = Written(plan, future.result())
            except Exception as exc:
                failed[run_id] = exc
    for run_id, error in failed.items():
        if run_id == own.identity.run_id or isinstance(error, (FileNotFoundError, OSError, TransientError)):
            raise error
    for run_id, error in failed.items():
        _leave_out(left_out, run_id, error)
    if failed:
        return None
    return [data_file for run_id in plans for data_file in written[run_id].files]


def must_write(table: Table, written: dict[str, Written], run_id: str, plan: LoadPlan) -> bool:
    """Whether ``plan``'s files must be written: an earlier attempt's files are kept when they hold the
    same rows, and deleted (and forgotten) when they do not."""
    previous = written.get(run_id)
    if previous is not None and previous.plan.same_output(plan):
        return False
    discard_written(table, written.pop(run_id, None))
    return True


def _leave_out(left_out: dict[str, str], run_id: str, exc: Exception) -> None:
    left_out[run_id] = f"{type(exc).__name__}: {exc}"


def _still_waiting(
    table: Table, own: Incoming, waiting: Iterable[Incoming], left_out: Mapping[str, str]
) -> list[Incoming]:
    """The waiting files this commit can take: not committed yet, not left out, one per content."""
    taken = {own.identity.sha256}
    members = []
    for member in waiting:
        sha256 = member.identity.sha256
        if sha256 in taken or member.identity.run_id in left_out or find_marker(table, sha256) is not None:
            continue
        taken.add(sha256)
        members.append(member)
    return members


def summary_of_loaded(
    table_name: str,
    dataset: Dataset,
    identity: SourceIdentity,
    duplicates: int,
    snapshot_id: int,
    marker: dict[str, str],
) -> LoadSummary:
    """What to report for content the table already holds.

    If this very run committed it (a commit that landed although the catalog call then failed, or
    a retried invocation), the load is reported with the counts its marker recorded; otherwise
    the content came in with an earlier run and this one is "already loaded".
    """
    if marker.get(MARKER_RUN) == identity.run_id and MARKER_INSERTED in marker:
        counts = (int(marker[MARKER_INSERTED]), int(marker[MARKER_UPDATED]), int(marker[MARKER_SKIPPED]))
        return LoadSummary(table_name, dataset.strategy, *counts, duplicates, snapshot_id)
    return LoadSummary(table_name, dataset.strategy, 0, 0, 0, duplicates, snapshot_id, already_loaded=True)


def insert_plan(rows: pl.DataFrame, skipped: int, schema_id: int) -> LoadPlan:
    """The plan that inserts ``rows`` (numbered by ``ROW_INDEX``) as they are and replaces nothing."""
    return LoadPlan(rows.drop(ROW_INDEX), [], rows.height, 0, skipped, rows.get_column(ROW_INDEX), schema_id)


def plan_upsert_load(
    table: Table, dataset: Dataset, incoming: pl.DataFrame, ordering: str | None, live: LiveFiles
) -> LoadPlan:
    """The upsert of ``incoming`` against the table's snapshot whose data files ``live`` holds.

    ``incoming`` holds rows with lineage and ``ROW_INDEX``, its columns named as the table names
    them; ``ordering`` is the table's name of the contract's ordering column.
    """
    schema_id = table.metadata.current_schema_id
    if table.current_snapshot() is None:
        return insert_plan(incoming, 0, schema_id)
    key = dataset.key
    candidates = candidate_files(table, dataset, incoming, live)
    stored = read_files(table.metadata, table.io, candidates, [*key, *([ordering] if ordering else [])])
    upsert = plan_upsert(incoming, stored, key, ordering)
    rewritten = [candidates[i] for i in upsert.files_to_rewrite]
    stored_rows = read_files(table.metadata, table.io, rewritten, indexes=upsert.files_to_rewrite)
    kept = drop_replaced(stored_rows, upsert.replaced_rows)
    new_rows = upsert.rows.drop(ROW_INDEX)
    # Stored rows may carry table columns the contract lacks (added by another tool): the writer
    # fills them with nulls for the new rows.
    same_columns = new_rows.columns == kept.columns
    rows = pl.concat([new_rows, kept], how="vertical_relaxed" if same_columns else "diagonal_relaxed")
    return LoadPlan(
        rows,
        [task.file for task in rewritten],
        upsert.inserted,
        upsert.updated,
        upsert.skipped,
        upsert.rows.get_column(ROW_INDEX).sort(),
        schema_id,
    )


class LiveFiles:
    """The data files of the snapshot a plan is made against.

    A group plans each file against the table as the files before it leave it. Reading the manifests
    once for the group and applying each staged plan's files here gives the same files as planning
    against each staged snapshot — which would read every manifest again for every file of the group.
    And a snapshot's files never change: the files of the snapshot this process last committed to a
    table are kept, so the next load here that finds it still the head reads no manifest at all.
    """

    _last_commit: ClassVar[dict[str, tuple[int, tuple[FileScanTask, ...], dict[tuple[str, int], Any]]]] = {}
    _last_commit_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, table: Table) -> None:
        self._table_uuid = str(table.metadata.table_uuid)
        head = table.current_snapshot()
        with LiveFiles._last_commit_lock:
            known = LiveFiles._last_commit.get(self._table_uuid)
            if known is not None and (head is None or known[0] != head.snapshot_id):
                del LiveFiles._last_commit[self._table_uuid]  # stale: not kept beside the files read now
                known = None
        #: (file path, field id) -> the file's decoded lower and upper bound of that column.
        self.bounds: dict[tuple[str, int], Any] = {}
        if head is None:
            self.tasks: list[FileScanTask] = []
        elif known is not None:
            self.tasks, self.bounds = list(known[1]), dict(known[2])
        else:
            self.tasks = list(table.scan().plan_files())

    def committed(self, snapshot_id: int) -> None:
        """The staged files are now those of ``snapshot_id``, committed: keep them for the next load."""
        live = {task.file.file_path for task in self.tasks}
        bounds = {key: value for key, value in self.bounds.items() if key[0] in live}
        with LiveFiles._last_commit_lock:
            LiveFiles._last_commit[self._table_uuid] = (snapshot_id, tuple(self.tasks), bounds)

    def stage(self, added: Sequence[DataFile], removed: Sequence[DataFile]) -> None:
        """The files once a snapshot adding ``added`` and removing ``removed`` is staged."""
        from pyiceberg.table import FileScanTask

        gone = {data_file.file_path for data_file in removed}
        kept = [task for task in self.tasks if task.file.file_path not in gone] if gone else self.tasks
        self.tasks = [*kept, *(FileScanTask(data_file) for data_file in added)]


def candidate_files(table: Table, dataset: Dataset, incoming: pl.DataFrame, live: LiveFiles) -> list[FileScanTask]:
    """The files (of ``live``, the snapshot's) whose statistics allow them to hold a batch key."""
    schema = table.schema()
    probes = [
        key_probe(incoming, column, schema.find_field(column).field_id, schema.find_type(column))  # type: ignore[arg-type]
        for column in dataset.key
    ]
    keep = may_hold_keys(live.tasks, probes, live.bounds)
    return [task for task, kept in zip(live.tasks, keep, strict=True) if kept]


def write_files(table: Table, dataset: Dataset, plan: LoadPlan) -> list[DataFile]:
    return write_data_files(table.metadata, table.io, plan.rows, dataset.key[0], file_target(table))


def commit_staged(pending: Transaction) -> None:
    """Commit what a load staged: one catalog commit, whatever the number of snapshots in it."""
    pending.commit_transaction()


def commit_snapshot(
    table: Table,
    added: list[DataFile],
    removed: list[DataFile],
    properties: dict[str, str],
    *,
    merge_manifests: bool,
) -> int:
    """One snapshot adding ``added`` and removing ``removed`` (an overwrite when it removes anything, else an
    append), asserting the head it was planned against: a concurrent commit fails it instead of applying."""
    pending = transaction(table)
    snapshot_id = stage_snapshot(pending, added, removed, properties, merge_manifests=merge_manifests)
    pending.commit_transaction()
    return snapshot_id


def stage_snapshot(
    pending: Transaction,
    added: list[DataFile],
    removed: list[DataFile],
    properties: dict[str, str],
    *,
    merge_manifests: bool,
) -> int:
    """Stage one snapshot in ``pending`` (committed with the transaction); the first one staged asserts the
    head the transaction started from, so the whole transaction fails if another writer moved it."""
    appending = pending.update_snapshot(snapshot_properties=properties)  # a builder: nothing happens until used
    producer = (
        overwrite(pending, properties)
        if removed
        else (appending.merge_append() if merge_manifests else appending.fast_append())
    )
    with producer:
        for data_file in removed:
            producer.delete_data_file(data_file)
        for data_file in added:
            producer.append_data_file(data_file)
    return producer.snapshot_id


def head_snapshot(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None


def is_contention(exc: DBAPIError) -> bool:
    """A catalog database error that another writer caused and that a retry can get past."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in ("40001", "40P01", "55P03"):  # PostgreSQL: serialization failure, deadlock, lock not available
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database table is locked" in message or "busy" in message


def _sleep_before_retry(attempt: int, backoff_seconds: float) -> None:
    """Exponential backoff with full jitter, so that writers that collided do not collide again."""
    time.sleep(random.uniform(0, min(MAX_BACKOFF_SECONDS, backoff_seconds * 2**attempt)))


def discard_written(table: Table, *lost: Written | None) -> None:
    """Delete files lost attempts wrote (never files that may have been committed).

    A file that cannot be deleted does not fail the load (its rows are safely committed or safely
    not), but it is said: a denied delete means the role lacks ``s3:DeleteObject`` on the
    warehouse, and ``maintain`` would have to collect the orphan.
    """
    for written in lost:
        if written is None or written.maybe_committed:
            continue
        for data_file in written.files:
            try:
                table.io.delete(data_file.file_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("could not delete %s, written by a lost commit attempt: %s", data_file.file_path, exc)
