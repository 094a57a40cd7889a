"""The local runner's dead-letter path: no file is ever lost, one failure never stops the run, reruns reuse."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from click.testing import CliRunner, Result

from icegate import pipeline
from icegate.cli import main
from icegate.constants import TRANSIENT_RETRIES
from icegate.lake import build_catalog
from icegate.lake import catalog as lake_catalog
from icegate.payloads import SourceObject
from icegate.settings import Settings
from tests.conftest import SAMPLES
from tests.garbage import GARBAGE_POSTS_NAME, garbage_posts_csv

POSTS_CSV = "post_results_20260113_175319.csv"
RESTAURANTS_CSV = "instagram_results_20260114_093000.csv"
MISSING_COLUMNS = "post_results_20260116_120000.csv"


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def error_jsons(lake: Path) -> list[Path]:
    return sorted((lake / "dlq").rglob("error.json"))


def test_a_failing_dead_letter_step_fails_that_file_and_the_run_goes_on(lake: Path, tmp_path: Path) -> None:
    # GIVEN a bad posts file, a good restaurants file, and a lake where nothing can be filed under dlq/posts
    inbox = tmp_path / "in"
    inbox.mkdir()
    for name in (MISSING_COLUMNS, RESTAURANTS_CSV):
        shutil.copy(SAMPLES / name, inbox / name)
    (lake / "dlq").mkdir(parents=True)
    (lake / "dlq" / "posts").write_text("a file where the posts folder should be")

    # WHEN both run in one command
    result = icegate("run", str(inbox), "--lake", str(lake))

    # THEN the bad file is reported as failed (not in the DLQ), without a traceback; the exit code says so
    assert result.exit_code == 1
    assert f"FAILED {MISSING_COLUMNS}, not dead-lettered" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    # AND the good file was still loaded
    table = build_catalog(Settings(lake_root=str(lake))).load_table(("instagram_db", "restaurants"))
    assert table.scan().to_arrow().num_rows > 0


def test_the_runner_reports_the_failed_file_with_both_reasons(lake: Path) -> None:
    # GIVEN a lake whose dlq/ is not a folder
    lake.mkdir(parents=True)
    (lake / "dlq").write_text("not a folder")

    # WHEN a bad file runs
    outcome = pipeline.LocalRunner(Settings(lake_root=str(lake))).run(
        SourceObject(bucket="", key=str(SAMPLES / MISSING_COLUMNS))
    )

    # THEN its outcome is "failed", naming the original error and the dead-letter step's
    assert outcome.outcome == "failed"
    assert outcome.dead_letter is None
    assert "required column(s) likes, post_url missing" in outcome.error
    assert "dead-letter step failed too" in outcome.error


def test_a_local_file_gone_before_its_run_is_filed_with_its_reason(lake: Path, tmp_path: Path) -> None:
    # GIVEN a file that disappears before its run (a folder listed, then cleaned by another process)
    gone = tmp_path / "in" / POSTS_CSV

    # WHEN it runs
    outcome = pipeline.LocalRunner(Settings(lake_root=str(lake))).run(SourceObject(bucket="", key=str(gone)))

    # THEN it is dead-lettered: error.json says it does not exist and that there was nothing to copy
    assert outcome.outcome == "dead_lettered"
    (error_file,) = error_jsons(lake)
    error = json.loads(error_file.read_text())
    assert (error["stage"], error["error_type"]) == ("parse", "SourceNotFound")
    assert error["copy"]["status"] == "failed"
    assert sorted(p.name for p in error_file.parent.iterdir()) == ["error.json"]


@pytest.mark.parametrize("name", ["error.json", "rejected.parquet", "ERROR.JSON"])
def test_a_file_named_like_a_dlq_record_keeps_its_copy_beside_the_records(
    lake: Path, tmp_path: Path, name: str
) -> None:
    # GIVEN a scraped file whose name is one of the records the dead letter writes in its folder (matching no
    # dataset, so it is dead-lettered)
    scraped = tmp_path / "in" / name
    scraped.parent.mkdir()
    scraped.write_bytes(b'[{"restaurant": "scraped payload that must be kept"}]')

    # WHEN it runs
    outcome = pipeline.LocalRunner(Settings(lake_root=str(lake))).run(SourceObject(bucket="", key=str(scraped)))

    # THEN its copy is kept under the name the rule gives it, beside an error.json that is still the record
    assert outcome.outcome == "dead_lettered"
    (error_file,) = error_jsons(lake)
    copy = error_file.parent / f"source-{name}"
    assert sorted(p.name for p in error_file.parent.iterdir()) == sorted(["error.json", copy.name])
    assert copy.read_bytes() == scraped.read_bytes()
    error = json.loads(error_file.read_text())
    assert (error["error_type"], error["copy"]) == ("UnknownDataset", {"status": "copied"})
    assert error["dead_letter_uri"] == str(copy)
    # AND a rerun of the folder runs the copy, not the record
    assert [s.key for s in pipeline.local_sources([error_file.parent], lake).files] == [str(copy)]


def test_rerunning_a_dead_lettered_file_reuses_its_entry(lake: Path) -> None:
    # GIVEN a bad file already dead-lettered
    first = icegate("run", str(SAMPLES / MISSING_COLUMNS), "--lake", str(lake))
    assert first.exit_code == 1
    (entry,) = error_jsons(lake)

    # WHEN it is run twice more, unchanged
    for _ in range(2):
        again = icegate("run", str(SAMPLES / MISSING_COLUMNS), "--lake", str(lake))
        assert again.exit_code == 1

    # THEN the DLQ still holds the one entry, which counts the reruns
    assert error_jsons(lake) == [entry]
    assert {p.name for p in (lake / "dlq" / "posts").iterdir()} == {entry.parent.name, "_index"}
    error = json.loads(entry.read_text())
    assert error["rerun_count"] == 2
    assert len(error["reruns"]) == 2
    # AND `icegate dlq` lists it once
    listing = icegate("dlq", "--lake", str(lake))
    assert listing.output.count(MISSING_COLUMNS) == 1


def test_rerunning_a_gate_failure_leaves_no_folder_of_rejected_rows_behind(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a flawed file dead-lettered at the gate (its rejected rows filed with it)
    monkeypatch.setenv("ICEGATE_QUALITY_THRESHOLD_POSTS", "99.5")
    icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))
    (entry,) = error_jsons(lake)

    # WHEN it is rerun
    icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))

    # THEN the first folder is the only one, and still holds the rejected rows
    assert {p.name for p in (lake / "dlq" / "posts").iterdir()} == {entry.parent.name, "_index"}
    assert pl.read_parquet(entry.parent / "rejected.parquet").height == 4


@pytest.mark.parametrize("streamed", [False, True], ids=["held-whole", "streamed"])
def test_rerunning_a_file_with_no_valid_row_reuses_its_entry(
    lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    # GIVEN a file whose every row is rejected, dead-lettered as NoValidRows (its message names where this run
    # filed the rejected rows)
    if streamed:
        monkeypatch.setenv("ICEGATE_STREAM_ABOVE_BYTES", "1")
    source = tmp_path / "in" / GARBAGE_POSTS_NAME
    source.parent.mkdir()
    source.write_bytes(garbage_posts_csv())
    icegate("run", str(source), "--lake", str(lake))
    (entry,) = error_jsons(lake)
    assert json.loads(entry.read_text())["error_type"] == "NoValidRows"

    # WHEN it is rerun, unchanged
    again = icegate("run", str(source), "--lake", str(lake))

    # THEN the rerun is counted on the first entry, which keeps its rejected rows; no second folder is filed
    assert again.exit_code == 1
    assert error_jsons(lake) == [entry]
    assert {p.name for p in (lake / "dlq" / "posts").iterdir()} == {entry.parent.name, "_index"}
    assert json.loads(entry.read_text())["rerun_count"] == 1
    assert pl.read_parquet(entry.parent / "rejected.parquet").height == 20


def test_changed_content_under_the_same_name_is_filed_anew(lake: Path, tmp_path: Path) -> None:
    # GIVEN a bad file dead-lettered once
    inbox = tmp_path / "in"
    inbox.mkdir()
    bad = inbox / MISSING_COLUMNS
    shutil.copy(SAMPLES / MISSING_COLUMNS, bad)
    icegate("run", str(bad), "--lake", str(lake))

    # WHEN the scraper rewrites it, still bad but different
    bad.write_bytes(bad.read_bytes() + b"extra,row,here,2026-01-16,1,caption\n")
    icegate("run", str(bad), "--lake", str(lake))

    # THEN there are two entries
    assert len(error_jsons(lake)) == 2


@pytest.mark.parametrize(
    ("failures", "outcome"),
    [(1, "loaded"), (TRANSIENT_RETRIES + 1, "dead_lettered")],
    ids=["catalog-back-after-one-failure-loads", "catalog-down-for-good-is-catalog-unavailable"],
)
def test_a_corrupt_catalog_is_retried_and_never_blamed_on_the_file(
    lake: Path, monkeypatch: pytest.MonkeyPatch, failures: int, outcome: str
) -> None:
    # GIVEN a lake whose catalog database is corrupt, repaired (removed) after `failures` load attempts
    lake.mkdir(parents=True)
    catalog_db = lake / "catalog.db"
    catalog_db.write_bytes(b"this is not a SQLite database\n" * 64)
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == failures:
            catalog_db.unlink()

    # The runner's backoff is recorded (pipeline.time is the runner's clock); the catalog's own short
    # retries of a fresh SQLite file are skipped.
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(sleep=wait, perf_counter=time.perf_counter))
    monkeypatch.setattr(lake_catalog, "time", SimpleNamespace(sleep=lambda seconds: None))

    # WHEN a good file runs
    result = pipeline.LocalRunner(Settings(lake_root=str(lake))).run(
        SourceObject(bucket="", key=str(SAMPLES / POSTS_CSV))
    )

    # THEN the load was retried as the state machine would, and either loaded or was filed as the catalog's fault
    assert result.outcome == outcome
    assert len(waits) == min(failures, TRANSIENT_RETRIES)
    if outcome == "dead_lettered":
        assert result.dead_letter is not None
        assert (result.dead_letter.stage, result.dead_letter.error_type) == ("load", "CatalogUnavailable")
        assert "the file is not at fault" in result.dead_letter.message
