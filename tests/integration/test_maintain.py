"""``icegate maintain``: compaction, manifest rewrite, snapshot expiry and orphan removal on a loaded table."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from click.testing import CliRunner, Result

from icegate.cli import main
from icegate.lake import SourceIdentity, build_catalog, load_batch
from icegate.lake.maintain import maintain, rewrite_manifests
from icegate.settings import Settings
from tests.conftest import SAMPLES
from tests.duckdb_reader import iceberg_scan
from tests.frames import POSTS, posts_frame

if TYPE_CHECKING:
    from pyiceberg.table import Table

POSTS_CSV = "post_results_20260113_175319.csv"
POSTS_XLSX = "post_results_20260115_081500.xlsx"


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_maintain_compacts_and_expires_and_reruns_are_still_recognised(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN two posts files loaded one after the other (two small files per partition, two snapshots)
    landing = tmp_path / "landing"
    landing.mkdir()
    for name in (POSTS_CSV, POSTS_XLSX):
        shutil.copy(SAMPLES / name, landing / name)
        assert icegate("run", str(landing / name), "--lake", str(lake)).exit_code == 0
    table = build_catalog(settings).load_table(("instagram_db", "posts"))
    rows_before = table.scan().to_arrow().sort_by("post_id")
    files_before = len(list(table.scan().plan_files()))

    # WHEN the table is maintained, expiring everything but the newest snapshot
    result = icegate("maintain", "posts", "--lake", str(lake), "--expire-older-than", "0m", "--retain-last", "1")

    # THEN it says what it did, the rows are unchanged, with fewer files and one snapshot left
    assert result.exit_code == 0, result.output
    assert "instagram_db.posts: compacted" in result.output
    table = build_catalog(settings).load_table(("instagram_db", "posts"))
    assert table.scan().to_arrow().sort_by("post_id").equals(rows_before)
    assert len(list(table.scan().plan_files())) < files_before
    assert len(table.metadata.snapshots) == 1

    # AND a rerun of a file whose snapshot expired is still reported as already loaded
    rerun = icegate("run", str(landing / POSTS_CSV), "--lake", str(lake))
    assert rerun.exit_code == 0
    assert "already loaded" in rerun.output


def test_maintain_names_a_missing_table(lake: Path, settings: Settings) -> None:
    # GIVEN a lake whose catalog exists but holds no such table
    lake.mkdir()
    build_catalog(settings).create_namespace_if_not_exists(settings.namespace)
    result = CliRunner().invoke(main, ["maintain", "nosuch", "--lake", str(lake)])
    assert result.exit_code == 1
    assert "no table instagram_db.nosuch in the catalog" in result.output


def test_maintain_refuses_a_duration_it_cannot_read(lake: Path) -> None:
    result = CliRunner().invoke(main, ["maintain", "posts", "--lake", str(lake), "--expire-older-than", "a week"])
    assert result.exit_code == 2
    assert "is not a duration like 30m, 12h or 7d" in result.output


def load_the_posts_sample(lake: Path, tmp_path: Path) -> None:
    """Load the posts sample into ``lake`` from a landing folder of its own."""
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(SAMPLES / POSTS_CSV, landing / POSTS_CSV)
    assert icegate("run", str(landing / POSTS_CSV), "--lake", str(lake)).exit_code == 0


def test_orphan_removal_younger_than_a_day_is_refused_unless_forced(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN a loaded table and a data file a running load has written but not committed yet
    load_the_posts_sample(lake, tmp_path)
    table = build_catalog(settings).load_table(("instagram_db", "posts"))
    committed = next(iter(table.scan().plan_files())).file.file_path
    uncommitted = Path(committed).with_name("00000-0-still-loading.parquet")
    uncommitted.write_bytes(b"a loader's file, about to be committed")

    # WHEN maintenance is asked to remove every orphan, however young
    refused = CliRunner().invoke(main, ["maintain", "posts", "--lake", str(lake), "--orphans-older-than", "0m"])

    # THEN it refuses (a usage error naming the option and why), and the loader's file survives
    assert refused.exit_code == 2
    assert "--orphans-older-than" in refused.output
    assert "load that has not committed yet" in refused.output
    assert uncommitted.exists()

    # AND forced (no load running), it goes, and the table stays readable
    forced = icegate("maintain", "posts", "--lake", str(lake), "--orphans-older-than", "0m", "--force")
    assert forced.exit_code == 0, forced.output
    assert "1 orphan files" in forced.output
    assert not uncommitted.exists()
    assert build_catalog(settings).load_table(("instagram_db", "posts")).scan().to_arrow().num_rows > 0


def test_maintain_removes_what_killed_runs_left_in_processing_and_spares_running_ones(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN a loaded lake whose processing/ holds the folder of a run killed 4 days ago, the folder of a run
    # still going (a file written now beside one from 4 days ago), and group-commit waiting entries, one a
    # killed loader's from 4 days ago, one of a loader taking its turn now
    load_the_posts_sample(lake, tmp_path)
    processing = lake / "processing"
    four_days_ago = time.time() - 4 * 86_400

    def written(path: Path, when: float | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"scratch")
        if when is not None:
            os.utime(path, (when, when))
        return path

    killed = written(processing / "local-killed" / "valid.parquet", four_days_ago).parent
    written(processing / "local-killed" / "parsed.parquet", four_days_ago)
    os.utime(killed, (four_days_ago, four_days_ago))
    running = written(processing / "local-running" / "parsed.parquet", four_days_ago).parent
    written(running / "valid.parquet")
    os.utime(running, (four_days_ago, four_days_ago))
    stale_entry = written(processing / "_waiting" / "posts" / "000000000000001-local-killed.json", four_days_ago)
    live_entry = written(processing / "_waiting" / "posts" / "000000000000002-local-running.json")

    # WHEN the table is maintained with the default orphan age (3 days)
    result = icegate("maintain", "posts", "--lake", str(lake), "--json")

    # THEN the killed run's folder and the killed loader's entry are gone, and the document says how many
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["processing_removed"] == 2
    assert not killed.exists()
    assert not stale_entry.exists()
    # AND the running run's folder (all of it) and the live entry are untouched
    assert sorted(p.name for p in running.iterdir()) == ["parsed.parquet", "valid.parquet"]
    assert live_entry.exists()


def test_maintain_keeps_processing_when_orphans_are_kept(lake: Path, tmp_path: Path) -> None:
    # GIVEN a loaded lake and the folder of a run killed 4 days ago
    load_the_posts_sample(lake, tmp_path)
    killed = lake / "processing" / "local-killed"
    killed.mkdir(parents=True)
    (killed / "valid.parquet").write_bytes(b"scratch")
    four_days_ago = time.time() - 4 * 86_400
    for path in (killed / "valid.parquet", killed):
        os.utime(path, (four_days_ago, four_days_ago))

    # WHEN maintenance is told to keep orphans
    result = icegate("maintain", "posts", "--lake", str(lake), "--orphans-older-than", "off", "--json")

    # THEN it removes nothing from processing/ either
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["processing_removed"] == 0
    assert (killed / "valid.parquet").exists()


def _upserted_table(lake: Path, settings: Settings, loads: int) -> Table:
    """A posts table (as an upsert) after ``loads`` loads that each rewrite the previous load's keys."""
    lake.mkdir()
    catalog = build_catalog(settings)
    upsert = dataclasses.replace(POSTS, strategy="upsert")
    for n in range(loads):
        # Each batch repeats half of the previous one's keys: the files holding them are rewritten (an
        # overwrite); batches fall in six months, so files accumulate in each month's partition.
        keys = (f"P{k:04d}" for k in range(n * 5, n * 5 + 10))
        frame = posts_frame(*keys, likes=n, posted=date(2026, 1 + n % 6, 10))
        identity = SourceIdentity(sha256=f"{n:064x}", file=f"batch-{n}", version=None, run_id=f"run-{n}")
        load_batch(catalog, upsert, frame, identity, namespace=settings.namespace)
    return catalog.load_table((settings.namespace, POSTS.table))


