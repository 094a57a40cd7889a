"""The loader's Iceberg side, against a real SqlCatalog on SQLite (no mocks of Iceberg)."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from icegate.datasets import get_dataset
from icegate.errors import CommitConflict
from icegate.lake import (
    MARKER_FILE,
    MARKER_SHA256,
    SourceIdentity,
    build_catalog,
    ensure_table,
    find_loaded,
    load_batch,
    plan_insert_new,
)
from icegate.settings import Settings

POSTS = get_dataset("posts")
RESTAURANTS = get_dataset("restaurants")


def posts(*ids: str, creator: str = "alice", likes: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            **{name: [None] * len(ids) for name in POSTS.column_names},
            "post_id": list(ids),
            "creator": [creator] * len(ids),
            "posted_date": [date(2026, 1, 10)] * len(ids),
            "likes": [likes] * len(ids),
            "comments": [0] * len(ids),
            "post_url": [f"https://www.instagram.com/p/{i}/" for i in ids],
        },
        schema_overrides={"posted_date": pl.Date, "likes": pl.Int64, "comments": pl.Int64},
    ).select(POSTS.column_names)


def identity(sha: str, run: str = "run-1") -> SourceIdentity:
    return SourceIdentity(sha256=sha, file=f"s3://landing/{sha}.csv", version="v1", run_id=run)


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    from pathlib import Path

    Path(settings.lake_root).mkdir(parents=True)
    return build_catalog(settings)


def rows_of(catalog: Catalog, table: str = "posts") -> pl.DataFrame:
    frame = pl.from_arrow(catalog.load_table(("instagram_db", table)).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def test_first_load_creates_the_table_with_lineage_and_no_internal_commit_retries(catalog: Catalog) -> None:
    # GIVEN an empty catalog
    # WHEN a batch is loaded
    summary = load_batch(catalog, POSTS, posts("p1", "p2"), identity("aaa"), namespace="instagram_db")

    # THEN the table exists with our commit protocol and partition spec, and carries lineage
    table = catalog.load_table(("instagram_db", "posts"))
    assert table.properties["commit.retry.num-retries"] == "0"
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
    load_batch(catalog, POSTS, posts("p1", "p2", likes=5), identity("aaa"), namespace="instagram_db")

    # WHEN a later file brings p2 (changed) and p3
    summary = load_batch(catalog, POSTS, posts("p2", "p3", likes=9), identity("bbb"), namespace="instagram_db")

    # THEN only p3 is inserted; the stored p2 keeps its first values
    assert (summary.inserted, summary.skipped) == (1, 1)
    stored = rows_of(catalog).sort("post_id")
    assert stored["post_id"].to_list() == ["p1", "p2", "p3"]
    assert stored["likes"].to_list() == [5, 5, 9]


def test_same_post_id_from_another_creator_is_a_different_key(catalog: Catalog) -> None:
    load_batch(catalog, POSTS, posts("p1", creator="alice"), identity("aaa"), namespace="instagram_db")
    summary = load_batch(catalog, POSTS, posts("p1", creator="bob"), identity("bbb"), namespace="instagram_db")
    assert summary.inserted == 1
    assert rows_of(catalog).height == 2


def test_duplicate_keys_inside_one_file_keep_the_last_row_and_are_counted(catalog: Catalog) -> None:
    batch = pl.concat([posts("p1", likes=1), posts("p2"), posts("p1", likes=7)])
    summary = load_batch(catalog, POSTS, batch, identity("aaa"), namespace="instagram_db")
    assert (summary.inserted, summary.duplicates_in_file) == (2, 1)
    assert rows_of(catalog).filter(pl.col("post_id") == "p1")["likes"].to_list() == [7]


def test_rerun_of_the_same_content_is_a_no_op_reporting_the_original_snapshot(catalog: Catalog) -> None:
    # GIVEN a file already loaded
    first = load_batch(catalog, POSTS, posts("p1", "p2"), identity("same-hash", "run-1"), namespace="instagram_db")
    snapshots_before = len(catalog.load_table(("instagram_db", "posts")).metadata.snapshots)

    # WHEN the same content arrives again (another run, even under another version)
    again = load_batch(catalog, POSTS, posts("p1", "p2"), identity("same-hash", "run-2"), namespace="instagram_db")

    # THEN nothing is committed and the original snapshot is reported
    assert again.already_loaded
    assert again.snapshot_id == first.snapshot_id
    assert again.inserted == 0
    assert len(catalog.load_table(("instagram_db", "posts")).metadata.snapshots) == snapshots_before
    assert rows_of(catalog).height == 2


def test_a_file_whose_rows_all_exist_still_records_its_marker(catalog: Catalog) -> None:
    load_batch(catalog, POSTS, posts("p1"), identity("aaa"), namespace="instagram_db")
    summary = load_batch(catalog, POSTS, posts("p1"), identity("bbb"), namespace="instagram_db")
    table = catalog.load_table(("instagram_db", "posts"))
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
    load_batch(catalog, RESTAURANTS, frame, identity("aaa"), namespace="instagram_db")

    # WHEN another file has the same restaurant, still without a phone
    summary = load_batch(catalog, RESTAURANTS, frame, identity("bbb"), namespace="instagram_db")

    # THEN it is recognised as the same key
    assert (summary.inserted, summary.skipped) == (0, 1)
    assert rows_of(catalog, "restaurants").height == 1


def test_plan_insert_new_on_an_empty_table_keeps_every_row() -> None:
    batch = posts("p1", "p2")
    new_rows, skipped = plan_insert_new(
        batch, pl.DataFrame(schema={"post_id": pl.String, "creator": pl.String}), POSTS.key
    )
    assert (new_rows.height, skipped) == (2, 0)


def test_ensure_table_is_idempotent(catalog: Catalog) -> None:
    first = ensure_table(catalog, POSTS, "instagram_db")
    second = ensure_table(catalog, POSTS, "instagram_db")
    assert first.metadata.table_uuid == second.metadata.table_uuid


def test_a_commit_conflict_is_retried_against_the_new_snapshot(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a competing writer that commits p2 just before our first commit attempt
    load_batch(catalog, POSTS, posts("p1"), identity("aaa"), namespace="instagram_db")
    real_append = Table.append
    calls = {"n": 0}

    def racing_append(self: Table, df: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            load_batch(catalog, POSTS, posts("p2"), identity("competitor"), namespace="instagram_db")
            raise CommitFailedException("the table changed underneath")
        real_append(self, df, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Table, "append", racing_append)

    # WHEN our batch (p2, p3) loses the first race
    summary = load_batch(
        catalog, POSTS, posts("p2", "p3"), identity("ours"), namespace="instagram_db", backoff_seconds=0
    )

    # THEN the merge was recomputed: p2 (now stored) is skipped, p3 inserted, no duplicate key
    assert (summary.inserted, summary.skipped) == (1, 1)
    stored = rows_of(catalog)
    assert sorted(stored["post_id"]) == ["p1", "p2", "p3"]


def test_endless_conflicts_end_in_a_transient_commit_conflict(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_conflicts(self: Table, *args: object, **kwargs: object) -> None:
        raise CommitFailedException("conflict")

    ensure_table(catalog, POSTS, "instagram_db")
    monkeypatch.setattr(Table, "append", always_conflicts)
    with pytest.raises(CommitConflict, match=r"3 commits to instagram_db\.posts") as raised:
        load_batch(
            catalog, POSTS, posts("p1"), identity("aaa"), namespace="instagram_db", attempts=3, backoff_seconds=0
        )
    assert raised.value.transient
