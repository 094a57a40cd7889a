"""``icegate backfill``: the files already in a folder or an S3 prefix, each loaded exactly once, resumable.

Local folders through the CLI and ``icegate.backfill``; S3 against moto's server (``ThreadedMotoServer``,
which boto3 reaches through ``ICEGATE_S3_ENDPOINT``) with a real SQLite catalog in a local lake.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner, Result
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from benchmarks.generate import posts_frame
from icegate import backfill
from icegate.cli import main
from icegate.lake import build_catalog
from icegate.lake.ledger import ledger_table
from icegate.ledger import history
from icegate.pipeline import FileOutcome, LocalRunner
from icegate.settings import Settings, load_settings
from icegate.storage import Storage
from tests.conftest import SAMPLES
from tests.integration.aws_support import acting_as, create_principal, enforce_iam, s3_server
from tests.interrupts import ctrl_c, ctrl_c_as_the_first_load_starts

NAMESPACE = "instagram_db"
#: The README's ``backfill --json`` keys (the per-file ones under ``files``).
DOCUMENT_KEYS = {
    "source", "dry_run", "listed", "skipped", "to_run", "retried_dead_lettered", "over_limit", "ran", "loaded",
    "already_loaded", "dead_lettered", "failed", "interrupted", "listing_seconds", "seconds", "files_per_second",
    "files", "exit_code",
}  # fmt: skip
SKIPPED_KEYS = {"already_loaded", "dead_lettered_earlier", "unsupported", "other_suffix", "lake_files"}
FILE_KEYS = {"source", "status", "run_id", "last_modified", "size"}


def posts_csv(rows: int, first_id: int) -> bytes:
    """A posts file of ``rows`` posts with ids from ``first_id``: files with overlapping ids share keys."""
    return posts_frame(rows, id_offset=first_id).write_csv().encode()


def write_folder(folder: Path, count: int, rows: int = 10, step: int = 5) -> set[int]:
    """``count`` posts files, each overlapping the one before by ``rows - step`` ids, oldest first by
    modification time (in the reverse of name order, so the order comes from the times). Returns the ids."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        path = folder / f"post_results_20250101_{count - n:06d}.csv"
        path.write_bytes(posts_csv(rows, n * step))
        os.utime(path, (1_700_000_000 + n * 60, 1_700_000_000 + n * 60))
    return {i for n in range(count) for i in range(n * step, n * step + rows)}


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def document(result: Result) -> Any:
    return json.loads(result.stdout)


def post_ids(catalog: Catalog) -> list[str]:
    return sorted(catalog.load_table((NAMESPACE, "posts")).scan().to_arrow()["post_id"].to_pylist())


def expected_ids(ids: set[int]) -> list[str]:
    return sorted(f"P{i:09d}" for i in ids)


def ledger_rows(catalog: Catalog) -> int:
    return history(catalog, NAMESPACE).height