def test_manifest_rewrite_merges_the_manifests_upserts_left_and_changes_no_row(lake: Path, settings: Settings) -> None:
    # GIVEN a table after 20 upserts: an overwrite never merges manifests, so there are many
    table = _upserted_table(lake, settings, 20)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    manifests_before = len(snapshot.manifests(table.io))
    assert manifests_before > 5
    files_before = sorted(task.file.file_path for task in table.scan().plan_files())
    rows_before = iceberg_scan(table.metadata_location, "post_id")

    # WHEN maintenance rewrites the manifests
    merged, written = rewrite_manifests(build_catalog(settings), (settings.namespace, POSTS.table))

    # THEN they are merged into one (the table is far below 8 MB of manifests), in a "replace" snapshot
    table = build_catalog(settings).load_table((settings.namespace, POSTS.table))
    snapshot = table.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary is not None
    assert snapshot.summary.operation.value == "replace"
    assert (merged, written) == (manifests_before, 1)
    assert len(snapshot.manifests(table.io)) == 1
    # AND the same data files hold the same rows, as an independent reader sees them
    assert sorted(task.file.file_path for task in table.scan().plan_files()) == files_before
    assert iceberg_scan(table.metadata_location, "post_id").equals(rows_before)
    # AND a second rewrite finds nothing to do and commits nothing
    assert rewrite_manifests(build_catalog(settings), (settings.namespace, POSTS.table)) == (0, 0)
    assert build_catalog(settings).load_table((settings.namespace, POSTS.table)).current_snapshot() == snapshot


