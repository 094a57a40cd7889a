"""Load a file too big for memory, in slices, as one exactly-once commit.

:func:`~icegate.lake.commit.load_batch` holds the file's whole validated table and its lineage columns
in memory: a 10 M-row posts file (~1.75 GB of CSV) does not load within 1 GB. :func:`load_stream`
takes the file as slices (e.g. Parquet row groups) that it can read again, and passes over them so
that only one slice is in memory at a time, plus a few bytes a row:

1. **Keys** (once): a 64-bit hash of each row's key. Rows whose hash no other row has cannot have a
   duplicate in the file; the others are *suspects*.
2. **Verify** (once, only when there are suspects): the real key values of the suspect rows, at most
   :data:`VERIFY_ROWS` at a time (split by hash, so that a key's rows are looked at together), are
   deduplicated exactly as :func:`~icegate.lake.merge.dedupe_in_file` does the whole file. A hash
   only says which rows need a look; the decision is made on the keys, so a hash collision never drops
   a row.
3. **Load** (each commit attempt): each slice's surviving rows get their lineage, are planned against
   the stored keys of only the files that may hold them, and are written; one snapshot carrying the
   file's marker commits every file written, under :func:`~icegate.lake.commit.commit_loop`, the
   protocol :func:`~icegate.lake.commit.load_group` runs. Nothing is committed before the last slice
   is written, and whatever fails before the commit deletes every file the load wrote.

The result is what ``load_batch`` of all the rows at once gives: the same rows in the table, the same
counts, the same marker. Only the layout differs: each slice gets its own data files (one run per
partition, each spanning the slice's whole key range), so a large file lands as more, smaller files
than ``load_batch`` would write; compaction (``icegate maintain``) merges them. And each slice reads the
stored keys of the files that may hold its keys; a slice's keys spread over the whole key range, so that
is most of the table's key columns, once per slice (``load_batch`` reads them once).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from icegate.datasets import POLARS_TYPES
from icegate.errors import CommitConflict
from icegate.lake.commit import (
    LiveFiles,
    Written,
    candidate_files,
    commit_loop,
    commit_staged,
    discard_written,
    head_snapshot,
    insert_plan,
    must_write,
    stage_snapshot,
    summary_of_loaded,
    with_lineage,
    write_files,
)
from icegate.lake.files import read_files, staged_table, transaction
from icegate.lake.markers import MARKER_INSERTED, MARKER_SKIPPED, MARKER_UPDATED, SourceIdentity, load_markers
from icegate.lake.merge import ROW_INDEX, dedupe_in_file, plan_insert_new
from icegate.payloads import LoadSummary

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table

    from icegate.datasets import Dataset
    from icegate.lake.evolve import SchemaFit

#: A file's validated rows, in file order, in slices; each call yields the same rows again.
Slices = Callable[[], Iterator[pl.DataFrame]]

#: Suspect rows (see the module docstring) whose keys are deduplicated at once; more take more passes.
VERIFY_ROWS = 1_000_000
#: Stored rows whose key columns are read at once when planning a slice (at least one data file).
STORED_ROWS_PER_READ = 500_000

_HASH = "_icegate_key_hash"
_POSITION = "_icegate_stream_row"  # not dedupe_in_file's own position column


class SlicesChanged(ValueError):
    """The slices were not the same rows on a later pass: deduplication decided on other rows."""


def key_hashes(keys: pl.DataFrame) -> pl.Series:
    """A 64-bit hash of each row's key (the frame's columns): equal keys always hash alike, in every slice.

    Keys of the same types hash alike; :func:`load_stream` casts them to the contract's types first.
    Distinct keys may hash alike too (a collision): a hash only ever says which rows to look at.
    """
    return keys.select(pl.struct(keys.columns).hash(seed=0)).to_series().alias(_HASH)


@dataclass(frozen=True)
class FileDedup:
    """Which rows of a file survive deduplication on its key, as ``dedupe_in_file`` of the whole file keeps them."""

    #: One flag per row of the file, in file order: whether the row stays.
    keep: pl.Series = dataclasses.field(repr=False)
    #: Rows of each slice, as the first pass saw them.
    heights: tuple[int, ...]
    #: The key hash of each row, to recognise the same rows on a later pass.
    hashes: pl.Series = dataclasses.field(repr=False)

    @property
    def duplicates(self) -> int:
        """Rows dropped because another row of the file has the same key."""
        return self.keep.len() - int(self.keep.sum())


class _Source:
    """The file's slices, read once per pass, with each slice's first row's position in the file.

    The first pass records how many rows each slice has; a later pass that yields other counts raises
    :class:`SlicesChanged` rather than apply decisions made for other rows.
    """

    def __init__(self, slices: Slices) -> None:
        self._slices = slices
        #: Rows of each slice, once a first pass has read them all.
        self.heights: list[int] | None = None

    def __call__(self) -> Iterator[tuple[int, int, pl.DataFrame]]:
        """(slice number, position of its first row, the slice) for every slice of the file."""
        first_pass = self.heights is None
        heights: list[int] = [] if first_pass else list(self.heights or ())
        offset = 0
        count = 0
        for index, frame in enumerate(self._slices()):
            if first_pass:
                heights.append(frame.height)
            elif index >= len(heights) or frame.height != heights[index]:
                before = f"{heights[index]} rows" if index < len(heights) else "no such slice"
                raise SlicesChanged(
                    f"slice {index + 1} of the file had {before} on an earlier pass and {frame.height} now; "
                    "load_stream needs the same rows on every call of the slices"
                )
            yield index, offset, frame
            offset += frame.height
            count = index + 1
        if first_pass:
            self.heights = heights
        elif count != len(heights):
            raise SlicesChanged(
                f"the file had {len(heights)} slices on an earlier pass and {count} now; "
                "load_stream needs the same rows on every call of the slices"
            )


def dedupe_slices(slices: Slices, key: Sequence[str], ordering: str | None = None) -> FileDedup:
    """Deduplicate a file given in slices on ``key``, as :func:`~icegate.lake.merge.dedupe_in_file` does it whole:
    per key the row with the greatest ``ordering`` value (a null is oldest), else (and on ties) the last.

    Memory: one slice, 8 bytes a row (the hashes) and at most :data:`VERIFY_ROWS` suspect rows' keys.
    """
    return _dedupe(_Source(slices), tuple(key), ordering)


def _dedupe(source: _Source, key: tuple[str, ...], ordering: str | None) -> FileDedup:
    parts = [key_hashes(frame.select(key)) for _, _, frame in source()]
    hashes = pl.concat(parts, rechunk=False) if parts else pl.Series(_HASH, [], pl.UInt64)
    del parts
    suspect = _shared(hashes)
    keep = ~suspect
    columns = [*key, *([ordering] if ordering else [])]
    passes = math.ceil(int(suspect.sum()) / VERIFY_ROWS)
    for number in range(passes):
        # All rows of a hash land in the same pass: every row a key has is looked at together.
        looked_at = suspect if passes == 1 else suspect & (hashes % passes == number)
        candidates: list[pl.DataFrame] = []
        for _, offset, frame in source():
            rows = looked_at.slice(offset, frame.height)
            if rows.any():
                position = pl.int_range(offset, offset + frame.height, dtype=pl.UInt64, eager=True).alias(_POSITION)
                candidates.append(_compact(frame.select(columns).with_columns(position).filter(rows)))
        if not candidates:
            continue  # no hash fell in this pass's share
        # In file order, so dedupe_in_file's "last" and its ties are the file's.
        unique, _ = dedupe_in_file(pl.concat(candidates, how="vertical_relaxed"), key, ordering)
        keep.scatter(unique.get_column(_POSITION), True)
    assert source.heights is not None
    return FileDedup(keep, tuple(source.heights), hashes)


def _compact(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows in buffers of their own: polars filters strings as views into the slice's buffers, so a few
    rows kept of every slice would keep every slice's strings in memory."""
    copied = pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))
    assert isinstance(copied, pl.DataFrame)
    return copied


