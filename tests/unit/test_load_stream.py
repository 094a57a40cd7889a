"""Loading a file in slices (``load_stream``): the same outcome as ``load_batch`` of the whole file, in one commit.

Real SqlCatalog on SQLite with a temp warehouse (no mocks of Iceberg). Each load test checks what
``load_batch`` of the same rows gives (rows, counts, marker) and the invariants of ARCHITECTURE §5:
(I1) the rows of the files that loaded, (I2) no duplicate keys, (I3) each source in one snapshot, (I5)
nothing partial after a failure — no data file left behind either.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pyiceberg.catalog import Catalog
from sqlalchemy.exc import OperationalError

from icegate.datasets import Dataset, get_dataset
from icegate.errors import CommitConflict
from icegate.lake import (
    SourceIdentity,
    build_catalog,
    dedupe_in_file,
    dedupe_slices,
    find_loaded,
    load_batch,
    load_stream,
    loaded_snapshots,
)
from icegate.lake import commit as commit_module
from icegate.lake import stream as stream_module
from icegate.lake.maintain import compact, expire_snapshots
from icegate.lake.rollback import rollback
from icegate.lake.stream import Slices, SlicesChanged, dedup_columns
from icegate.payloads import LoadSummary
from icegate.settings import Settings
from tests.unit.test_lake import PRICES, race_before_each_commit

POSTS = get_dataset("posts")
RESTAURANTS = get_dataset("restaurants")
APPEND_POSTS = dataclasses.replace(POSTS, strategy="append")
UPSERT_POSTS = dataclasses.replace(POSTS, strategy="upsert")
NS = "instagram_db"


# --- rows, slices, lakes ------------------------------------------------------------------------


def rows(dataset: Dataset, ids: Sequence[int], version: int = 0) -> pl.DataFrame:
    """A row per id in the dataset's contract: the key from the id (its last part null for every 7th id), the
    other columns from the id and ``version`` (so that a duplicate of a key is told apart from the first)."""
    first, *rest = dataset.key
    values: dict[str, list[Any]] = {first: [f"{first}-{i}" for i in ids]}
    for part in rest:
        values[part] = [None if i % 7 == 0 and part == dataset.key[-1] else f"{part}-{i % 2}" for i in ids]
    for column in dataset.columns:
        if column.name in dataset.key:
            continue
        if column.type == "long":
            values[column.name] = [i * 10 + version for i in ids]
        elif column.type == "date":  # posts: three months, so a load spans several partitions
            values[column.name] = [date(2026, 1 + i % 3, 1 + version % 28) for i in ids]
        else:
            values[column.name] = [f"{column.name}-{i}-v{version}" for i in ids]
    types = {"string": pl.String, "long": pl.Int64, "date": pl.Date}
    return pl.DataFrame(values, schema={c.name: types[c.type] for c in dataset.columns})


def a_file(dataset: Dataset) -> pl.DataFrame:
    """A file with duplicate keys spread across it (later versions of earlier rows, one key three times)."""
    return pl.concat(
        [
            rows(dataset, range(1, 15)),
            rows(dataset, [3, 7, 14, 1], version=1),
            rows(dataset, range(20, 26)),
            rows(dataset, [7], version=2),
        ]
    )


def in_slices(frame: pl.DataFrame, size: int | None, *, with_empty: bool = False) -> Slices:
    """The frame's rows in slices of ``size`` rows (``None``: one slice), optionally with empty slices between."""

    def slices() -> Iterator[pl.DataFrame]:
        step = size or max(frame.height, 1)
        for start in range(0, frame.height, step):
            if with_empty:
                yield frame.clear()
            yield frame.slice(start, step)

    return slices


def identity(sha: str, run: str = "run-1") -> SourceIdentity:
    return SourceIdentity(sha256=sha, file=f"s3://landing/{sha}.csv", version="v1", run_id=run)


