"""Data files are cut to a size in bytes (``write.target-file-size-bytes``), on load and on compaction."""

from __future__ import annotations

import itertools
import random

import polars as pl
from pyiceberg.catalog import Catalog

from icegate.lake import ensure_table
from icegate.lake.catalog import DEFAULT_TARGET_FILE_SIZE_BYTES, TABLE_PROPERTIES, TARGET_FILE_SIZE_BYTES
from icegate.lake.maintain import compact
from tests.unit import test_lake
from tests.unit.test_lake import NS, POSTS, load, posts, rows_of, table_of

# The real catalog fixture of the lake tests (SqlCatalog on SQLite, temp warehouse).
catalog = test_lake.catalog

#: Small in tests; 128 MB by default.
TARGET = 64 * 1024


def captioned(ids: list[str], seed: int) -> pl.DataFrame:
    """Posts with captions that do not compress away, so that bytes on disk grow with the rows."""
    rng = random.Random(seed)
    return posts(*ids).with_columns(pl.Series("caption", [rng.randbytes(100).hex() for _ in ids]))


def set_target_bytes(catalog: Catalog, size: int) -> None:
    table = ensure_table(catalog, POSTS, NS)
    table.transaction().set_properties({TARGET_FILE_SIZE_BYTES: str(size)}).commit_transaction()


def files_by_key(catalog: Catalog) -> list[tuple[bytes, bytes, int, int]]:
    """(lowest post_id, highest post_id, bytes, rows) of each live data file, in key order."""
    return sorted(
        (f.lower_bounds[2], f.upper_bounds[2], f.file_size_in_bytes, f.record_count)
        for f in (task.file for task in table_of(catalog).scan().plan_files())
    )


def test_new_tables_aim_at_128_mb_files() -> None:
    # GIVEN the properties every icegate table is created with
    # THEN writers (ours, Spark, Athena) aim at Iceberg's target file size of 128 MB, with no row cap
    assert TABLE_PROPERTIES[TARGET_FILE_SIZE_BYTES] == str(DEFAULT_TARGET_FILE_SIZE_BYTES) == str(128 * 1024 * 1024)
    assert "icegate.target-file-rows" not in TABLE_PROPERTIES


def test_a_batch_is_cut_into_key_sorted_files_near_the_target_size(catalog: Catalog) -> None:
    # GIVEN a table whose target file size is 64 KB
    set_target_bytes(catalog, TARGET)

    # WHEN one batch of about 0.5 MB on disk (one partition) is loaded
    load(catalog, POSTS, captioned([f"p{i:05d}" for i in range(4000)], seed=1), "aaa")

    # THEN it is cut into several files, each near the target: none above it by more than a footer's worth,
    # none a sliver (balanced cuts)
    files = files_by_key(catalog)
    assert len(files) >= 4
    assert all(size <= TARGET * 1.15 for _, _, size, _ in files), [size for *_, size, _ in files]
    assert all(size >= TARGET * 0.6 for _, _, size, _ in files), [size for *_, size, _ in files]
    # AND the files are disjoint key ranges in order (what the loader's key-range pruning relies on)
    assert all(upper < next_lower for (_, upper, *_), (next_lower, *_) in itertools.pairwise(files))
    assert sum(rows for *_, rows in files) == 4000


def test_a_batch_smaller_than_the_target_is_one_file(catalog: Catalog) -> None:
    # GIVEN the default target (128 MB)
    # WHEN a small batch is loaded
    load(catalog, POSTS, captioned([f"p{i:05d}" for i in range(500)], seed=2), "aaa")
    # THEN it is one file
    assert len(files_by_key(catalog)) == 1


def test_compaction_merges_small_files_up_to_the_target_size(catalog: Catalog) -> None:
    # GIVEN a 64 KB target and eight loads of about 20 KB each (eight small files, keys interleaved)
    set_target_bytes(catalog, TARGET)
    for batch in range(8):
        load(catalog, POSTS, captioned([f"p{i:04d}{batch}" for i in range(150)], seed=batch), f"sha{batch}")
    before = files_by_key(catalog)
    assert len(before) == 8
    assert all(size < TARGET // 2 for _, _, size, _ in before)
    rows_before = rows_of(catalog).sort("post_id")

    # WHEN compaction runs
    replaced, written = compact(catalog, (NS, "posts"))

    # THEN the eight became a few files near the target, key-sorted and disjoint, holding the same rows
    after = files_by_key(catalog)
    assert (replaced, written) == (8, len(after))
    assert len(after) < len(before)
    assert all(size <= TARGET * 1.15 for _, _, size, _ in after), [size for *_, size, _ in after]
    assert sum(size for _, _, size, _ in after) / len(after) >= TARGET * 0.6
    assert all(upper < next_lower for (_, upper, *_), (next_lower, *_) in itertools.pairwise(after))
    assert rows_of(catalog).sort("post_id").equals(rows_before)


def test_compaction_can_target_another_size_than_the_table(catalog: Catalog) -> None:
    # GIVEN eight small files under the default 128 MB target
    for batch in range(8):
        load(catalog, POSTS, captioned([f"p{i:04d}{batch}" for i in range(150)], seed=batch), f"sha{batch}")

    # WHEN the maintainer compacts with a 64 KB target (its context's target_file_size_bytes)
    compact(catalog, (NS, "posts"), target_file_size_bytes=TARGET)

    # THEN the files are cut at 64 KB, not merged into one 128 MB-bound file
    after = files_by_key(catalog)
    assert len(after) > 1
    assert all(size <= TARGET * 1.15 for _, _, size, _ in after)
