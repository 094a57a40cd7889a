"""The loader's Iceberg side, against a real SqlCatalog on SQLite (no mocks of Iceberg).

Every load test checks the invariants of ARCHITECTURE §5 that apply to it: (I1) rows of the loaded
files, (I2) no duplicate keys, (I3) each source in one snapshot, (I5) nothing partial after a
failure.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from sqlalchemy.exc import OperationalError

from icegate.datasets import Column, Dataset, get_dataset
from icegate.errors import CommitConflict
from icegate.lake import (
    MARKER_FILE,
    MARKER_SHA256,
    SourceIdentity,
    build_catalog,
    dedupe_in_file,
    ensure_table,
    find_loaded,
    load_batch,
    loaded_snapshots,
    plan_insert_new,
)
from icegate.lake import commit as commit_module
from icegate.lake import maintain as maintain_module
from icegate.lake.catalog import TARGET_FILE_ROWS
from icegate.lake.commit import LiveFiles, candidate_files, with_lineage
from icegate.lake.files import _partition_rank
from icegate.lake.maintain import compact, expire_snapshots, remove_orphan_files
from icegate.settings import Settings
from tests.frames import posts_frame

POSTS = get_dataset("posts")
RESTAURANTS = get_dataset("restaurants")
NS = "instagram_db"
#: Prices of items re-scraped over time: the newer scrape wins, an older one never overwrites.
PRICES = Dataset(
    name="prices",
    file_patterns=("prices_*",),
    columns=(Column("item_id"), Column("shop"), Column("price", "long"), Column("scraped_on", "date")),
    key=("item_id", "shop"),
    strategy="upsert",
    ordering_column="scraped_on",
    partition=(("scraped_on", "month"),),
)
UPSERT_POSTS = dataclasses.replace(POSTS, strategy="upsert")
APPEND_POSTS = dataclasses.replace(POSTS, strategy="append")


def posts(*ids: str, creator: str = "alice", likes: int = 1, posted: date = date(2026, 1, 10)) -> pl.DataFrame:
    return posts_frame(*ids, creator=creator, likes=likes, posted=posted, with_urls=True, comments=0)


def prices(scraped_on: date | None, **items: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": list(items),
            "shop": ["north"] * len(items),
            "price": list(items.values()),
            "scraped_on": [scraped_on] * len(items),
        },
        schema_overrides={"scraped_on": pl.Date},
    )


def identity(sha: str, run: str = "run-1") -> SourceIdentity:
    return SourceIdentity(sha256=sha, file=f"s3://landing/{sha}.csv", version="v1", run_id=run)


def load(catalog: Catalog, dataset: Dataset, frame: pl.DataFrame, sha: str, run: str = "run-1", **kwargs: Any) -> Any:
    return load_batch(catalog, dataset, frame, identity(sha, run), namespace=NS, backoff_seconds=0, **kwargs)


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    Path(settings.lake_root).mkdir(parents=True)
    return build_catalog(settings)


def table_of(catalog: Catalog, dataset: Dataset = POSTS) -> Table:
    return catalog.load_table((NS, dataset.table))


def rows_of(catalog: Catalog, dataset: Dataset = POSTS) -> pl.DataFrame:
    frame = pl.from_arrow(table_of(catalog, dataset).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def data_files(catalog: Catalog, dataset: Dataset = POSTS) -> set[str]:
    return {task.file.file_path for task in table_of(catalog, dataset).scan().plan_files()}


def parquet_on_disk(settings: Settings) -> set[str]:
    """Data files of the data tables (expiry also records markers in the ledger, a table of its own)."""
    warehouse = Path(settings.lake_root, "warehouse")
    return {str(p.resolve()) for p in warehouse.rglob("*.parquet") if "icegate_loads" not in p.parts}


def set_target_file_rows(catalog: Catalog, dataset: Dataset, rows: int) -> None:
    ensure_table(catalog, dataset, NS).transaction().set_properties({TARGET_FILE_ROWS: str(rows)}).commit_transaction()


def assert_unique_keys(frame: pl.DataFrame, dataset: Dataset) -> None:
    assert frame.select(pl.struct(list(dataset.key)).is_duplicated().any()).item() is False


# --- first load, insert_new, idempotency ------------------------------------------------------


def test_first_load_creates_the_table_with_lineage_and_no_internal_commit_retries(catalog: Catalog) -> None:
    # GIVEN an empty catalog
    # WHEN a batch is loaded
    summary = load(catalog, POSTS, posts("p1", "p2"), "aaa")

    # THEN the table exists with our commit protocol and partition spec, and carries lineage
    table = table_of(catalog)
    assert table.properties["commit.retry.num-retries"] == "0"
    assert table.properties["icegate.merge-key"] == "post_id,creator"
    assert [f.name for f in table.spec().fields] == ["posted_date_month"]
    stored = rows_of(catalog)
    assert sorted(stored["post_id"]) == ["p1", "p2"]
    assert set(stored["source_file"]) == {"s3://landing/aaa.csv"}
    assert set(stored["source_version"]) == {"v1"}
    assert set(stored["run_id"]) == {"run-1"}
    assert stored["ingested_at"].dtype == pl.Datetime("us", "UTC")
    assert summary.inserted == 2
    assert summary.snapshot_id == table.current_snapshot().snapshot_id  # type: ignore[union-attr]


def test_insert_new_skips_keys_the_table_already_holds(catalog: Catalog) -> None:
    # GIVEN a table holding p1, p2
    load(catalog, POSTS, posts("p1", "p2", likes=5), "aaa")

    # WHEN a later file brings p2 (changed) and p3
    summary = load(catalog, POSTS, posts("p2", "p3", likes=9), "bbb")

    # THEN only p3 is inserted; the stored p2 keeps its first values
    assert (summary.inserted, summary.updated, summary.skipped) == (1, 0, 1)
    stored = rows_of(catalog).sort("post_id")
    assert stored["post_id"].to_list() == ["p1", "p2", "p3"]
    assert stored["likes"].to_list() == [5, 5, 9]


def test_same_post_id_from_another_creator_is_a_different_key(catalog: Catalog) -> None:
    load(catalog, POSTS, posts("p1", creator="alice"), "aaa")
    summary = load(catalog, POSTS, posts("p1", creator="bob"), "bbb")
    assert summary.inserted == 1
    assert rows_of(catalog).height == 2


def test_duplicate_keys_inside_one_file_keep_the_last_row_and_are_counted(catalog: Catalog) -> None:
    batch = pl.concat([posts("p1", likes=1), posts("p2"), posts("p1", likes=7)])
    summary = load(catalog, POSTS, batch, "aaa")
    assert (summary.inserted, summary.duplicates_in_file) == (2, 1)
    assert rows_of(catalog).filter(pl.col("post_id") == "p1")["likes"].to_list() == [7]


def test_dedupe_in_file_leaves_a_batch_without_duplicates_untouched() -> None:
    batch = posts("p1", "p2", "p3")
    unique, dropped = dedupe_in_file(batch, POSTS.key)
    assert unique is batch
    assert dropped == 0


def test_rerun_of_the_same_content_is_a_no_op_reporting_the_original_snapshot(catalog: Catalog) -> None:
    # GIVEN a file already loaded
    first = load(catalog, POSTS, posts("p1", "p2"), "same-hash")
    snapshots_before = len(table_of(catalog).metadata.snapshots)

    # WHEN the same content arrives again (another run, even under another version)
    again = load_batch(catalog, POSTS, posts("p1", "p2"), identity("same-hash", "run-2"), namespace=NS)

    # THEN nothing is committed and the original snapshot is reported
    assert again.already_loaded
    assert again.snapshot_id == first.snapshot_id
    assert again.inserted == 0
    assert len(table_of(catalog).metadata.snapshots) == snapshots_before
    assert rows_of(catalog).height == 2


def test_a_commit_that_landed_before_the_catalog_call_failed_reports_what_it_inserted(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a catalog whose database errors right after our commit has landed (outcome unknown)
    load(catalog, POSTS, posts("p1"), "earlier")
    real = commit_module.commit_staged
    failures = []

    def landed_then_locked(pending: Any) -> None:
        real(pending)
        if not failures:
            failures.append(catalog.load_table((NS, POSTS.table)).current_snapshot().snapshot_id)  # type: ignore[union-attr]
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(commit_module, "commit_staged", landed_then_locked)

    # WHEN our load of p1 (stored) and p2, p3 (new) retries and finds its own marker
    summary = load(catalog, POSTS, posts("p1", "p2", "p3"), "ours")

    # THEN it reports what its commit did, in the snapshot that landed — not "already loaded"
    assert not summary.already_loaded
    assert (summary.inserted, summary.skipped, summary.snapshot_id) == (2, 1, failures[0])
    assert sorted(rows_of(catalog)["post_id"]) == ["p1", "p2", "p3"]
    # AND content loaded by another run is still "already loaded"
    rerun = load_batch(catalog, POSTS, posts("p1", "p2", "p3"), identity("ours", "run-2"), namespace=NS)
    assert rerun.already_loaded
    assert (rerun.inserted, rerun.snapshot_id) == (0, failures[0])


def test_a_file_whose_rows_all_exist_still_records_its_marker(catalog: Catalog) -> None:
    load(catalog, POSTS, posts("p1"), "aaa")
    summary = load(catalog, POSTS, posts("p1"), "bbb")
    table = table_of(catalog)
    assert summary.inserted == 0
    assert find_loaded(table, "bbb") == summary.snapshot_id
    props = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert props[MARKER_SHA256] == "bbb"
    assert props[MARKER_FILE] == "s3://landing/bbb.csv"


def test_null_key_parts_match_each_other_so_reloads_do_not_duplicate(catalog: Catalog) -> None:
    # GIVEN a restaurant without a phone number (phone is part of the key)
    frame = pl.DataFrame(
        {name: [None] for name in RESTAURANTS.column_names}, schema=dict.fromkeys(RESTAURANTS.column_names, pl.String)
    ).with_columns(
        pl.lit("Lucali").alias("restaurant_name"),
        pl.lit("Brooklyn").alias("city"),
        pl.lit(None, pl.Int64).alias("followers"),
        pl.lit(None, pl.Int64).alias("posts_count"),
    )
    load(catalog, RESTAURANTS, frame, "aaa")

    # WHEN another file has the same restaurant, still without a phone
    summary = load(catalog, RESTAURANTS, frame, "bbb")

    # THEN it is recognised as the same key
    assert (summary.inserted, summary.skipped) == (0, 1)
    assert rows_of(catalog, RESTAURANTS).height == 1


def test_plan_insert_new_on_an_empty_table_keeps_every_row() -> None:
    batch = posts("p1", "p2")
    new_rows, skipped = plan_insert_new(
        batch, pl.DataFrame(schema={"post_id": pl.String, "creator": pl.String}), POSTS.key
    )
    assert (new_rows.height, skipped) == (2, 0)


def test_ensure_table_is_idempotent(catalog: Catalog) -> None:
    first = ensure_table(catalog, POSTS, NS)
    second = ensure_table(catalog, POSTS, NS)
    assert first.metadata.table_uuid == second.metadata.table_uuid


@pytest.mark.parametrize(
    "folder", ["my lake", "100%", "lake#2", "lac-été"], ids=["space", "percent", "hash", "non-ascii"]
)
@pytest.mark.parametrize("dataset", [POSTS, UPSERT_POSTS], ids=["insert_new", "upsert"])
def test_a_lake_whose_path_a_uri_would_encode_keeps_loading(tmp_path: Path, folder: str, dataset: Dataset) -> None:
    # GIVEN a lake in a folder whose name a URI percent-encodes or cuts short, loaded once
    settings = Settings(lake_root=str(tmp_path / folder / "lake"))
    Path(settings.lake_root).mkdir(parents=True)
    catalog = build_catalog(settings)
    load(catalog, dataset, posts("p1", "p2"), "first")

    # WHEN a second file is merged (which reads the first file's keys back)
    summary = load(catalog, dataset, posts("p2", "p3", likes=5), "second")

    # THEN the files were written and read in that very folder, and the merge saw the stored keys
    assert (summary.inserted, summary.skipped + summary.updated) == (1, 1)
    assert sorted(rows_of(catalog, dataset)["post_id"]) == ["p1", "p2", "p3"]
    assert data_files(catalog, dataset) <= parquet_on_disk(settings)


#: 15 characters, then U+D7FF as the 16th: pyiceberg's truncated upper bound becomes a lone surrogate.
SURROGATE_TRAP = "x" * 15 + "\ud7ff" + "and more"


@pytest.mark.parametrize("column", ["caption", "post_id"], ids=["plain-column", "key-column"])
def test_a_string_max_whose_truncated_bound_is_not_utf8_does_not_fail_the_load(catalog: Catalog, column: str) -> None:
    # GIVEN a row whose string value is the greatest in its file and ends its 16 characters with U+D7FF
    frame = posts("p1").with_columns(pl.lit(SURROGATE_TRAP).alias(column))

    # WHEN it is loaded, and then loaded again from another file
    first = load(catalog, POSTS, frame, "first")
    second = load(catalog, POSTS, frame, "second")

    # THEN the load succeeds with the value intact; the file simply has no upper bound there
    assert first.inserted == 1
    assert rows_of(catalog)[column].to_list() == [SURROGATE_TRAP]
    # AND the missing bound never hides the key from the next merge: the row is recognised, not doubled
    assert (second.inserted, second.skipped) == (0, 1)


# --- upsert and append ------------------------------------------------------------------------


def test_upsert_replaces_stored_rows_and_inserts_new_ones_in_one_snapshot(catalog: Catalog) -> None:
    # GIVEN a table holding p1, p2
    load(catalog, UPSERT_POSTS, posts("p1", "p2", likes=5), "aaa")
    snapshots_before = len(table_of(catalog, UPSERT_POSTS).metadata.snapshots)

    # WHEN a later file brings p2 (changed) and p3
    summary = load(catalog, UPSERT_POSTS, posts("p2", "p3", likes=9), "bbb")

    # THEN p2 takes the new values, p3 is added, in one overwrite snapshot carrying the marker
    assert (summary.inserted, summary.updated, summary.skipped) == (1, 1, 0)
    stored = rows_of(catalog, UPSERT_POSTS).sort("post_id")
    assert stored["post_id"].to_list() == ["p1", "p2", "p3"]
    assert stored["likes"].to_list() == [5, 9, 9]
    assert stored["source_file"].to_list() == ["s3://landing/aaa.csv", *["s3://landing/bbb.csv"] * 2]
    table = table_of(catalog, UPSERT_POSTS)
    assert len(table.metadata.snapshots) == snapshots_before + 1
    snapshot = table.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary is not None
    assert snapshot.summary.operation.value == "overwrite"
    assert find_loaded(table, "bbb") == snapshot.snapshot_id


def test_upsert_rewrites_only_the_files_that_hold_a_replaced_key(catalog: Catalog) -> None:
    # GIVEN a table whose rows sit in several small files, each a narrow key range
    set_target_file_rows(catalog, UPSERT_POSTS, 3)
    load(catalog, UPSERT_POSTS, posts(*(f"p{i:02d}" for i in range(12)), likes=1), "aaa")
    files_before = data_files(catalog, UPSERT_POSTS)
    assert len(files_before) == 4

    # WHEN one key is updated
    load(catalog, UPSERT_POSTS, posts("p05", likes=50), "bbb")

    # THEN only the file holding p05 was replaced; the others are untouched
    files_after = data_files(catalog, UPSERT_POSTS)
    assert len(files_before - files_after) == 1
    assert len(files_after - files_before) == 1
    stored = rows_of(catalog, UPSERT_POSTS)
    assert stored.height == 12
    assert stored.filter(pl.col("post_id") == "p05")["likes"].to_list() == [50]
    assert_unique_keys(stored, UPSERT_POSTS)


@pytest.mark.parametrize(
    ("stored_on", "incoming_on", "wins"),
    [
        (date(2026, 1, 10), date(2026, 1, 9), False),
        (date(2026, 1, 10), date(2026, 1, 10), True),
        (date(2026, 1, 10), date(2026, 2, 1), True),
        (None, date(2026, 1, 9), True),
        (date(2026, 1, 10), None, False),
    ],
    ids=["older-loses", "same-day-wins", "newer-wins", "stored-null-loses", "incoming-null-loses"],
)
def test_upsert_with_an_ordering_column_never_lets_an_older_row_overwrite_a_newer_one(
    catalog: Catalog, stored_on: date | None, incoming_on: date | None, wins: bool
) -> None:
    # GIVEN a stored price scraped on one day
    load(catalog, PRICES, prices(stored_on, a=100, b=200), "newer")

    # WHEN a file scraped on another day arrives later
    summary = load(catalog, PRICES, prices(incoming_on, a=111, c=300), "late")

    # THEN it replaces the stored row only if it is not older; new keys go in either way
    stored = dict(rows_of(catalog, PRICES).select("item_id", "price").iter_rows())
    assert stored == {"a": 111 if wins else 100, "b": 200, "c": 300}
    assert (summary.inserted, summary.updated, summary.skipped) == (1, int(wins), int(not wins))


def test_with_an_ordering_column_the_newest_row_of_a_file_wins_not_the_last(catalog: Catalog) -> None:
    # GIVEN posts upserted by likes (more likes = newer), p1 stored with 7 likes
    by_likes = dataclasses.replace(UPSERT_POSTS, ordering_column="likes")
    load(catalog, by_likes, posts("p1", likes=7), "stored")

    # WHEN one file holds p1 twice: 10 likes, then (further down) 5 likes
    summary = load(catalog, by_likes, pl.concat([posts("p1", likes=10), posts("p1", likes=5)]), "both")

    # THEN the newest row of the file (10) is the one merged, and it replaces the stored 7
    assert rows_of(catalog, by_likes)["likes"].to_list() == [10]
    assert (summary.updated, summary.duplicates_in_file) == (1, 1)


@pytest.mark.parametrize(
    ("scraped", "price"),
    [
        ([date(2026, 2, 1), date(2026, 1, 15)], 1),
        ([date(2026, 1, 15), date(2026, 2, 1)], 2),
        ([date(2026, 2, 1), date(2026, 2, 1)], 2),
        ([date(2026, 1, 15), None], 1),
        ([None, None], 2),
    ],
    ids=["newer-first", "newer-last", "tie-last-wins", "null-is-oldest", "all-null-last-wins"],
)
def test_dedupe_in_file_keeps_the_greatest_ordering_value_and_the_last_on_ties(
    scraped: list[date | None], price: int
) -> None:
    # GIVEN two rows of one key, prices 1 and 2 in file order, plus another key between them
    batch = pl.DataFrame(
        {
            "item_id": ["a", "b", "a"],
            "shop": ["n"] * 3,
            "price": [1, 9, 2],
            "scraped_on": [scraped[0], None, scraped[1]],
        },
        schema_overrides={"scraped_on": pl.Date},
    )

    # WHEN the file is deduplicated by key with the ordering column
    unique, duplicates = dedupe_in_file(batch, PRICES.key, "scraped_on")

    # THEN one row per key remains: for "a" the newest by scraped_on
    assert duplicates == 1
    assert dict(unique.select("item_id", "price").iter_rows()) == {"a": price, "b": 9}


def test_an_older_file_loaded_after_a_newer_one_changes_nothing(catalog: Catalog) -> None:
    # GIVEN the newer scrape loaded first
    load(catalog, PRICES, prices(date(2026, 3, 1), a=130, b=230), "march")
    before = rows_of(catalog, PRICES).sort("item_id")

    # WHEN the older scrape of the same items arrives late
    summary = load(catalog, PRICES, prices(date(2026, 2, 1), a=120, b=220), "february")

    # THEN every row is skipped and the table's rows are exactly as before
    assert (summary.inserted, summary.updated, summary.skipped) == (0, 0, 2)
    assert rows_of(catalog, PRICES).sort("item_id").equals(before)
    assert find_loaded(table_of(catalog, PRICES), "february") == summary.snapshot_id


def test_an_upsert_that_moves_a_key_to_another_partition_leaves_one_row(catalog: Catalog) -> None:
    # GIVEN prices partitioned by scrape month, a stored in January
    load(catalog, PRICES, prices(date(2026, 1, 5), a=100, b=200), "january")

    # WHEN a March scrape updates a (so its row belongs to another partition)
    load(catalog, PRICES, prices(date(2026, 3, 5), a=150), "march")

    # THEN a exists once, with the March values, and b is untouched
    stored = rows_of(catalog, PRICES).sort("item_id")
    assert stored.select("item_id", "price", "scraped_on").rows() == [
        ("a", 150, date(2026, 3, 5)),
        ("b", 200, date(2026, 1, 5)),
    ]


def test_append_adds_every_row_without_looking_at_keys(catalog: Catalog) -> None:
    load(catalog, APPEND_POSTS, posts("p1", "p2"), "aaa")
    summary = load(catalog, APPEND_POSTS, pl.concat([posts("p1"), posts("p1")]), "bbb")
    assert (summary.inserted, summary.duplicates_in_file) == (2, 0)
    assert rows_of(catalog, APPEND_POSTS).height == 4


# --- layout and pruning -----------------------------------------------------------------------


def test_files_are_one_partition_each_sorted_by_key_and_cut_at_the_target_size(catalog: Catalog) -> None:
    # GIVEN a target of 4 rows per file
    set_target_file_rows(catalog, POSTS, 4)

    # WHEN 10 January and 3 February posts arrive in no particular order
    january = posts(*(f"p{i:02d}" for i in (7, 2, 9, 0, 5, 1, 8, 3, 6, 4)), posted=date(2026, 1, 10))
    february = posts("q2", "q0", "q1", posted=date(2026, 2, 3))
    load(catalog, POSTS, pl.concat([january, february]), "aaa")

    # THEN January is cut into 3 balanced files of consecutive keys, February is one file
    files = sorted(
        (f.partition[0], f.lower_bounds[2], f.upper_bounds[2], f.record_count)
        for f in (task.file for task in table_of(catalog).scan().plan_files())
    )
    assert files == [
        (672, b"p00", b"p03", 4),
        (672, b"p04", b"p06", 3),
        (672, b"p07", b"p09", 3),
        (673, b"q0", b"q2", 3),
    ]


def test_rows_without_a_partition_value_get_a_partition_of_their_own(catalog: Catalog) -> None:
    # GIVEN posts with and without a posted date
    undated = posts("u2", "u1").with_columns(pl.lit(None, pl.Date).alias("posted_date"))
    load(catalog, POSTS, pl.concat([posts("p2", "p1"), undated]), "aaa")

    # THEN each partition has its file, each key range sorted, and every row reads back
    files = sorted(
        (str(f.partition[0]), f.lower_bounds[2], f.upper_bounds[2])
        for f in (task.file for task in table_of(catalog).scan().plan_files())
    )
    assert files == [("672", b"p1", b"p2"), ("None", b"u1", b"u2")]
    assert rows_of(catalog).height == 4


def test_only_files_whose_key_ranges_can_hold_the_batch_keys_are_read(catalog: Catalog) -> None:
    # GIVEN files covering p00-p03, p04-p07, p08-p11
    set_target_file_rows(catalog, POSTS, 4)
    load(catalog, POSTS, posts(*(f"p{i:02d}" for i in range(12))), "aaa")
    table = table_of(catalog)

    def candidates(frame: pl.DataFrame) -> list[tuple[bytes, bytes]]:
        incoming = with_lineage(frame, POSTS, identity("x"), datetime.now(UTC))
        found = candidate_files(table, POSTS, incoming, LiveFiles(table))
        return sorted((t.file.lower_bounds[2], t.file.upper_bounds[2]) for t in found)

    # THEN a batch touching the middle range reads one file, one outside every range reads none
    assert candidates(posts("p05", "p06")) == [(b"p04", b"p07")]
    assert candidates(posts("p02", "p10")) == [(b"p00", b"p03"), (b"p08", b"p11")]
    assert candidates(posts("zz1")) == []
    # AND the creator (second key part) prunes too
    assert candidates(posts("p05", creator="zed")) == []


def test_a_batch_with_null_key_parts_reads_the_files_that_hold_nulls(catalog: Catalog) -> None:
    # GIVEN a file of restaurants with a phone and one of restaurants without
    frame = pl.DataFrame(
        {name: [None, None] for name in RESTAURANTS.column_names},
        schema=dict.fromkeys(RESTAURANTS.column_names, pl.String),
    ).with_columns(
        pl.Series("restaurant_name", ["Lucali", "Lucali"]),
        pl.Series("city", ["Brooklyn", "Brooklyn"]),
        pl.Series("phone", ["+17188580042", None]),
        pl.lit(None, pl.Int64).alias("followers"),
        pl.lit(None, pl.Int64).alias("posts_count"),
    )
    load(catalog, RESTAURANTS, frame, "aaa")

    # WHEN the same rows come again
    summary = load(catalog, RESTAURANTS, frame, "bbb")

    # THEN both are recognised, the null-phone one included
    assert (summary.inserted, summary.skipped) == (0, 2)


# --- the commit loop --------------------------------------------------------------------------


def race_before_each_commit(
    monkeypatch: pytest.MonkeyPatch,
    competitor: Callable[[int], object],
    times: int | None = None,
    where: ModuleType = commit_module,
) -> list[int]:
    """Run ``competitor`` (a real concurrent commit) right before our commit (``where``'s), ``times`` times."""
    real = commit_module.commit_staged
    raced: list[int] = []
    inside = False

    def racing(pending: Any) -> None:
        nonlocal inside
        if not inside and (times is None or len(raced) < times):
            inside = True
            try:
                competitor(len(raced))
            finally:
                inside = False
            raced.append(1)
        real(pending)

    monkeypatch.setattr(where, "commit_staged", racing)
    return raced


def test_a_lost_commit_is_retried_against_the_new_snapshot(
    catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a competing loader that commits p2 between our merge plan and our commit
    load(catalog, POSTS, posts("p1"), "aaa")
    race_before_each_commit(monkeypatch, lambda _: load(catalog, POSTS, posts("p2"), "competitor"), times=1)

    # WHEN our batch (p2, p3) loses that race
    summary = load(catalog, POSTS, posts("p2", "p3"), "ours")

    # THEN the merge was recomputed: p2 (now stored) is skipped, p3 inserted, no duplicate key
    assert (summary.inserted, summary.skipped) == (1, 1)
    stored = rows_of(catalog)
    assert sorted(stored["post_id"]) == ["p1", "p2", "p3"]
    # AND each source is in one snapshot, and the lost attempt left no file behind
    markers = [props[MARKER_SHA256] for _, props in loaded_snapshots(table_of(catalog))]
    assert sorted(markers) == ["aaa", "competitor", "ours"]
    assert parquet_on_disk(settings) == data_files(catalog)


def test_endless_conflicts_end_in_a_transient_commit_conflict(
    catalog: Catalog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN other loaders that commit before each of our attempts
    race_before_each_commit(monkeypatch, lambda n: load(catalog, POSTS, posts(f"other{n}"), f"other-{n}"))

    # WHEN our load loses three times in a row
    with pytest.raises(CommitConflict, match=r"3 commits to instagram_db\.posts") as raised:
        load(catalog, POSTS, posts("p1"), "aaa", attempts=3)

    # THEN the error is transient (the state machine retries), and nothing of ours is in the table
    assert raised.value.transient
    assert find_loaded(table_of(catalog), "aaa") is None
    assert "p1" not in rows_of(catalog)["post_id"].to_list()
    assert parquet_on_disk(settings) == data_files(catalog)


def test_maintenance_between_planning_and_reading_makes_the_load_re_plan(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two small files, and maintenance (compaction, then expiry of all but the newest snapshot)
    # that runs after our load planned which files to read, and before it reads them (once)
    load(catalog, POSTS, posts("p1"), "one")
    load(catalog, POSTS, posts("p2"), "two")
    real = commit_module.read_files
    maintained: list[str] = []

    def maintenance_first(*args: Any, **kwargs: Any) -> Any:
        if not maintained:
            maintained.append("done")
            compact(catalog, (NS, "posts"))
            expire_snapshots(catalog, (NS, "posts"), older_than=datetime.now(UTC) + timedelta(days=1), retain_last=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(commit_module, "read_files", maintenance_first)

    # WHEN our load of p1 (stored) and p3 (new) finds its planned files deleted
    summary = load(catalog, POSTS, posts("p1", "p3"), "ours")

    # THEN it re-planned against the compacted snapshot: p1 skipped, p3 inserted, nothing doubled
    assert maintained
    assert (summary.inserted, summary.skipped) == (1, 1)
    assert sorted(rows_of(catalog)["post_id"]) == ["p1", "p2", "p3"]


def test_a_data_file_missing_from_the_current_snapshot_is_not_mistaken_for_a_race(catalog: Catalog) -> None:
    # GIVEN a table whose only data file was deleted behind Iceberg's back (no newer snapshot)
    load(catalog, POSTS, posts("p1"), "one")
    [path] = data_files(catalog)
    Path(path).unlink()

    # WHEN a load needs to read it THEN the load fails rather than retry forever or load blind
    with pytest.raises(FileNotFoundError):
        load(catalog, POSTS, posts("p1", "p2"), "two")
    assert find_loaded(table_of(catalog), "two") is None


def test_compaction_that_keeps_losing_to_loads_says_so(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN small files to compact, and a loader that commits before each compaction commit
    for n in range(3):
        load(catalog, POSTS, posts(f"p{n}"), f"load-{n}")
    real = maintain_module._commit_swap
    raced: list[int] = []

    def load_first(*args: Any, **kwargs: Any) -> None:
        raced.append(1)
        load(catalog, POSTS, posts(f"racer{len(raced)}"), f"racer-{len(raced)}")
        real(*args, **kwargs)

    monkeypatch.setattr(maintain_module, "_commit_swap", load_first)

    # WHEN compaction runs out of attempts
    with pytest.raises(CommitConflict, match=r"instagram_db\.posts: compaction lost 5 commits") as raised:
        compact(catalog, (NS, "posts"))

    # THEN it says so (transient: worth running again) instead of reporting "compacted 0"; rows intact
    assert raised.value.transient
    assert len(raced) == 5
    assert rows_of(catalog).height == 3 + 5


def test_snapshot_expiry_that_keeps_losing_to_loads_says_so(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN snapshots to expire, and a loader that commits inside each expiry commit (after the
    # catalog read the table, before it swaps the metadata pointer: expiry asserts nothing else)
    for n in range(3):
        load(catalog, POSTS, posts(f"p{n}"), f"load-{n}")
    real = catalog._write_metadata  # type: ignore[attr-defined]
    raced: list[int] = []
    racing = False

    def load_in_between(*args: Any, **kwargs: Any) -> None:
        nonlocal racing
        real(*args, **kwargs)
        # not the racer's own commit, nor the ledger's (expiry records markers there first)
        if not racing and "icegate_loads" not in str(kwargs.get("metadata_path", args[-1] if args else "")):
            racing = True
            try:
                raced.append(1)
                load(catalog, POSTS, posts(f"racer{len(raced)}"), f"racer-{len(raced)}")
            finally:
                racing = False

    monkeypatch.setattr(catalog, "_write_metadata", load_in_between)

    # WHEN expiry runs out of attempts
    with pytest.raises(CommitConflict, match=r"instagram_db\.posts: snapshot expiry lost 5 commits") as raised:
        expire_snapshots(catalog, (NS, "posts"), older_than=datetime.now(UTC) + timedelta(days=1), retain_last=1)

    # THEN it says so instead of reporting "expired 0", and nothing was expired
    assert raised.value.transient
    assert len(table_of(catalog).metadata.snapshots) == 3 + 5


def test_upserts_replacing_files_in_many_partitions_survive_thread_switches(catalog: Catalog) -> None:
    # GIVEN one row in each of 40 daily partitions, each in its own manifest
    daily = dataclasses.replace(PRICES, name="daily", partition=(("scraped_on", "day"),))
    table = ensure_table(catalog, daily, NS)
    table.transaction().set_properties({"commit.manifest-merge.enabled": "false"}).commit_transaction()
    days = [date(2025, 1, 1) + timedelta(days=i) for i in range(40)]
    for i, day in enumerate(days):
        load(catalog, daily, prices(day, **{f"item{i:02d}": i}), f"day-{i}", attempts=1)

    # WHEN every row is updated, with threads switching as often as the interpreter allows (the
    # commit checks manifests from a thread pool; pyiceberg's own overwrite then loses track of one)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(3):
            update = pl.concat([prices(day, **{f"item{i:02d}": 100 * (round_ + 1)}) for i, day in enumerate(days)])
            load(catalog, daily, update, f"update-{round_}", attempts=1)
    finally:
        sys.setswitchinterval(interval)

    # THEN every commit went through at the first attempt, and each key holds its last value
    stored = rows_of(catalog, daily)
    assert stored.height == 40
    assert set(stored["price"]) == {300}


# --- the contract -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "insert_new", "ordering_column": "scraped_on"}, "applies to the 'upsert' strategy"),
        ({"ordering_column": "scraped_at"}, "is not a column"),
        ({"ordering_column": "shop"}, "is part of the key"),
        ({"key": ()}, "declares no key columns"),
    ],
    ids=["ordering-without-upsert", "unknown-ordering-column", "ordering-column-in-key", "no-key"],
)
def test_a_contract_with_an_unusable_merge_setup_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PRICES, **changes)


# --- maintenance ------------------------------------------------------------------------------


def test_compaction_merges_small_files_into_key_sorted_ones_without_changing_rows(catalog: Catalog) -> None:
    # GIVEN six small loads into one partition
    for n in range(6):
        load(catalog, POSTS, posts(f"p{n}a", f"p{n}b"), f"load-{n}")
    before = rows_of(catalog).sort("post_id")
    assert len(data_files(catalog)) == 6

    # WHEN the table is compacted
    replaced, written = compact(catalog, (NS, "posts"))

    # THEN one file holds the same rows, and loads are still recognised
    assert (replaced, written) == (6, 1)
    assert len(data_files(catalog)) == 1
    assert rows_of(catalog).sort("post_id").equals(before)
    assert load(catalog, POSTS, posts("p0a", "p0b"), "load-0", run="rerun").already_loaded


def test_expiring_snapshots_deletes_what_only_they_used_and_keeps_their_markers(
    catalog: Catalog, settings: Settings
) -> None:
    # GIVEN three loads, the first two of them upserts whose files were rewritten since
    load(catalog, UPSERT_POSTS, posts("p1", likes=1), "one")
    load(catalog, UPSERT_POSTS, posts("p1", likes=2), "two")
    load(catalog, UPSERT_POSTS, posts("p1", likes=3), "three")
    assert len(parquet_on_disk(settings)) == 3

    # WHEN every snapshot but the newest is expired
    expired, deleted = expire_snapshots(
        catalog, (NS, "posts"), older_than=datetime.now(UTC) + timedelta(days=1), retain_last=1
    )

    # THEN the files only old snapshots referenced are gone, the data is intact
    assert expired == 2
    assert deleted > 0
    assert parquet_on_disk(settings) == data_files(catalog, UPSERT_POSTS)
    assert rows_of(catalog, UPSERT_POSTS)["likes"].to_list() == [3]
    # AND a rerun of an expired load is still recognised as already loaded
    assert len(table_of(catalog, UPSERT_POSTS).metadata.snapshots) == 1
    rerun = load(catalog, UPSERT_POSTS, posts("p1", likes=1), "one", run="rerun")
    assert rerun.already_loaded
    assert rows_of(catalog, UPSERT_POSTS)["likes"].to_list() == [3]


def test_orphan_removal_deletes_old_unreferenced_files_only(catalog: Catalog, settings: Settings) -> None:
    # GIVEN a loaded table and an old stray data file (a crashed loader's) next to its files
    load(catalog, POSTS, posts("p1"), "aaa")
    referenced = data_files(catalog)
    stray = Path(next(iter(referenced)).removeprefix("file://")).with_name("stray.parquet")
    stray.write_bytes(b"not committed")

    # WHEN orphans younger than a minute are protected
    assert remove_orphan_files(table_of(catalog), older_than=datetime.now(UTC) - timedelta(minutes=1)) == 0
    # AND then everything older than now is fair game
    removed = remove_orphan_files(table_of(catalog), older_than=datetime.now(UTC) + timedelta(seconds=1))

    # THEN only the stray file went
    assert removed == 1
    assert not stray.exists()
    assert parquet_on_disk(settings) == referenced
    assert rows_of(catalog).height == 1


@pytest.mark.parametrize(
    ("months", "ranks"),
    [([5, None, 3, 5, None], [3, 1, 2, 3, 1]), ([None, None], [1, 1]), ([2, 1, 2], [2, 1, 2])],
    ids=["nulls-first", "all-null", "no-null"],
)
def test_files_are_ordered_by_partition_rank_alike_for_one_partition_column_or_several(
    months: list[int | None], ranks: list[int]
) -> None:
    # GIVEN rows' partition values, alone and beside a second partition column that is the same everywhere
    frame = pl.DataFrame({"month": pl.Series(months, dtype=pl.Int32), "region": [1] * len(months)})

    # THEN both rank partitions densely from 1, a null partition first
    assert _partition_rank(frame, ["month"]).to_list() == ranks
    assert _partition_rank(frame, ["month", "region"]).to_list() == ranks
