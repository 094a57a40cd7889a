"""End to end through ``icegate run``: the four stages, the DLQ and the Iceberg tables, locally."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

from icegate import pipeline
from icegate import storage as pipeline_storage
from icegate.cli import main
from icegate.constants import TRANSIENT_RETRIES, TRANSIENT_RETRY_MAX_DELAY_SECONDS
from icegate.errors import CommitConflict
from icegate.lake import build_catalog
from icegate.payloads import SourceObject
from icegate.settings import QUALITY_DIMENSIONS, Settings, load_settings
from tests.conftest import SAMPLES
from tests.garbage import GARBAGE_POSTS_NAME, garbage_posts_csv

POSTS_CSV = "post_results_20260113_175319.csv"
RESTAURANTS_CSV = "instagram_results_20260114_093000.csv"
POSTS_XLSX = "post_results_20260115_081500.xlsx"
MISSING_COLUMNS = "post_results_20260116_120000.csv"


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def table_rows(settings: Settings, table: str) -> pl.DataFrame:
    frame = pl.from_arrow(build_catalog(settings).load_table(("instagram_db", table)).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def snapshot_count(settings: Settings, table: str) -> int:
    return len(build_catalog(settings).load_table(("instagram_db", table)).metadata.snapshots)


def dlq_entries(lake: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((lake / "dlq").rglob("error.json"))]


def copy_sample(name: str, folder: Path, as_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SAMPLES / name, folder / (as_name or name)))


def test_the_bundled_samples_land_where_expected(lake: Path, settings: Settings) -> None:
    # GIVEN the bundled samples and their expected outcomes
    # WHEN they are ingested
    result = icegate("run", str(SAMPLES), "--lake", str(lake), "--expect", str(SAMPLES.parent / "expected.json"))

    # THEN every file ended as expected (the bad sample in the DLQ) and the command says so
    assert result.exit_code == 0, result.output
    assert "every file ended as expected.json expects" in result.output

    # AND the posts table holds the distinct valid posts of both posts files
    posts = table_rows(settings, "posts")
    csv_valid_keys = 23  # 28 rows - 4 rejected - 1 duplicate key
    xlsx_new_keys = 5  # 7 rows, 2 already loaded from the CSV
    assert posts.height == csv_valid_keys + xlsx_new_keys
    assert posts.select("post_id", "creator").is_duplicated().sum() == 0
    # the in-file duplicate kept its last row
    assert posts.filter(pl.col("post_id") == "C1a2B3c4D5e")["likes"].to_list() == [12600]
    assert set(posts["source_file"]) == {str(SAMPLES / POSTS_CSV), str(SAMPLES / POSTS_XLSX)}
    assert posts["run_id"].str.starts_with("local-").all()

    # AND restaurants were normalised: posts -> posts_count, 12.5K followers, phone and handle formats
    restaurants = table_rows(settings, "restaurants")
    joes = restaurants.filter(pl.col("restaurant_name") == "Joe's Pizza")
    assert joes.height == 1, "the reformatted phone makes the second Joe's row the same key"
    assert joes.select("followers", "posts_count", "phone").row(0) == (12600, 1210, "+12123661182")
    prince = restaurants.filter(pl.col("restaurant_name") == "Prince Street Pizza").row(0, named=True)
    assert (prince["followers"], prince["instagram_handle"]) == (1_200_000, "@prince_st_pizza")

    # AND the file missing columns is in the DLQ with its reason, nothing of it loaded
    (entry,) = dlq_entries(lake)
    assert entry["error_type"] == "SchemaMismatch"
    assert entry["stage"] == "parse"
    assert "post_url" in str(entry["message"])
    assert MISSING_COLUMNS in str(entry["message"])
    assert (lake / "dlq" / "posts" / str(entry["run_id"]) / MISSING_COLUMNS).read_bytes() == (
        SAMPLES / MISSING_COLUMNS
    ).read_bytes()
    assert "C6a1BcD2eF3" not in posts["post_id"].to_list()


def test_rejected_rows_are_kept_with_their_reasons(lake: Path) -> None:
    icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))
    (rejected_file,) = (lake / "dlq" / "posts").rglob("rejected.parquet")
    rejected = pl.read_parquet(rejected_file)
    by_row = {r["row_number"]: r for r in rejected.iter_rows(named=True)}
    assert by_row[21]["likes"] == "lots"
    assert "likes:type(long)" in by_row[21]["failed_checks"]
    assert "comments:greater_than_or_equal_to(0)" in by_row[22]["failed_checks"]
    assert "post_id:not_nullable" in by_row[23]["failed_checks"]

    listing = icegate("dlq", "--lake", str(lake))
    assert "rows rejected" in listing.output


def test_the_same_file_twice_adds_no_rows_and_says_already_loaded(lake: Path, settings: Settings) -> None:
    # GIVEN a loaded posts file
    first = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))
    assert first.exit_code == 0, first.output
    rows, snapshots = table_rows(settings, "posts").height, snapshot_count(settings, "posts")

    # WHEN the same file runs again
    second = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))

    # THEN it is reported as already loaded, and neither rows nor snapshots were added
    assert second.exit_code == 0
    assert "already loaded" in second.output
    assert table_rows(settings, "posts").height == rows
    assert snapshot_count(settings, "posts") == snapshots


def test_a_restaurant_with_another_vanity_phone_is_not_skipped_as_existing(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    """Regression: both phones normalised to "555", so the second restaurant was skipped as stored."""
    header = "restaurant_name,city,phone,instagram_handle,followers,posts,bio,website,status"
    files = []
    for stamp, phone in (("20260114", "555-CALL-NOW"), ("20260115", "555-EAT-GOOD")):
        files.append(tmp_path / f"instagram_results_{stamp}_093000.csv")
        files[-1].write_text(f"{header}\nRoma,Austin,{phone},@roma,100,10,,https://roma.example,found\n")

    # GIVEN one Roma in Austin loaded  WHEN a file has a Roma in Austin with another vanity phone
    for file in files:
        result = icegate("run", str(file), "--lake", str(lake))
        assert result.exit_code == 0, result.output

    # THEN it is a second restaurant, each phone stored as the digits it dials
    assert sorted(table_rows(settings, "restaurants")["phone"]) == ["5552255669", "5553284663"]


def test_a_file_under_the_quality_threshold_goes_to_the_dlq_with_its_report(
    lake: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a posts table already holding a clean file, and a threshold flawed files cannot meet
    icegate("run", str(SAMPLES / POSTS_XLSX), "--lake", str(lake))
    snapshots = snapshot_count(settings, "posts")
    monkeypatch.setenv("ICEGATE_QUALITY_THRESHOLD_POSTS", "99.5")
    load_settings.cache_clear()

    # WHEN a file with flawed rows arrives
    result = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))

    # THEN it is dead-lettered at the gate with the quality report, and nothing was committed
    assert result.exit_code == 1
    (entry,) = dlq_entries(lake)
    assert entry["error_type"] == "QualityGateFailed"
    assert entry["stage"] == "gate"
    assert "99.5" in str(entry["message"])
    assert str(entry["message"]).count("threshold") == 1, "the message says it once"
    report = entry["quality"]
    assert isinstance(report, dict)
    assert report["passed"] is False
    assert {d["name"] for d in report["dimensions"]} == set(QUALITY_DIMENSIONS)
    assert snapshot_count(settings, "posts") == snapshots


def test_a_file_whose_every_row_is_rejected_is_dead_lettered_as_no_valid_rows(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    """Issue 8: this file used to score 90/70 and be "loaded" with 0 rows, exit 0."""
    # GIVEN 20 posts, each with negative likes, an ftp:// URL, a 2099 date and status '??'
    source = tmp_path / "in" / GARBAGE_POSTS_NAME
    source.parent.mkdir()
    source.write_bytes(garbage_posts_csv())

    # WHEN it is run
    result = icegate("run", str(source), "--lake", str(lake))

    # THEN it is dead-lettered at the score stage as NoValidRows, saying why and where the rejected rows are
    assert result.exit_code == 1, result.output
    assert "NoValidRows" in result.output
    (entry,) = dlq_entries(lake)
    assert (entry["stage"], entry["error_type"]) == ("score", "NoValidRows")
    message = str(entry["message"])
    assert str(source) in message
    assert "rejected all 20 rows" in message
    assert "likes:greater_than_or_equal_to(0) (20 rows)" in message
    folder = lake / "dlq" / "posts" / str(entry["run_id"])
    assert str(folder / "rejected.parquet") in message
    assert sorted(p.name for p in folder.iterdir()) == sorted([GARBAGE_POSTS_NAME, "error.json", "rejected.parquet"])
    assert entry["rows"] == {"rows": 20, "rows_valid": 0, "rows_rejected": 20}

    # AND nothing was loaded: no table was even created
    assert not build_catalog(settings).table_exists(("instagram_db", "posts"))


def test_a_file_with_one_valid_row_among_garbage_fails_the_gate_on_the_validity_floor(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN the garbage file with one clean row added (so there is something the loader could load)
    clean = "pizza,P1,alice,2026-01-10,10,2,#pizza,lunch,a pizza,https://www.instagram.com/p/P1/,success\n"
    source = tmp_path / "in" / GARBAGE_POSTS_NAME
    source.parent.mkdir()
    source.write_bytes(garbage_posts_csv() + clean.encode())

    # WHEN it is run
    result = icegate("run", str(source), "--lake", str(lake))

    # THEN the gate refuses it because validity collapsed (1 of 21 rows), whatever the score
    assert result.exit_code == 1, result.output
    (entry,) = dlq_entries(lake)
    assert (entry["stage"], entry["error_type"]) == ("gate", "QualityGateFailed")
    assert "validity 0.0476 < floor 0.5" in str(entry["message"])
    assert not build_catalog(settings).table_exists(("instagram_db", "posts"))


def test_an_unknown_file_name_ends_in_dlq_unknown(lake: Path, tmp_path: Path) -> None:
    source = copy_sample(POSTS_CSV, tmp_path / "in", as_name="menu_export.csv")
    result = icegate("run", str(source), "--lake", str(lake))
    assert result.exit_code == 1
    (entry,) = dlq_entries(lake)
    assert entry["error_type"] == "UnknownDataset"
    assert entry["dataset"] == "unknown"
    assert (lake / "dlq" / "unknown" / str(entry["run_id"]) / "menu_export.csv").exists()
    assert "post_results_*" in str(entry["message"])


def test_a_missing_required_column_fails_the_file_without_a_snapshot(lake: Path, settings: Settings) -> None:
    icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))
    snapshots = snapshot_count(settings, "posts")
    result = icegate("run", str(SAMPLES / MISSING_COLUMNS), "--lake", str(lake))
    assert result.exit_code == 1
    assert "SchemaMismatch" in result.output
    assert snapshot_count(settings, "posts") == snapshots
    assert not list((lake / "processing").glob("*/*")), "processing files are cleaned up locally"


def test_tables_lists_row_counts_and_snapshots(lake: Path) -> None:
    icegate("run", str(SAMPLES), "--lake", str(lake))
    listing = icegate("tables", "--lake", str(lake))
    assert listing.exit_code == 0
    assert "instagram_db.posts" in listing.output
    assert "instagram_db.restaurants" in listing.output


def test_every_command_has_help() -> None:
    for command in ([], ["run"], ["tables"], ["dlq"]):
        result = icegate(*command, "--help")
        assert result.exit_code == 0
        assert "Usage:" in result.output


@pytest.mark.parametrize(
    ("conflicts", "outcome"),
    [(1, "loaded"), (TRANSIENT_RETRIES + 1, "dead_lettered")],
    ids=["one-conflict-is-retried", "endless-conflicts-are-dead-lettered"],
)
def test_the_local_runner_retries_transient_errors_like_the_state_machine(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, conflicts: int, outcome: str
) -> None:
    # GIVEN a loader that loses its commit race `conflicts` times (waits recorded, not slept)
    waits: list[float] = []
    monkeypatch.setattr(pipeline.time, "sleep", waits.append)
    real_load = pipeline.run_load
    failures = iter(range(conflicts))

    def flaky_load(*args: Any, **kwargs: Any) -> Any:
        if next(failures, None) is not None:
            raise CommitConflict("the table moved on", file="posts")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_load", flaky_load)

    # WHEN a file runs
    result = pipeline.LocalRunner(settings).run(SourceObject(bucket="", key=str(SAMPLES / POSTS_XLSX)))

    # THEN it is retried with capped, jittered backoff, up to the state machine's retry count
    assert result.outcome == outcome
    assert len(waits) == min(conflicts, TRANSIENT_RETRIES)
    assert all(0 <= w <= TRANSIENT_RETRY_MAX_DELAY_SECONDS for w in waits)
    if outcome == "dead_lettered":
        assert result.dead_letter is not None
        assert (result.dead_letter.stage, result.dead_letter.error_type) == ("load", "CommitConflict")


def test_dlq_lists_reasons_verbatim_even_when_they_look_like_markup(lake: Path, tmp_path: Path) -> None:
    # GIVEN a dead-lettered file whose name holds square brackets (rich would read them as markup)
    source = copy_sample(POSTS_CSV, tmp_path / "in", as_name="menu [bold]export.csv")
    icegate("run", str(source), "--lake", str(lake))

    # WHEN the DLQ is listed
    listing = icegate("dlq", "--lake", str(lake))

    # THEN the file name and reason appear as written
    assert listing.exit_code == 0
    assert "menu [bold]export.csv" in listing.output.replace("\n", "")
    assert "UnknownDataset" in listing.output


def test_the_runner_hands_stages_over_in_memory_and_writes_no_processing_files(
    lake: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN every Parquet file the storage writes is recorded
    written: list[str] = []
    real_write = pipeline_storage.pq.write_table

    def recording_write(table: Any, where: Any, **kwargs: Any) -> None:
        written.append(str(where))
        real_write(table, where, **kwargs)

    monkeypatch.setattr(pipeline_storage.pq, "write_table", recording_write)
    # WHEN a file with rejected rows runs through every stage
    result = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))
    assert result.exit_code == 0, result.output
    # THEN it loaded, no processing/ object was ever written, and the rejected rows were (to the DLQ)
    assert table_rows(settings, "posts").height > 0
    assert not [w for w in written if "/processing/" in w]
    assert any(w.endswith("rejected.parquet") and "/dlq/" in w for w in written)
    assert not (lake / "processing").exists()


def test_keep_processing_still_writes_every_intermediate_object(lake: Path) -> None:
    # GIVEN --keep-processing  WHEN a file runs through every stage
    result = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake), "--keep-processing")
    assert result.exit_code == 0, result.output
    # THEN the run's processing/ folder holds what the Lambdas would have written, readable as such
    (run_folder,) = (lake / "processing").iterdir()
    assert {p.name for p in run_folder.iterdir()} >= {"parsed.parquet", "valid.parquet", "quality.json"}
    parsed = pl.read_parquet(run_folder / "parsed.parquet")
    valid = pl.read_parquet(run_folder / "valid.parquet")
    assert parsed.height > valid.height > 0
    assert json.loads((run_folder / "quality.json").read_text())["rows"] == parsed.height