def stream(catalog: Catalog, dataset: Dataset, slices: Slices, sha: str, run: str = "run-1", **kw: Any) -> LoadSummary:
    return load_stream(catalog, dataset, slices, identity(sha, run), namespace=NS, backoff_seconds=0, **kw)


def batch(catalog: Catalog, dataset: Dataset, frame: pl.DataFrame, sha: str, run: str = "run-1") -> LoadSummary:
    return load_batch(catalog, dataset, frame, identity(sha, run), namespace=NS, backoff_seconds=0)


def new_catalog(root: Path) -> Catalog:
    root.mkdir(parents=True)
    return build_catalog(Settings(lake_root=str(root), commit_backoff_seconds=0.001))


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    return new_catalog(Path(settings.lake_root))


def stored(catalog: Catalog, dataset: Dataset) -> pl.DataFrame:
    """The table's rows, but their load time, in a stable order."""
    frame = pl.from_arrow(catalog.load_table((NS, dataset.table)).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.drop("ingested_at").sort(pl.all(), nulls_last=True)


def markers(catalog: Catalog, dataset: Dataset) -> list[dict[str, str]]:
    """Each load's marker entries (not pyiceberg's own summary entries: file counts and sizes differ)."""
    table = catalog.load_table((NS, dataset.table))
    return [{k: v for k, v in props.items() if k.startswith("icegate.")} for _, props in loaded_snapshots(table)]


def data_files(catalog: Catalog, dataset: Dataset) -> set[str]:
    return {task.file.file_path for task in catalog.load_table((NS, dataset.table)).scan().plan_files()}


def parquet_on_disk(root: Path) -> set[str]:
    """Data files of the data tables (the ledger is a table of its own)."""
    return {str(p.resolve()) for p in (root / "warehouse").rglob("*.parquet") if "icegate_loads" not in p.parts}


def assert_unique_keys(frame: pl.DataFrame, dataset: Dataset) -> None:
    assert frame.select(pl.struct(list(dataset.key)).is_duplicated().any()).item() is False


def count_writes(monkeypatch: pytest.MonkeyPatch, *, fail_after: int | None = None) -> list[int]:
    """Rows of each call of the data-file writer, as ``load_stream`` calls it; the call after ``fail_after``
    calls raises."""
    calls: list[int] = []
    real = commit_module.write_files

    def counted(table: Any, dataset: Dataset, plan: Any) -> Any:
        if len(calls) == fail_after:
            raise OSError("the warehouse refused the write")
        calls.append(plan.rows.height)
        return real(table, dataset, plan)

    monkeypatch.setattr(stream_module, "write_files", counted)
    return calls


# --- the same outcome as load_batch -------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset",
    [POSTS, RESTAURANTS, APPEND_POSTS],
    ids=["posts-monthly-partitions", "restaurants-unpartitioned", "append"],
)
@pytest.mark.parametrize(
    ("size", "with_empty"),
    [(1, False), (2, True), (3, False), (7, False), (None, False)],
    ids=["1-row-slices", "2-row-slices-and-empty-ones", "3-row-slices", "7-row-slices", "one-slice"],
)
def test_a_file_in_slices_loads_as_load_batch_loads_it_whole(
    tmp_path: Path, dataset: Dataset, size: int | None, with_empty: bool
) -> None:
    # GIVEN two lakes holding the same earlier load (some keys of the file, one with a null key part)
    lakes = {how: new_catalog(tmp_path / how) for how in ("whole", "sliced")}
    earlier = rows(dataset, [2, 7, 21, 40], version=9)
    for lake in lakes.values():
        batch(lake, dataset, earlier, "earlier", run="run-0")
    file = a_file(dataset)

    # WHEN the same file is loaded whole into one and in slices into the other
    whole = batch(lakes["whole"], dataset, file, "file")
    sliced = stream(lakes["sliced"], dataset, in_slices(file, size, with_empty=with_empty), "file")

    # THEN the same rows are in the table, with the same counts and the same marker, in one snapshot
    assert dataclasses.replace(sliced, snapshot_id=None) == dataclasses.replace(whole, snapshot_id=None)
    assert stored(lakes["sliced"], dataset).equals(stored(lakes["whole"], dataset), null_equal=True)
    assert markers(lakes["sliced"], dataset) == markers(lakes["whole"], dataset)
    snapshots = lakes["sliced"].load_table((NS, dataset.table)).metadata.snapshots
    assert [s.snapshot_id for s in snapshots][-1] == sliced.snapshot_id
    assert len(snapshots) == 2  # the earlier load's and this one's
    # AND the counts are what the file holds: duplicates dropped (insert_new), stored keys skipped
    if dataset.strategy == "insert_new":
        assert (sliced.inserted, sliced.skipped, sliced.duplicates_in_file) == (17, 3, 5)
        assert_unique_keys(stored(lakes["sliced"], dataset), dataset)
    else:
        assert (sliced.inserted, sliced.skipped, sliced.duplicates_in_file) == (file.height, 0, 0)


