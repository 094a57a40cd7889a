"""Loads survive schema change: columns added, renamed or dropped by other tools, and contracts that gain columns.

A real SqlCatalog on SQLite; other tools are played by pyiceberg's own ``update_schema`` and
``append``. Every evolved table is also read by DuckDB's ``iceberg_scan`` (an independent Iceberg
reader, resolving columns by field id), which must see the same rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import IntegerType, LongType, NestedField, StringType

from icegate.datasets import Column, Dataset, get_dataset
from icegate.errors import UnsafeSchemaChange
from icegate.lake import SourceIdentity, build_catalog, find_loaded, load_batch
from icegate.lake import commit as commit_module
from icegate.lake.catalog import MERGE_KEY_PROPERTY, TABLE_PROPERTIES, iceberg_schema, partition_spec
from icegate.settings import Settings
from tests.duckdb_reader import iceberg_scan
from tests.frames import posts_frame

POSTS = get_dataset("posts")
UPSERT_POSTS = dataclasses.replace(POSTS, strategy="upsert")
NS = "instagram_db"


def posts(*ids: str, likes: int = 1, caption: str | None = None) -> pl.DataFrame:
    return posts_frame(*ids, likes=likes, caption=caption, hashtags="#food")


def load(catalog: Catalog, dataset: Dataset, frame: pl.DataFrame, sha: str) -> Any:
    identity = SourceIdentity(sha256=sha, file=f"s3://landing/{sha}.csv", version=None, run_id=f"run-{sha}")
    return load_batch(catalog, dataset, frame.select(dataset.column_names), identity, namespace=NS, backoff_seconds=0)


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    Path(settings.lake_root).mkdir(parents=True)
    return build_catalog(settings)


def table_of(catalog: Catalog) -> Table:
    return catalog.load_table((NS, "posts"))


def rows_of(catalog: Catalog) -> pl.DataFrame:
    frame = pl.from_arrow(table_of(catalog).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("post_id")


def duckdb_rows(table: Table) -> pl.DataFrame:
    """The table's current snapshot as DuckDB's own Iceberg reader sees it."""
    return iceberg_scan(table.metadata_location, order_by="post_id")


def assert_readers_agree(catalog: Catalog, rows: int) -> pl.DataFrame:
    """pyiceberg and DuckDB read the same columns and rows; returns DuckDB's view."""
    ours, theirs = rows_of(catalog), duckdb_rows(table_of(catalog))
    assert ours.height == theirs.height == rows
    assert theirs.columns == ours.columns
    assert theirs.select("post_id", "likes").equals(ours.select("post_id", "likes"), null_equal=True)
    return theirs


# --- the table changed under the contract ---------------------------------------------------------


@pytest.mark.parametrize("dataset", [POSTS, UPSERT_POSTS], ids=["insert_new", "upsert"])
def test_a_column_added_by_another_tool_is_kept_and_filled_with_nulls(catalog: Catalog, dataset: Dataset) -> None:
    # GIVEN a loaded table to which another tool added a column and appended a row that fills it
    load(catalog, dataset, posts("p1", "p2"), "first")
    table = table_of(catalog)
    with table.update_schema() as update:
        update.add_column("reach", LongType())
    other = pl.from_arrow(table.scan().to_arrow()).filter(pl.col("post_id") == "p1")  # type: ignore[union-attr]
    table.append(other.with_columns(post_id=pl.lit("p3"), reach=pl.lit(42, pl.Int64)).to_arrow())

    # WHEN the contract, which knows nothing of that column, loads p1 (stored) and p4 (new)
    summary = load(catalog, dataset, posts("p1", "p4", likes=9), "second")

    # THEN the load went through; the other tool's value is intact and our rows have a null there
    assert summary.inserted == 1
    assert summary.updated + summary.skipped == 1
    stored = assert_readers_agree(catalog, rows=4)
    assert dict(stored.select("post_id", "reach").iter_rows()) == {"p1": None, "p2": None, "p3": 42, "p4": None}
    expected_p1_likes = 9 if dataset.strategy == "upsert" else 1
    assert dict(stored.select("post_id", "likes").iter_rows())["p1"] == expected_p1_likes