def test_compaction_packs_the_manifests_in_its_own_snapshot(lake: Path, settings: Settings) -> None:
    # GIVEN a table after 20 upserts (many small files, many manifests)
    table = _upserted_table(lake, settings, 20)
    rows_before = table.scan().to_arrow().sort_by("post_id")
    snapshots_before = len(table.metadata.snapshots)

    # WHEN it is maintained (nothing expires)
    report = maintain(build_catalog(settings), (settings.namespace, POSTS.table), orphans_older_than=None)

    # THEN compaction left one manifest, in its one snapshot (no separate rewrite), and the rows are unchanged
    assert report.files_compacted > 0
    assert report.manifests_before > 5
    assert report.manifests_after == 1
    table = build_catalog(settings).load_table((settings.namespace, POSTS.table))
    assert len(table.metadata.snapshots) == snapshots_before + 1
    snapshot = table.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary is not None
    assert snapshot.summary.operation.value == "overwrite"
    assert len(snapshot.manifests(table.io)) == 1
    assert table.scan().to_arrow().sort_by("post_id").equals(rows_before)


def test_maintain_without_files_to_compact_still_packs_the_manifests(lake: Path, settings: Settings) -> None:
    # GIVEN a table whose small files were compacted, then more upserts of keys in a single file
    _upserted_table(lake, settings, 20)
    maintain(build_catalog(settings), (settings.namespace, POSTS.table), orphans_older_than=None)
    catalog = build_catalog(settings)
    upsert = dataclasses.replace(POSTS, strategy="upsert")
    for n in range(20, 26):
        identity = SourceIdentity(sha256=f"{n:064x}", file=f"batch-{n}", version=None, run_id=f"run-{n}")
        load_batch(catalog, upsert, posts_frame("P0000", likes=n), identity, namespace=settings.namespace)

    # WHEN it is maintained again: each partition holds one file, so there is no file to compact
    report = maintain(catalog, (settings.namespace, POSTS.table), orphans_older_than=None)

    # THEN nothing was compacted, yet the manifests the upserts left were packed into one
    assert report.files_compacted == 0
    assert report.manifests_before > 1
    assert report.manifests_after == 1