def _shared(hashes: pl.Series) -> pl.Series:
    """Whether each row's hash is also another row's (sorting costs ~8 bytes a row, a hash table several times that)."""
    count = hashes.len()
    if count < 2:
        return pl.repeat(False, count, dtype=pl.Boolean, eager=True)
    ordered = hashes.sort()
    later = ordered.slice(1)
    repeated = later.filter(later == ordered.slice(0, count - 1))
    del ordered, later
    if repeated.is_empty():
        return pl.repeat(False, count, dtype=pl.Boolean, eager=True)
    return hashes.is_in(repeated.unique().implode())


def load_stream(
    catalog: Catalog,
    dataset: Dataset,
    slices: Slices,
    identity: SourceIdentity,
    *,
    namespace: str,
    attempts: int = 8,
    backoff_seconds: float = 0.05,
    key_slices: Slices | None = None,
) -> LoadSummary:
    """Merge a file's validated rows, given as re-readable ``slices``, into the dataset's table in one commit.

    What ``load_batch`` of all the rows at once does — rows, counts, marker, "already loaded", the commit
    loop — for the ``insert_new`` and ``append`` strategies, with one slice in memory at a time.
    ``slices()`` must yield the same rows, in the same slices, on every call (else :class:`SlicesChanged`):
    it is read once for the keys, once more per :data:`VERIFY_ROWS` rows whose key may repeat, and once
    per commit attempt. A commit that loses a race re-plans every slice and rewrites only the slices
    whose plan changed.

    ``key_slices``, if given, are the same slices with the key and ordering columns only (Parquet reads those
    alone, not the file's text): deduplication reads them instead.

    An ``upsert`` rewrites stored files that rows of any slice may replace, which cannot be decided slice
    by slice: such files load whole, with ``load_batch``.
    """
    if dataset.strategy == "upsert":
        raise ValueError(
            f"dataset {dataset.name!r} upserts: load_stream loads insert_new and append files only, an upsert "
            "loads the whole file with load_batch"
        )
    table_name = f"{namespace}.{dataset.table}"
    source = _Source(_typed(slices, dataset))
    dedup = None
    if dataset.strategy == "insert_new":
        keys = source if key_slices is None else _Source(_typed(key_slices, dataset, dedup_columns(dataset)))
        dedup = _dedupe(keys, dataset.key, dataset.ordering_column)
        source.heights = keys.heights  # the same rows: slices of other heights raise SlicesChanged
    duplicates = dedup.duplicates if dedup is not None else 0
    ingested_at = datetime.now(UTC)  # one load time for every attempt: kept files stay right
    written: dict[str, Written] = {}
    planned_on: Table | None = None
    #: What the catalog's commit raised, if it did: the commit may have landed, so its files stay.
    commit_error: BaseException | None = None

    def loaded_before(snapshot_id: int, marker: dict[str, str]) -> LoadSummary:
        return summary_of_loaded(table_name, dataset, identity, duplicates, snapshot_id, marker)

    def attempt(table: Table, fit: SchemaFit) -> LoadSummary:
        nonlocal planned_on, commit_error
        planned_on = table
        schema_id = table.metadata.current_schema_id
        live = LiveFiles(table)
        files: list[DataFile] = []
        inserted = skipped = 0
        for index, offset, frame in source():
            if dedup is not None:
                if not key_hashes(frame.select(dataset.key)).equals(dedup.hashes.slice(offset, frame.height)):
                    raise SlicesChanged(
                        f"slice {index + 1} of the file holds other keys than on the first pass; "
                        "load_stream needs the same rows on every call of the slices"
                    )
                frame = frame.filter(dedup.keep.slice(offset, frame.height))
            rows = with_lineage(frame, dataset, identity, ingested_at).rename(fit.renames).with_row_index(ROW_INDEX)
            del frame
            if dataset.strategy == "insert_new":
                new_rows, stored = _not_stored(table, dataset, rows, live)
            else:
                new_rows, stored = rows, 0
            plan = insert_plan(new_rows, stored, schema_id)
            # What an attempt keeps of the plan: which rows it inserts, one bit a row, not the rows.
            kept = dataclasses.replace(plan, rows=plan.rows.clear(), incoming=_flags(plan.incoming, rows.height))
            del rows, new_rows
            name = f"slice-{index}"
            if must_write(table, written, name, kept):
                written[name] = Written(kept, write_files(table, dataset, plan))
            files += written[name].files
            inserted += plan.inserted
            skipped += plan.skipped
            del plan
        counts = {MARKER_INSERTED: str(inserted), MARKER_UPDATED: "0", MARKER_SKIPPED: str(skipped)}
        pending = transaction(table)
        marker = load_markers([{**identity.snapshot_properties(), **counts}])
        snapshot_id = stage_snapshot(pending, files, [], marker, merge_manifests=True)
        staged = staged_table(table, pending)
        live.stage(files, [])
        try:
            commit_staged(pending)
        except BaseException as exc:
            commit_error = exc
            raise
        live.committed(head_snapshot(staged) or 0)
        return LoadSummary(table_name, dataset.strategy, inserted, 0, skipped, duplicates, snapshot_id)

    try:
        return commit_loop(
            catalog,
            dataset,
            identity,
            written,
            attempt,
            loaded_before,
            namespace=namespace,
            attempts=attempts,
            backoff_seconds=backoff_seconds,
        )
    except CommitConflict:
        raise  # the loop deleted what it wrote
    except BaseException as exc:
        # Failed before a commit (a slice that cannot be read or written, ...): nothing is committed, and
        # no file is kept. A commit that failed with an unknown outcome keeps its files: they may be in the
        # table (files that may have landed earlier are kept by discard_written itself).
        if exc is not commit_error and planned_on is not None:
            discard_written(planned_on, *written.values())
        raise