def test_a_column_renamed_by_another_tool_keeps_receiving_the_contract_column(catalog: Catalog) -> None:
    # GIVEN a table whose caption column another tool renamed to post_caption
    load(catalog, UPSERT_POSTS, posts("p1", caption="old"), "first")
    with table_of(catalog).update_schema() as update:
        update.rename_column("caption", "post_caption")

    # WHEN the contract (still saying caption) upserts p1 and adds p2
    load(catalog, UPSERT_POSTS, posts("p1", "p2", caption="new"), "second")

    # THEN the captions land in the renamed column (same field id), and no second caption column appears
    stored = assert_readers_agree(catalog, rows=2)
    assert "caption" not in stored.columns
    assert stored["post_caption"].to_list() == ["new", "new"]


def test_a_renamed_ordering_column_still_decides_which_row_is_newer(catalog: Catalog) -> None:
    # GIVEN posts upserted by likes (more is newer), p1 stored with 7, then likes renamed by another tool
    by_likes = dataclasses.replace(UPSERT_POSTS, ordering_column="likes")
    load(catalog, by_likes, posts("p1", likes=7), "first")
    with table_of(catalog).update_schema() as update:
        update.rename_column("likes", "like_count")

    # WHEN a newer row (10) and then an older one (5) arrive
    newer = load(catalog, by_likes, posts("p1", likes=10), "newer")
    older = load(catalog, by_likes, posts("p1", likes=5), "older")

    # THEN the stored value was read through the rename: 10 replaced 7, and 5 was skipped
    assert (newer.updated, older.skipped) == (1, 1)
    stored = duckdb_rows(table_of(catalog))
    assert stored["like_count"].to_list() == [10]
    assert rows_of(catalog)["like_count"].to_list() == [10]


def test_a_column_dropped_by_another_tool_comes_back_for_new_rows(catalog: Catalog) -> None:
    # GIVEN a table whose hashtags column another tool dropped
    load(catalog, POSTS, posts("p1"), "first")
    with table_of(catalog).update_schema() as update:
        update.delete_column("hashtags")

    # WHEN the contract, which still carries hashtags, loads p2
    load(catalog, POSTS, posts("p2"), "second")

    # THEN the column is added again (new field id): old rows lost theirs with the drop, new rows keep theirs
    stored = assert_readers_agree(catalog, rows=2)
    assert stored["hashtags"].to_list() == [None, "#food"]


# --- the contract changed -------------------------------------------------------------------------


def test_a_column_the_contract_gains_is_added_to_the_table_on_the_next_load(catalog: Catalog) -> None:
    # GIVEN a table loaded under the contract as it was
    load(catalog, POSTS, posts("p1"), "first")
    schema_before = table_of(catalog).schema()

    # WHEN a new version of the contract with a reach column loads p2
    with_reach = dataclasses.replace(POSTS, columns=(*POSTS.columns, Column("reach", "long")))
    load(catalog, with_reach, posts("p2").with_columns(reach=pl.lit(7, pl.Int64)), "second")

    # THEN the table has an optional reach column, null for the old row
    field = table_of(catalog).schema().find_field("reach")
    assert (field.field_type, field.required) == (LongType(), False)
    assert field.field_id > schema_before.highest_field_id
    stored = assert_readers_agree(catalog, rows=2)
    assert stored["reach"].to_list() == [None, 7]


def test_an_int_column_is_widened_to_the_contracts_long(catalog: Catalog) -> None:
    # GIVEN a posts table made by an older contract that stored likes as int, holding one row
    old_schema = iceberg_schema(POSTS)
    fields = [
        NestedField(f.field_id, f.name, IntegerType() if f.name == "likes" else f.field_type, required=False)
        for f in old_schema.fields
    ]
    schema = type(old_schema)(*fields)
    catalog.create_namespace(NS)
    table = catalog.create_table(
        (NS, "posts"),
        schema=schema,
        partition_spec=partition_spec(POSTS, schema),
        properties={**TABLE_PROPERTIES, MERGE_KEY_PROPERTY: ",".join(POSTS.key)},
    )
    table.append(pa.Table.from_pylist([{"post_id": "p1", "creator": "alice", "likes": 5}], schema.as_arrow()))

    # WHEN today's contract (likes: long) loads a row with a count beyond int's range
    load(catalog, POSTS, posts("p2", likes=3_000_000_000), "big")

    # THEN likes became long in place (no rewrite), and both rows read back
    assert table_of(catalog).schema().find_field("likes").field_type == LongType()
    stored = assert_readers_agree(catalog, rows=2)
    assert stored["likes"].to_list() == [5, 3_000_000_000]