def test_a_folder_backfill_loads_every_file_and_a_second_one_skips_them_all(tmp_path: Path, lake: Path) -> None:
    """GIVEN a folder of 4 posts files and a lake never ingested into
    WHEN it is backfilled twice
    THEN the first loads every file (oldest first) and the second runs none: the ledger and table are unchanged.
    """
    ids = write_folder(tmp_path / "history", 4)

    first = icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--json")

    report = document(first)
    assert first.exit_code == report["exit_code"] == 0
    assert set(report) == DOCUMENT_KEYS
    assert set(report["skipped"]) == SKIPPED_KEYS
    assert all(set(f) - {"error"} == FILE_KEYS for f in report["files"])
    assert (report["listed"], report["to_run"], report["loaded"], report["ran"]) == (4, 4, 4, 4)
    # oldest first: the modification times run against the names
    names = [Path(f["source"]).name for f in report["files"]]
    assert names == sorted(names, reverse=True)
    assert "icegate backfill" in first.stderr
    catalog = build_catalog(Settings(lake_root=str(lake)))
    assert post_ids(catalog) == expected_ids(ids)
    rows_before = ledger_rows(catalog)
    snapshots_before = len(catalog.load_table((NAMESPACE, "posts")).metadata.snapshots)

    second = document(icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--json"))

    assert (second["ran"], second["skipped"]["already_loaded"], second["exit_code"]) == (0, 4, 0)
    assert {f["status"] for f in second["files"]} == {"skipped_loaded"}
    catalog = build_catalog(Settings(lake_root=str(lake)))
    assert ledger_rows(catalog) == rows_before
    assert len(catalog.load_table((NAMESPACE, "posts")).metadata.snapshots) == snapshots_before


@pytest.mark.parametrize("interrupt_after", [1, 3], ids=["after-the-first-file", "after-three-files"])
def test_an_interrupted_backfill_resumes_with_only_the_remaining_files(
    tmp_path: Path, settings: Settings, interrupt_after: int
) -> None:
    """GIVEN a backfill of 5 files interrupted (Ctrl-C) after K of them
    WHEN the same backfill runs again
    THEN it runs exactly the 5 - K others, and the table holds each file's rows once.
    """
    ids = write_folder(tmp_path / "history", 5)
    runner = LocalRunner(settings)

    finished: list[FileOutcome] = []

    def ctrl_c_after_k_files(outcome: FileOutcome) -> None:
        finished.append(outcome)
        if len(finished) == interrupt_after:
            raise KeyboardInterrupt

    first_plan = backfill.plan(settings, str(tmp_path / "history"), runner.catalog)
    first = backfill.run(first_plan, runner, workers=1, on_done=ctrl_c_after_k_files)

    assert first.interrupted
    assert first.exit_code == 130
    assert first.outcomes == finished
    again = backfill.plan(settings, str(tmp_path / "history"), runner.catalog)
    assert [x.uri for x in again.to_run] == [x.uri for x in first_plan.to_run[interrupt_after:]]
    assert len(again.loaded) == interrupt_after
    second = backfill.run(again, runner)
    assert not second.interrupted
    assert [o.outcome for o in second.outcomes] == ["loaded"] * (5 - interrupt_after)
    assert post_ids(runner.catalog) == expected_ids(ids)
    # each file loaded exactly once: one "loaded" ledger row per file
    loaded = history(runner.catalog, NAMESPACE, outcome="loaded")
    assert sorted(loaded["source_key"].to_list()) == sorted(x.uri for x in first_plan.to_run)


def test_an_interrupted_parallel_backfill_resumes_with_exactly_the_files_not_loaded(
    tmp_path: Path, settings: Settings
) -> None:
    """GIVEN a backfill of 12 files on 4 workers, interrupted (Ctrl-C) as the second file ends
    WHEN the same backfill runs again
    THEN the files running at the interrupt finished; the rerun runs exactly those the ledger does not
    hold, and the table holds each file's rows once.
    """
    ids = write_folder(tmp_path / "history", 12)
    runner = LocalRunner(settings)
    finished: list[FileOutcome] = []

    def ctrl_c_after_two_files(outcome: FileOutcome) -> None:
        finished.append(outcome)
        if len(finished) == 2:
            raise KeyboardInterrupt

    first_plan = backfill.plan(settings, str(tmp_path / "history"), runner.catalog)
    first = backfill.run(first_plan, runner, workers=4, on_done=ctrl_c_after_two_files)

    assert first.interrupted
    loaded_first = set(history(runner.catalog, NAMESPACE, outcome="loaded")["source_key"].to_list())
    assert 2 <= len(loaded_first) < 12
    again = backfill.plan(settings, str(tmp_path / "history"), runner.catalog)
    assert sorted(x.uri for x in again.to_run) == sorted(x.uri for x in first_plan.to_run if x.uri not in loaded_first)
    second = backfill.run(again, runner, workers=4)
    assert [o.outcome for o in second.outcomes] == ["loaded"] * len(again.to_run)
    assert post_ids(runner.catalog) == expected_ids(ids)
    loaded = history(runner.catalog, NAMESPACE, outcome="loaded")
    assert sorted(loaded["source_key"].to_list()) == sorted(x.uri for x in first_plan.to_run)


def test_the_readme_documents_every_key_of_the_json_document() -> None:
    """GIVEN the keys a backfill --json document has WHEN the README's --json table is read THEN it names each."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `backfill` | `{")]
    statuses = {"loaded", "already_loaded", "dead_lettered", "failed", "skipped_loaded", "skipped_dead_lettered"}
    statuses |= {"would_run", "not_run", "over_limit"}
    for key in DOCUMENT_KEYS | SKIPPED_KEYS | FILE_KEYS | statuses | {"error"}:
        assert f'"{key}"' in row or f"`{key}`" in row, key


def test_ctrl_c_ends_the_command_with_a_summary_and_exit_code_130(
    tmp_path: Path, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN Ctrl-C arriving as the third of 4 files starts
    WHEN icegate backfill runs
    THEN it ends cleanly: the summary says how far it got and how to resume, exit code 130.
    """
    write_folder(tmp_path / "history", 4)
    real_run = LocalRunner.run
    started: list[str] = []

    def run_until_ctrl_c(self: LocalRunner, source: Any, **kwargs: Any) -> FileOutcome:
        started.append(source.key)
        if len(started) == 3:
            raise KeyboardInterrupt
        return real_run(self, source, **kwargs)

    monkeypatch.setattr(LocalRunner, "run", run_until_ctrl_c)

    result = icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--workers", "1")

    assert result.exit_code == 130
    assert "interrupted after 2 of 4 files; rerun the same command to resume" in result.output
    monkeypatch.setattr(LocalRunner, "run", real_run)
    rerun = document(icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--json"))
    assert (rerun["skipped"]["already_loaded"], rerun["loaded"]) == (2, 2)


def test_ctrl_c_while_files_load_on_workers_reports_every_file_the_ledger_holds(
    tmp_path: Path, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a backfill of 8 files on 2 workers, and Ctrl-C arriving while the first file loads
    WHEN icegate backfill --json runs
    THEN the files under way finish and are reported with their outcome and run: the summary and the document
    count what the ledger holds, only the files never started are not_run, and the exit code is 130.
    """
    write_folder(tmp_path / "history", 8)
    ctrl_c_as_the_first_load_starts(monkeypatch)

    result = icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--workers", "2", "--json")

    report = document(result)
    assert result.exit_code == report["exit_code"] == 130
    assert report["interrupted"]
    loaded = history(build_catalog(Settings(lake_root=str(lake))), NAMESPACE, outcome="loaded")
    in_ledger = dict(zip(loaded["source_key"], loaded["run_id"], strict=True))
    assert in_ledger, "the file loading at the interrupt finished"
    assert {f["source"]: f["run_id"] for f in report["files"] if f["status"] == "loaded"} == in_ledger
    assert {f["status"] for f in report["files"] if f["source"] not in in_ledger} == {"not_run"}
    assert (report["ran"], report["loaded"]) == (len(in_ledger), len(in_ledger))
    assert f"interrupted after {len(in_ledger)} of 8 files" in result.stderr


def test_ctrl_c_while_listing_ends_with_exit_code_130_and_a_json_document(
    tmp_path: Path, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN Ctrl-C arriving while a backfill lists its folder (before any file runs)
    WHEN icegate backfill --json runs
    THEN it ends as the README says an interrupt does, exit code 130, not click's "Aborted!" (1), and stdout is
    still one JSON document, saying that no file ran.
    """
    write_folder(tmp_path / "history", 3)
    real_stat = Storage.stat

    def stat_until_ctrl_c(self: Storage, *args: Any, **kwargs: Any) -> Any:
        ctrl_c()
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "stat", stat_until_ctrl_c)

    result = icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--json")

    assert result.exit_code == 130
    message = f"interrupted while listing {tmp_path / 'history'}: no file ran"
    assert document(result) == {"error": message, "exit_code": 130}
    assert message in result.stderr
    assert "Aborted!" not in result.output


def test_a_file_committed_without_its_ledger_row_is_already_loaded_on_the_rerun(
    tmp_path: Path, settings: Settings
) -> None:
    """GIVEN a backfill whose last file committed its rows, but whose ledger row was never written (a kill)
    WHEN the backfill runs again
    THEN that file runs, is reported already loaded, and adds no snapshot and no row.
    """
    ids = write_folder(tmp_path / "history", 3)
    runner = LocalRunner(settings)
    first = backfill.run(backfill.plan(settings, str(tmp_path / "history"), runner.catalog), runner)
    last = first.outcomes[-1]
    ledger = ledger_table(runner.catalog, NAMESPACE, create=False)
    assert ledger is not None
    ledger.delete(EqualTo("run_id", last.run_id))
    table_before = runner.catalog.load_table((NAMESPACE, "posts"))

    again = backfill.plan(settings, str(tmp_path / "history"), runner.catalog)
    rerun = backfill.run(again, runner)

    assert [x.source for x in again.to_run] == [last.source]
    assert [o.outcome for o in rerun.outcomes] == ["already_loaded"]
    table = runner.catalog.load_table((NAMESPACE, "posts"))
    assert table.current_snapshot() == table_before.current_snapshot()
    assert post_ids(runner.catalog) == expected_ids(ids)


def test_dead_lettered_files_are_skipped_unless_retried(tmp_path: Path, lake: Path) -> None:
    """GIVEN the samples backfilled once (one of them is dead-lettered: SchemaMismatch)
    WHEN backfilled again, then again with --retry-dead-lettered
    THEN the second run skips it and says so (exit 0); the third runs it again (dead-lettered: exit 1).
    """
    shutil.copytree(SAMPLES, tmp_path / "landing")
    first = icegate("backfill", str(tmp_path / "landing"), "--lake", str(lake), "--json")
    assert (document(first)["dead_lettered"], first.exit_code) == (1, 1)

    skipped = icegate("backfill", str(tmp_path / "landing"), "--lake", str(lake))

    assert skipped.exit_code == 0
    assert "1 file(s) dead-lettered earlier skipped: --retry-dead-lettered runs them" in skipped.output

    retried = icegate("backfill", str(tmp_path / "landing"), "--lake", str(lake), "--retry-dead-lettered", "--json")

    report = document(retried)
    assert retried.exit_code == 1
    assert (report["ran"], report["retried_dead_lettered"], report["dead_lettered"]) == (1, 1, 1)
    assert report["skipped"] == {
        "already_loaded": 3, "dead_lettered_earlier": 0, "unsupported": 0, "other_suffix": 0, "lake_files": 0,
    }  # fmt: skip
    assert "run again (--retry-dead-lettered)" in retried.stderr


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param({"ICEGATE_QUALITY_THRESHOLD_POSTS": "99"}, id="gate-failed-after-its-content-was-hashed"),
        pytest.param({"ICEGATE_MAX_COLUMNS": "5"}, id="refused-at-parse-before-its-content-was-hashed"),
    ],
)
def test_a_dead_lettered_file_loaded_since_from_its_dlq_copy_is_skipped_as_loaded(
    tmp_path: Path, lake: Path, setting: dict[str, str]
) -> None:
    """GIVEN a posts file backfilled under a setting it fails (dead-lettered), then retried the README way,
    by running its DLQ folder once the setting is back to normal (loaded, recorded under the DLQ copy's path)
    WHEN the folder is backfilled again
    THEN the file is skipped as loaded, naming the retry's run, not as dead-lettered earlier.
    """
    (tmp_path / "landing").mkdir()
    shutil.copy(SAMPLES / "post_results_20260113_175319.csv", tmp_path / "landing")
    failed = CliRunner().invoke(
        main, ["backfill", str(tmp_path / "landing"), "--lake", str(lake), "--json"], env=setting
    )
    assert (document(failed)["dead_lettered"], failed.exit_code) == (1, 1)
    load_settings.cache_clear()  # settings are read once per process: the retry reads the normal threshold
    (error,) = (lake / "dlq" / "posts").glob("*/error.json")
    retry = document(icegate("run", str(error.parent), "--lake", str(lake), "--json"))
    (retried,) = retry["files"]
    assert retried["outcome"] == "loaded"

    again = icegate("backfill", str(tmp_path / "landing"), "--lake", str(lake), "--json")

    report = document(again)
    assert (again.exit_code, report["ran"]) == (0, 0)
    assert (report["skipped"]["already_loaded"], report["skipped"]["dead_lettered_earlier"]) == (1, 0)
    (skipped,) = report["files"]
    assert (skipped["status"], skipped["run_id"]) == ("skipped_loaded", retried["run_id"])