def key_columns(slices: Slices, dataset: Dataset) -> Slices:
    """The slices with only what deduplication reads: the key and the ordering column."""
    return lambda: (frame.select(dedup_columns(dataset)) for frame in slices())


@pytest.mark.parametrize("dataset", [POSTS, RESTAURANTS], ids=["posts-ordering-column", "restaurants-last-wins"])
def test_deduplication_reading_the_key_columns_alone_loads_what_reading_whole_slices_loads(
    tmp_path: Path, dataset: Dataset
) -> None:
    # GIVEN two lakes holding the same earlier load, and a file whose keys repeat across slices
    lakes = {how: new_catalog(tmp_path / how) for how in ("whole-slices", "key-columns")}
    for lake in lakes.values():
        batch(lake, dataset, rows(dataset, [2, 7, 21, 40], version=9), "earlier", run="run-0")
    slices = in_slices(a_file(dataset), 3)

    # WHEN one load deduplicates on the slices and the other on their key columns alone
    whole = stream(lakes["whole-slices"], dataset, slices, "file")
    keyed = stream(lakes["key-columns"], dataset, slices, "file", key_slices=key_columns(slices, dataset))

    # THEN the same rows are kept and counted
    assert dataclasses.replace(keyed, snapshot_id=None) == dataclasses.replace(whole, snapshot_id=None)
    assert keyed.duplicates_in_file == 5
    assert stored(lakes["key-columns"], dataset).equals(stored(lakes["whole-slices"], dataset), null_equal=True)


def test_key_columns_of_other_rows_than_the_slices_are_refused_and_leave_nothing(
    catalog: Catalog, settings: Settings
) -> None:
    # GIVEN slices, and key columns that end a slice early
    slices = in_slices(a_file(POSTS), 3)
    shorter = in_slices(a_file(POSTS).head(-1), 3)

    # WHEN they are loaded together
    with pytest.raises(SlicesChanged):
        stream(catalog, POSTS, slices, "file", key_slices=key_columns(shorter, POSTS))

    # THEN nothing is committed and no file is left
    assert parquet_on_disk(Path(settings.lake_root)) == set()


def test_the_newest_duplicate_wins_across_slices(catalog: Catalog) -> None:
    # GIVEN a file whose key 7 comes three times, in three slices, each time newer
    file = a_file(POSTS)

    # WHEN it is loaded in slices of 3 rows
    stream(catalog, POSTS, in_slices(file, 3), "file")

    # THEN key 7 holds its last row (version 2), key 3 its second (version 1), and key 5 its only one
    table = stored(catalog, POSTS)
    likes = dict(zip(table["post_id"], table["likes"], strict=True))
    assert (likes["post_id-7"], likes["post_id-3"], likes["post_id-5"]) == (72, 31, 50)