def _typed(slices: Slices, dataset: Dataset, names: Sequence[str] | None = None) -> Slices:
    """The slices with the contract's columns (or ``names`` of them) in its types, so that a key hashes alike
    in every slice."""
    types = {c.name: POLARS_TYPES[c.type] for c in dataset.columns}
    columns = [pl.col(name).cast(types[name]) for name in (names or types)]
    return lambda: (frame.select(columns) for frame in slices())


def dedup_columns(dataset: Dataset) -> list[str]:
    """What deduplication reads: the key, and the column that orders a key's rows."""
    return [*dataset.key, *([dataset.ordering_column] if dataset.ordering_column else [])]


def _flags(positions: pl.Series, height: int) -> pl.Series:
    """``height`` flags, set at ``positions``."""
    return pl.repeat(False, height, dtype=pl.Boolean, eager=True).scatter(positions, True)


def _not_stored(table: Table, dataset: Dataset, rows: pl.DataFrame, live: LiveFiles) -> tuple[pl.DataFrame, int]:
    """``plan_insert_new`` of a slice's rows (numbered by ``ROW_INDEX``) against the stored keys of the files
    that may hold them.

    The key columns of those files are read :data:`STORED_ROWS_PER_READ` rows at a time, each read
    narrowing the slice's keys left (a slice's keys spread over the whole key range, so its candidate
    files may hold far more keys than the slice has rows); the rows are filtered once, at the end.
    """
    if table.current_snapshot() is None or rows.is_empty():
        return rows, 0
    key = list(dataset.key)
    left = rows.select(*key, ROW_INDEX)
    for chunk in _reads(candidate_files(table, dataset, rows, live)):
        stored = read_files(table.metadata, table.io, chunk, key).select(key)
        left, _ = plan_insert_new(left, stored, dataset.key)
        del stored
    if left.height == rows.height:
        return rows, 0
    new_rows = rows.filter(_flags(left.get_column(ROW_INDEX), rows.height))
    return new_rows, rows.height - new_rows.height


def _reads(tasks: Sequence[FileScanTask]) -> Iterator[list[FileScanTask]]:
    """The files in runs of about :data:`STORED_ROWS_PER_READ` rows (a file of more is a run of its own)."""
    run: list[FileScanTask] = []
    rows = 0
    for task in tasks:
        if run and rows + task.file.record_count > STORED_ROWS_PER_READ:
            yield run
            run, rows = [], 0
        run.append(task)
        rows += task.file.record_count
    if run:
        yield run