def test_a_file_changed_since_its_load_runs_again(tmp_path: Path, settings: Settings) -> None:
    """GIVEN a backfilled folder of 2 files, one of which is then rewritten with other posts
    WHEN backfilled again
    THEN the rewritten file (same path, other content) loads; the other is skipped.
    """
    write_folder(tmp_path / "history", 2)
    runner = LocalRunner(settings)
    backfill.run(backfill.plan(settings, str(tmp_path / "history"), runner.catalog), runner)
    changed = tmp_path / "history" / "post_results_20250101_000001.csv"
    changed.write_bytes(posts_csv(3, 1_000))

    again = backfill.plan(settings, str(tmp_path / "history"), runner.catalog)

    assert [x.uri for x in again.to_run] == [str(changed.resolve())]
    assert len(again.loaded) == 1
    assert [o.outcome for o in backfill.run(again, runner).outcomes] == ["loaded"]


def test_a_rolled_back_load_runs_again(tmp_path: Path, lake: Path) -> None:
    """GIVEN a backfilled folder whose newest file's load was rolled back
    WHEN backfilled again
    THEN that file (and only it) loads again.
    """
    write_folder(tmp_path / "history", 2)
    first = document(icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--json"))
    newest = first["files"][-1]
    assert icegate("rollback", "posts", "--lake", str(lake), "--run-id", newest["run_id"]).exit_code == 0

    again = document(icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--json"))

    assert (again["skipped"]["already_loaded"], again["loaded"]) == (1, 1)
    assert [f["source"] for f in again["files"] if f["status"] == "loaded"] == [newest["source"]]


def test_dry_run_runs_nothing_and_limit_runs_the_oldest_first(tmp_path: Path, lake: Path) -> None:
    """GIVEN a folder of 5 files, a text file and a lake never ingested into
    WHEN it is backfilled with --dry-run, then twice with --limit 2, then without
    THEN the dry run lists all 5 as would-run and creates no lake; each limited run loads the 2 oldest
    left; the last one loads the fifth.
    """
    write_folder(tmp_path / "history", 5)
    (tmp_path / "history" / "notes.txt").write_text("not data")

    dry = icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--dry-run", "--json")

    report = document(dry)
    assert dry.exit_code == 0
    assert (report["listed"], report["to_run"], report["ran"], report["skipped"]["unsupported"]) == (6, 5, 0, 1)
    assert {f["status"] for f in report["files"]} == {"would_run"}
    assert not lake.exists()
    order = [f["source"] for f in report["files"]]

    ran: list[str] = []
    for _ in range(2):
        limited = document(
            icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--limit", "2", "--json")
        )
        assert (limited["loaded"], limited["exit_code"]) == (2, 0)
        ran += [f["source"] for f in limited["files"] if f["status"] == "loaded"]
    last = document(icegate("backfill", str(tmp_path / "history"), "--lake", str(lake), "--json"))

    assert ran == order[:4]
    assert [f["source"] for f in last["files"] if f["status"] == "loaded"] == order[4:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "0 is not in the range 1<=x<=64"),
        (["--workers", "65"], "65 is not in the range 1<=x<=64"),
        (["--suffix", ".txt"], "'.txt' is not a supported suffix"),
        (["--limit", "0"], "0 is not in the range x>=1"),
    ],
    ids=["no-workers", "too-many-workers", "unsupported-suffix", "zero-limit"],
)
def test_bad_options_are_refused_before_anything_runs(
    tmp_path: Path, lake: Path, args: list[str], message: str
) -> None:
    """GIVEN an option outside its range WHEN backfill runs THEN it exits 2 naming the problem, lake untouched."""
    write_folder(tmp_path / "history", 1)

    result = CliRunner().invoke(main, ["backfill", str(tmp_path / "history"), "--lake", str(lake), *args])

    assert result.exit_code == 2
    assert message in result.output
    assert not lake.exists()