@pytest.mark.parametrize(
    "hashes",
    [
        lambda keys: pl.repeat(0, keys.height, dtype=pl.UInt64, eager=True),
        lambda keys: keys.select(pl.col(keys.columns[0]).str.len_bytes().cast(pl.UInt64) % 2).to_series(),
    ],
    ids=["every-key-hashes-alike", "hash-is-key-length-mod-2"],
)
def test_keys_whose_hashes_collide_are_told_apart_by_their_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashes: Callable[[pl.DataFrame], pl.Series]
) -> None:
    # GIVEN a key hash under which many distinct keys collide
    monkeypatch.setattr(stream_module, "key_hashes", hashes)
    lakes = {how: new_catalog(tmp_path / how) for how in ("whole", "sliced")}
    file = a_file(POSTS)

    # WHEN the file is loaded in slices, and whole elsewhere
    sliced = stream(lakes["sliced"], POSTS, in_slices(file, 4), "file")
    whole = batch(lakes["whole"], POSTS, file, "file")

    # THEN no row was dropped for its hash: every distinct key is stored, once, as load_batch stores it
    assert (sliced.inserted, sliced.duplicates_in_file) == (whole.inserted, whole.duplicates_in_file) == (20, 5)
    assert stored(lakes["sliced"], POSTS).equals(stored(lakes["whole"], POSTS), null_equal=True)


# --- dedupe_slices: dedupe_in_file over a file in slices, ordering column included ---------------


def prices() -> pl.DataFrame:
    items = ["a", "b", "a", "c", "b", "a", "d", "c", "a", "b", None, None]
    shops = ["n", "n", "n", "s", "n", "n", "n", "s", "s", "n", "n", "n"]
    days = [3, None, 5, 1, 2, 5, None, None, 1, 2, 4, 4]
    return pl.DataFrame(
        {
            "item_id": items,
            "shop": shops,
            "price": list(range(len(items))),
            "scraped_on": [date(2026, 1, d) if d else None for d in days],
        }
    )


@pytest.mark.parametrize("ordering", ["scraped_on", None], ids=["ordering-column", "no-ordering-last-wins"])
@pytest.mark.parametrize("size", [1, 3, 5, None], ids=["1-row-slices", "3-row-slices", "5-row-slices", "one-slice"])
@pytest.mark.parametrize(
    ("verify_rows", "hashes"),
    [
        (1_000_000, None),
        (2, None),
        (3, lambda keys: pl.repeat(7, keys.height, dtype=pl.UInt64, eager=True)),
    ],
    ids=["one-verify-pass", "several-verify-passes", "all-hashes-collide-several-passes"],
)
def test_dedupe_slices_keeps_what_dedupe_in_file_keeps_of_the_whole_file(
    monkeypatch: pytest.MonkeyPatch,
    ordering: str | None,
    size: int | None,
    verify_rows: int,
    hashes: Callable[[pl.DataFrame], pl.Series] | None,
) -> None:
    # GIVEN a file with duplicates (ties, nulls in the ordering column and in keys), and a verify budget
    monkeypatch.setattr(stream_module, "VERIFY_ROWS", verify_rows)
    if hashes is not None:
        monkeypatch.setattr(stream_module, "key_hashes", hashes)
    file = prices()

    # WHEN it is deduplicated in slices
    dedup = dedupe_slices(in_slices(file, size), PRICES.key, ordering)

    # THEN it keeps exactly the rows dedupe_in_file keeps of the whole file, in file order
    expected, dropped = dedupe_in_file(file, PRICES.key, ordering)
    assert file.filter(dedup.keep).equals(expected, null_equal=True)
    assert dedup.duplicates == dropped == 6


def test_dedupe_slices_of_no_rows_keeps_nothing_and_drops_nothing() -> None:
    dedup = dedupe_slices(lambda: iter(()), PRICES.key)
    assert (dedup.keep.len(), dedup.duplicates, dedup.heights) == (0, 0, ())


# --- reruns, refusals, rollback -----------------------------------------------------------------