def test_a_schema_change_racing_ours_makes_the_load_refit_and_succeed(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN another tool that adds a column just before our schema change commits (once)
    load(catalog, POSTS, posts("p1"), "first")
    real = commit_module.evolve_table
    raced: list[bool] = []

    def racing(table: Table, *args: Any, **kwargs: Any) -> Any:
        if not raced:
            raced.append(True)
            with table_of(catalog).update_schema() as update:
                update.add_column("mood", StringType())
        return real(table, *args, **kwargs)

    monkeypatch.setattr(commit_module, "evolve_table", racing)

    # WHEN a contract that gained reach loads p2 against the stale schema
    with_reach = dataclasses.replace(POSTS, columns=(*POSTS.columns, Column("reach", "long")))
    summary = load(catalog, with_reach, posts("p2").with_columns(reach=pl.lit(7, pl.Int64)), "second")

    # THEN our schema change lost, was redone on the new schema, and both columns are there
    assert summary.inserted == 1
    stored = assert_readers_agree(catalog, rows=2)
    assert {"mood", "reach"} <= set(stored.columns)
    assert stored["reach"].to_list() == [None, 7]


# --- a table made by another tool ------------------------------------------------------------------


def test_a_table_made_by_another_tool_is_given_what_a_safe_load_needs_and_a_lost_race_duplicates_nothing(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a posts table another tool made without icegate's properties (pyiceberg would retry a lost commit
    # itself, re-applying the append unchecked), and a rival load of the same keys landing just before ours commits
    catalog.create_namespace(NS)
    catalog.create_table((NS, "posts"), schema=iceberg_schema(POSTS))
    real = commit_module.commit_staged
    raced: list[bool] = []

    def racing(pending: Any) -> None:
        if not raced:
            raced.append(True)
            load(catalog, POSTS, posts("p1", "p2"), "rival")
        real(pending)

    monkeypatch.setattr(commit_module, "commit_staged", racing)

    # WHEN a file of the same keys loads
    summary = load(catalog, POSTS, posts("p1", "p2", "p3"), "ours")

    # THEN the table now says how it is merged and that pyiceberg must not retry, and our load re-planned:
    # the rival's keys are skipped, each key is stored once
    assert raced
    assert rows_of(catalog)["post_id"].to_list() == ["p1", "p2", "p3"]
    assert (summary.inserted, summary.skipped) == (1, 2)
    assert table_of(catalog).properties[MERGE_KEY_PROPERTY] == ",".join(POSTS.key)
    assert table_of(catalog).properties["commit.retry.num-retries"] == "0"


# --- unsafe changes are refused, naming the column --------------------------------------------------


LIKES_AS_TEXT = dataclasses.replace(
    POSTS, columns=tuple(dataclasses.replace(c, type="string") if c.name == "likes" else c for c in POSTS.columns)
)


def _rename_key(table: Table) -> None:
    with table.update_schema() as update:
        update.rename_column("creator", "author")


def _drop_key(table: Table) -> None:
    with table.update_schema() as update:
        update.delete_column("creator")


@pytest.mark.parametrize(
    ("contract", "tool", "message"),
    [
        (
            LIKES_AS_TEXT,
            None,
            r"column 'likes'.*stores column 'likes' as long but the contract declares string",
        ),
        (dataclasses.replace(POSTS, key=("post_id",)), None, r"merged on \(post_id, creator\).*key is \(post_id\)"),
        (POSTS, _rename_key, r"column 'creator'.*key column 'creator' was renamed to 'author'"),
        (POSTS, _drop_key, r"column 'creator'.*key column 'creator' was dropped"),
    ],
    ids=["changed-type", "changed-key", "key-column-renamed", "key-column-dropped"],
)
def test_an_unsafe_schema_change_is_a_terminal_error_naming_the_column(
    catalog: Catalog, contract: Dataset, tool: Callable[[Table], None] | None, message: str
) -> None:
    # GIVEN a loaded table, possibly changed by another tool
    load(catalog, POSTS, posts("p1"), "first")
    if tool is not None:
        tool(table_of(catalog))
    before = table_of(catalog).metadata

    # WHEN a load under a contract that no longer fits arrives
    with pytest.raises(UnsafeSchemaChange, match=message) as raised:
        load(catalog, contract, posts("p2"), "second")

    # THEN it is terminal (dead-lettered, not retried), names the file, and nothing was committed
    assert not raised.value.transient
    assert "s3://landing/second.csv" in str(raised.value)
    after = table_of(catalog)
    assert after.metadata.current_schema_id == before.current_schema_id
    assert after.current_snapshot() == before.current_snapshot()
    assert find_loaded(after, "second") is None