# --- S3 ---------------------------------------------------------------------------------------

LANDING = "scraper-backups"
#: Keys a URL would encode; the first two decode to the same text, so the runner must read exactly each.
UNSAFE_KEYS = (
    "history/2025/post_results_a b.csv",
    "history/2025/post_results_a+b.csv",
    "history/2025/post_results_x=1.csv",
)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with s3_server() as endpoint:
        # moto's backends live in the process, across servers: start from no bucket at all.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
        monkeypatch.setenv("ICEGATE_S3_ENDPOINT", endpoint)
        yield endpoint


def landing_bucket(endpoint: str, *, versioned: bool) -> Any:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=LANDING)
    if versioned:
        s3.put_bucket_versioning(Bucket=LANDING, VersioningConfiguration={"Status": "Enabled"})
    return s3


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned-bucket", "unversioned-bucket"])
def test_an_s3_prefix_backfill_filters_pages_through_and_loads_url_unsafe_keys(
    s3_endpoint: str, lake: Path, versioned: bool
) -> None:
    """GIVEN a landing bucket holding, under history/2025/, three posts files with a space, a '+' and a '='
    in their keys, a .xlsx and a .txt; and a posts file under history/2024/
    WHEN history/2025/ is backfilled with --suffix .csv, listing two keys a page, then again
    THEN exactly the three CSVs load, each its own content, and the rerun skips them all
    AND a key overwritten since runs again.
    """
    s3 = landing_bucket(s3_endpoint, versioned=versioned)
    for n, key in enumerate(UNSAFE_KEYS):
        s3.put_object(Bucket=LANDING, Key=key, Body=posts_csv(5, n * 100))
    s3.put_object(Bucket=LANDING, Key="history/2025/post_results_old.xlsx", Body=b"not read")
    s3.put_object(Bucket=LANDING, Key="history/2025/readme.txt", Body=b"not data")
    s3.put_object(Bucket=LANDING, Key="history/2024/post_results_y.csv", Body=posts_csv(5, 900))
    settings = Settings(lake_root=str(lake), s3_endpoint=s3_endpoint)
    runner = LocalRunner(settings)
    source = f"s3://{LANDING}/history/2025/"

    found = backfill.plan(settings, source, runner.catalog, suffixes=[".csv"], page_size=2)
    result = backfill.run(found, runner)

    assert (found.listed, len(found.unsupported), len(found.other_suffix)) == (5, 1, 1)
    assert [o.outcome for o in result.outcomes] == ["loaded"] * 3
    assert sorted(x.uri for x in found.to_run) == sorted(f"s3://{LANDING}/{key}" for key in UNSAFE_KEYS)
    assert post_ids(runner.catalog) == expected_ids({i for n in range(3) for i in range(n * 100, n * 100 + 5)})
    assert all(x.source.version_id for x in found.to_run) is versioned

    again = backfill.plan(settings, source, runner.catalog, suffixes=[".csv"], page_size=2)
    assert (len(again.to_run), len(again.loaded)) == (0, 3)

    # AND a key written again with other content since is a new file: it alone runs
    s3.put_object(Bucket=LANDING, Key=UNSAFE_KEYS[1], Body=posts_csv(5, 500))
    rewritten = backfill.plan(settings, source, runner.catalog, suffixes=[".csv"], page_size=2)
    assert [x.uri for x in rewritten.to_run] == [f"s3://{LANDING}/{UNSAFE_KEYS[1]}"]
    assert [o.outcome for o in backfill.run(rewritten, runner).outcomes] == ["loaded"]


