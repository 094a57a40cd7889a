"""``icegate maintain``: compaction, snapshot expiry and orphan removal on a table loaded by ``icegate run``."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from icegate.cli import main
from icegate.lake import build_catalog
from icegate.settings import Settings
from tests.conftest import SAMPLES

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


def test_orphan_removal_younger_than_a_day_is_refused_unless_forced(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN a loaded table and a data file a running load has written but not committed yet
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(SAMPLES / POSTS_CSV, landing / POSTS_CSV)
    assert icegate("run", str(landing / POSTS_CSV), "--lake", str(lake)).exit_code == 0
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