def test_a_rerun_of_the_same_content_is_already_loaded_and_writes_nothing(
    catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a file loaded in slices
    file = a_file(POSTS)
    first = stream(catalog, POSTS, in_slices(file, 4), "file")
    snapshots = len(catalog.load_table((NS, POSTS.table)).metadata.snapshots)
    on_disk = parquet_on_disk(Path(settings.lake_root))
    writes = count_writes(monkeypatch)

    # WHEN the same content comes again, in another run
    again = stream(catalog, POSTS, in_slices(file, 4), "file", run="run-2")

    # THEN it is "already loaded" in the first snapshot (duplicates counted as before), and nothing is written
    assert again == LoadSummary(f"{NS}.posts", "insert_new", 0, 0, 0, 5, first.snapshot_id, already_loaded=True)
    assert writes == []
    assert len(catalog.load_table((NS, POSTS.table)).metadata.snapshots) == snapshots
    assert parquet_on_disk(Path(settings.lake_root)) == on_disk
    # AND load_batch of that content says the same (one marker, one proof)
    assert batch(catalog, POSTS, file, "file", run="run-3").snapshot_id == first.snapshot_id


def test_an_upsert_dataset_is_refused_before_anything_is_read(catalog: Catalog) -> None:
    def unread() -> Iterator[pl.DataFrame]:
        raise AssertionError("read")

    with pytest.raises(ValueError, match="upserts: load_stream loads insert_new and append files only"):
        stream(catalog, UPSERT_POSTS, unread, "file")


def test_a_load_in_slices_rolls_back_by_its_run_id_and_then_loads_again(catalog: Catalog) -> None:
    # GIVEN a file loaded in slices after an earlier load
    batch(catalog, POSTS, rows(POSTS, [30, 31]), "earlier", run="run-0")
    loaded = stream(catalog, POSTS, in_slices(a_file(POSTS), 5), "file", run="run-1")

    # WHEN its run is rolled back
    undone = rollback(catalog, (NS, POSTS.table), run_id="run-1")

    # THEN its rows are gone, the earlier load's stay, and the file loads again
    assert undone.rows_removed == loaded.inserted
    assert sorted(stored(catalog, POSTS)["post_id"]) == ["post_id-30", "post_id-31"]
    again = stream(catalog, POSTS, in_slices(a_file(POSTS), 5), "file", run="run-2")
    assert (again.already_loaded, again.inserted) == (False, loaded.inserted)


# --- failures: nothing committed, nothing left behind -------------------------------------------


def failing_on_third_slice(frame: pl.DataFrame, fail_on_call: int) -> Slices:
    """Slices of 4 rows whose ``fail_on_call``-th reading breaks at the third slice."""
    calls = 0

    def slices() -> Iterator[pl.DataFrame]:
        nonlocal calls
        calls += 1
        for number, start in enumerate(range(0, frame.height, 4), 1):
            if number == 3 and calls == fail_on_call:
                raise OSError("the source went away")
            yield frame.slice(start, 4)

    return slices


@pytest.mark.parametrize("where", ["source", "writer"], ids=["the-source-fails", "writing-a-data-file-fails"])
def test_a_failure_at_the_third_slice_commits_nothing_and_leaves_no_file(
    catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # GIVEN a table with an earlier load, and a file (no duplicates: keys, then load) whose third slice fails
    batch(catalog, POSTS, rows(POSTS, [1, 2]), "earlier", run="run-0")
    before = stored(catalog, POSTS)
    file = rows(POSTS, range(10, 30))
    writes = count_writes(monkeypatch, fail_after=2 if where == "writer" else None)
    slices = failing_on_third_slice(file, fail_on_call=2) if where == "source" else in_slices(file, 4)

    # WHEN it is loaded in slices
    with pytest.raises(OSError, match=r"went away|refused"):
        stream(catalog, POSTS, slices, "file")

    # THEN the first slices were written, but nothing is committed and none of their files is left
    assert len(writes) == 2
    assert find_loaded(catalog.load_table((NS, POSTS.table)), "file") is None
    assert stored(catalog, POSTS).equals(before, null_equal=True)
    assert parquet_on_disk(Path(settings.lake_root)) == data_files(catalog, POSTS)


def test_slices_that_change_between_passes_are_refused_and_leave_nothing(catalog: Catalog, settings: Settings) -> None:
    # GIVEN slices that yield other keys on their second reading
    calls = 0

    def changing() -> Iterator[pl.DataFrame]:
        nonlocal calls
        calls += 1
        yield rows(POSTS, [1, 2, 3])
        yield rows(POSTS, [4, 5] if calls == 1 else [4, 6])

    # WHEN they are loaded
    with pytest.raises(SlicesChanged, match="slice 2 of the file holds other keys"):
        stream(catalog, POSTS, changing, "file")

    # THEN nothing is committed and no file is left
    assert find_loaded(catalog.load_table((NS, POSTS.table)), "file") is None
    assert parquet_on_disk(Path(settings.lake_root)) == data_files(catalog, POSTS) == set()


# --- the commit loop ----------------------------------------------------------------------------


def race_before_commit(
    monkeypatch: pytest.MonkeyPatch, competitor: Callable[[int], object], times: int | None = None
) -> list[int]:
    """Run ``competitor`` (a real concurrent commit) right before the streamed load's commit."""
    return race_before_each_commit(monkeypatch, competitor, times, where=stream_module)


def test_a_lost_race_re_plans_rewrites_only_the_changed_slice_and_commits_once(
    catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a competitor that commits a key of our second slice (and one of its own) just before our commit
    file = rows(POSTS, range(1, 13))
    race_before_commit(monkeypatch, lambda _: batch(catalog, POSTS, rows(POSTS, [6, 99]), "competitor"), times=1)
    writes = count_writes(monkeypatch)

    # WHEN our file, in three slices of 4 rows, loses that race
    summary = stream(catalog, POSTS, in_slices(file, 4), "file")

    # THEN the load was re-planned: key 6 (now stored) is skipped, the rest inserted, no key twice
    assert (summary.inserted, summary.skipped, summary.already_loaded) == (11, 1, False)
    table = stored(catalog, POSTS)
    assert table.height == 13
    assert_unique_keys(table, POSTS)
    # AND only the second slice was written again; the others' files were kept
    assert writes == [4, 4, 4, 3]
    # AND each source is in one snapshot, and the lost attempt left no file behind
    assert sorted(m["icegate.source-sha256"] for m in markers(catalog, POSTS)) == ["competitor", "file"]
    assert parquet_on_disk(Path(settings.lake_root)) == data_files(catalog, POSTS)


def test_endless_conflicts_end_in_a_transient_commit_conflict_and_leave_no_file(
    catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN other loaders that commit before each of our attempts
    race_before_commit(monkeypatch, lambda n: batch(catalog, POSTS, rows(POSTS, [100 + n]), f"other-{n}"))

    # WHEN our load loses three times in a row
    with pytest.raises(CommitConflict, match=r"3 commits to instagram_db\.posts") as raised:
        stream(catalog, POSTS, in_slices(rows(POSTS, range(1, 9)), 3), "file", attempts=3)

    # THEN the error is transient, and nothing of ours is in the table or on disk
    assert raised.value.transient
    assert find_loaded(catalog.load_table((NS, POSTS.table)), "file") is None
    assert parquet_on_disk(Path(settings.lake_root)) == data_files(catalog, POSTS)


def test_a_commit_that_landed_before_the_catalog_call_failed_reports_what_it_inserted(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a catalog whose database errors right after our commit has landed (outcome unknown)
    batch(catalog, POSTS, rows(POSTS, [1]), "earlier", run="run-0")
    real = commit_module.commit_staged
    landed: list[int] = []

    def landed_then_locked(pending: Any) -> None:
        real(pending)
        if not landed:
            landed.append(catalog.load_table((NS, POSTS.table)).current_snapshot().snapshot_id)  # type: ignore[union-attr]
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(stream_module, "commit_staged", landed_then_locked)

    # WHEN our load of keys 1 (stored), 2 and 3 retries and finds its own marker
    summary = stream(catalog, POSTS, in_slices(rows(POSTS, [1, 2, 3]), 1), "file")

    # THEN it reports what its commit did, in the snapshot that landed, and its files are still there
    assert (summary.already_loaded, summary.inserted, summary.skipped, summary.snapshot_id) == (False, 2, 1, landed[0])
    assert sorted(stored(catalog, POSTS)["post_id"]) == ["post_id-1", "post_id-2", "post_id-3"]


def test_maintenance_while_the_slices_are_planned_makes_the_load_re_plan_and_leave_no_file(
    catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two small loads, and maintenance (compaction, then expiry of all but the newest snapshot) that
    # runs once our load has written its first slice and before it reads stored keys for the second
    batch(catalog, POSTS, rows(POSTS, [1]), "one", run="run-0")
    batch(catalog, POSTS, rows(POSTS, [7]), "two", run="run-0")  # the same month as 1: compaction merges them
    real = commit_module.read_files
    reads: list[int] = []

    def maintenance_at_second_read(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        if len(reads) == 2:
            compact(catalog, (NS, POSTS.table))
            tomorrow = datetime.now(UTC) + timedelta(days=1)
            expire_snapshots(catalog, (NS, POSTS.table), older_than=tomorrow, retain_last=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stream_module, "read_files", maintenance_at_second_read)

    # WHEN our file (keys 1 to 8: 1 and 7 stored) is loaded in slices of 4 and finds its planned files deleted
    summary = stream(catalog, POSTS, in_slices(rows(POSTS, range(1, 9)), 4), "file")

    # THEN it re-planned against the compacted snapshot (reading each slice's stored keys again): 1 and 7
    # skipped, the rest inserted once
    assert len(reads) == 4
    assert (summary.inserted, summary.skipped) == (6, 2)
    table = stored(catalog, POSTS)
    assert table.height == 8
    assert_unique_keys(table, POSTS)
    # AND the files the interrupted attempt wrote are kept (same plan) or gone, never orphaned
    assert parquet_on_disk(Path(settings.lake_root)) == data_files(catalog, POSTS)


def test_a_data_file_missing_from_the_current_snapshot_fails_the_load_and_leaves_no_file(
    catalog: Catalog, settings: Settings
) -> None:
    # GIVEN a table whose only data file was deleted behind Iceberg's back (no newer snapshot)
    batch(catalog, POSTS, rows(POSTS, [9]), "one", run="run-0")
    [path] = data_files(catalog, POSTS)
    Path(path).unlink()

    # WHEN a load in slices needs to read it for its second slice
    with pytest.raises(FileNotFoundError):
        stream(catalog, POSTS, in_slices(rows(POSTS, [1, 2, 9]), 2), "file")

    # THEN it fails rather than retry forever or load blind, and the first slice's files are gone
    assert find_loaded(catalog.load_table((NS, POSTS.table)), "file") is None
    assert parquet_on_disk(Path(settings.lake_root)) == set()


def test_a_file_without_rows_records_its_marker_as_load_batch_does(tmp_path: Path) -> None:
    # GIVEN two empty lakes WHEN a file without rows is loaded whole into one and (as no slice) into the other
    lakes = {how: new_catalog(tmp_path / how) for how in ("whole", "sliced")}
    whole = batch(lakes["whole"], POSTS, rows(POSTS, []), "empty")
    sliced = stream(lakes["sliced"], POSTS, lambda: iter(()), "empty")

    # THEN both commit a snapshot with the marker and nothing in it
    assert dataclasses.replace(sliced, snapshot_id=None) == dataclasses.replace(whole, snapshot_id=None)
    assert markers(lakes["sliced"], POSTS) == markers(lakes["whole"], POSTS)
    assert stored(lakes["sliced"], POSTS).height == 0