def test_the_cli_backfills_an_s3_prefix_into_a_local_lake(s3_endpoint: str, lake: Path) -> None:
    """GIVEN a posts file and a restaurants file under a prefix of a landing bucket (ICEGATE_S3_ENDPOINT set)
    WHEN icegate backfill s3://bucket/prefix runs
    THEN both load into the local lake, and a rerun skips both.
    """
    s3 = landing_bucket(s3_endpoint, versioned=True)
    for sample in ("post_results_20260113_175319.csv", "instagram_results_20260114_093000.csv"):
        s3.put_object(Bucket=LANDING, Key=f"scrapes/{sample}", Body=(SAMPLES / sample).read_bytes())

    first = document(icegate("backfill", f"s3://{LANDING}/scrapes/", "--lake", str(lake), "--json"))
    again = document(icegate("backfill", f"s3://{LANDING}/scrapes/", "--lake", str(lake), "--json"))

    assert (first["loaded"], first["exit_code"]) == (2, 0)
    assert (again["ran"], again["skipped"]["already_loaded"]) == (0, 2)


def test_listing_crosses_pages_and_keeps_only_current_versions(s3_endpoint: str) -> None:
    """GIVEN a versioned bucket with 4 keys, one overwritten and one deleted since
    WHEN it is listed one key a page
    THEN each live key comes once, with its current version, size and ETag; the deleted key does not come.
    """
    s3 = landing_bucket(s3_endpoint, versioned=True)
    for n in range(4):
        s3.put_object(Bucket=LANDING, Key=f"p/k{n}.csv", Body=b"x")
    current = s3.put_object(Bucket=LANDING, Key="p/k1.csv", Body=b"yy")["VersionId"]
    s3.delete_object(Bucket=LANDING, Key="p/k2.csv")

    listed = list(Storage(s3_endpoint).list_objects(f"s3://{LANDING}/p/", page_size=1))

    assert [o.key for o in listed] == ["p/k0.csv", "p/k1.csv", "p/k3.csv"]
    k1 = listed[1].info
    assert (k1.version_id, k1.size) == (current, 2)
    assert k1.etag


@pytest.mark.parametrize(
    "rights",
    [
        ["s3:ListBucket", "s3:GetObject"],
        ["s3:ListBucket", "s3:GetObject", "s3:GetBucketVersioning"],
    ],
    ids=["versioning-unreadable", "versions-unlistable"],
)
def test_listing_without_the_rights_to_versions_lists_plainly(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, rights: list[str]
) -> None:
    """GIVEN a versioned bucket and a principal (IAM enforced) without s3:ListBucketVersions
    WHEN it lists a prefix
    THEN it gets every current object, without version ids, rather than AccessDenied.
    """
    s3 = landing_bucket(s3_endpoint, versioned=True)
    for n in range(3):
        s3.put_object(Bucket=LANDING, Key=f"p/k{n}.csv", Body=b"x")
    iam = boto3.client("iam", endpoint_url=s3_endpoint)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": rights, "Resource": [f"arn:aws:s3:::{LANDING}", f"arn:aws:s3:::{LANDING}/*"]}
        ],
    }
    reader = create_principal(iam, "reader", policy)
    enforce_iam(monkeypatch)

    with acting_as(reader):
        listed = list(Storage(s3_endpoint).list_objects(f"s3://{LANDING}/p/", page_size=2))
        with pytest.raises(ClientError, match="AccessDenied"):
            boto3.client("s3", endpoint_url=s3_endpoint).list_object_versions(Bucket=LANDING)

    assert [(o.key, o.info.version_id) for o in listed] == [(f"p/k{n}.csv", None) for n in range(3)]


@pytest.mark.parametrize(
    ("source", "message", "code"),
    [("no-such-folder", "no such file or folder", 1), ("s3://", "names no bucket", 2)],
    ids=["missing-folder-user-error", "no-bucket-bad-argument"],
)
def test_a_source_that_cannot_be_listed_is_refused_and_leaves_no_lake(
    tmp_path: Path, lake: Path, source: str, message: str, code: int
) -> None:
    """GIVEN a SOURCE that names nothing WHEN backfill runs THEN it exits saying why (1 for a folder that is not
    there, as for `run`; 2 for a SOURCE that cannot be one), and creates no lake."""
    target = source if "://" in source else str(tmp_path / source)

    result = CliRunner().invoke(main, ["backfill", target, "--lake", str(lake)])

    assert result.exit_code == code
    assert message in result.output
    assert not lake.exists()
