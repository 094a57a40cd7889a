"""``--json`` on run, tables, dlq and maintain: one JSON document on stdout, with the README's keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from icegate import pipeline
from icegate.cli import main
from icegate.settings import Settings
from tests.conftest import SAMPLES
from tests.interrupts import ctrl_c
from tests.ledger_support import ledger_rows, posts_csv, write_posts

RUN_FILE_KEYS = {
    "file", "source", "run_id", "outcome", "dataset", "rows_read", "rows_valid", "rows_rejected",
    "rejected_rows_uri", "ignored_columns", "ignored_columns_count", "quality", "load", "dead_letter", "error",
    "seconds",
}  # fmt: skip


def icegate(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def stdout_json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_run_json_is_one_document_and_the_summary_goes_to_stderr(lake: Path) -> None:
    # WHEN the samples run with --json
    result = icegate("run", str(SAMPLES), "--lake", str(lake), "--json")

    # THEN stdout is one JSON document: a file per input and the exit code the command returns
    document = stdout_json(result)
    assert document["exit_code"] == result.exit_code == 1
    files = {f["file"]: f for f in document["files"]}
    assert set(files) == {p.name for p in SAMPLES.iterdir()}
    assert all(set(f) == RUN_FILE_KEYS for f in files.values())
    posts = files["post_results_20260113_175319.csv"]
    assert posts["outcome"] == "loaded"
    assert (posts["rows_read"], posts["rows_valid"], posts["rows_rejected"]) == (28, 24, 4)
    assert posts["load"]["inserted"] == 23
    assert posts["quality"]["passed"] is True
    dead = files["post_results_20260116_120000.csv"]
    assert dead["outcome"] == "dead_lettered"
    assert dead["dead_letter"]["error_type"] == "SchemaMismatch"
    assert Path(dead["dead_letter"]["error_uri"]).is_file()
    # AND the human summary went to stderr
    assert "icegate run" in result.stderr

    # WHEN they run again
    again = stdout_json(icegate("run", str(SAMPLES), "--lake", str(lake), "--json"))

    # THEN the loaded files say so, with the snapshot they went into
    rerun = {f["file"]: f for f in again["files"]}["post_results_20260113_175319.csv"]
    assert rerun["outcome"] == "already_loaded"
    assert rerun["load"]["snapshot_id"] == posts["load"]["snapshot_id"]


def test_a_streamed_file_reports_the_rows_it_read_as_a_file_held_whole_does(lake: Path) -> None:
    # GIVEN the sample posts file, streamed (every file above 1 byte is)
    posts = SAMPLES / "post_results_20260113_175319.csv"

    # WHEN it runs with --json
    result = icegate("run", str(posts), "--lake", str(lake), "--json", env={"ICEGATE_STREAM_ABOVE_BYTES": "1"})

    # THEN its rows read, valid and rejected are reported as for the file held whole
    (document,) = stdout_json(result)["files"]
    assert document["outcome"] == "loaded"
    assert (document["rows_read"], document["rows_valid"], document["rows_rejected"]) == (28, 24, 4)


def test_header_columns_no_contract_column_matches_are_reported_in_the_summary_the_json_and_the_ledger(
    tmp_path: Path, lake: Path
) -> None:
    # GIVEN a posts file with two extra headers that match no posts column ("Hashtag" is no alias of hashtags)
    header, *rows = posts_csv(2).decode().splitlines()
    extra = "\n".join([f"{header},views,Hashtag", *(f"{row},500,#pizza" for row in rows)]) + "\n"
    path = write_posts(tmp_path / "in", "20260110_100000", extra.encode())

    # WHEN it runs with --json
    result = icegate("run", str(path), "--lake", str(lake), "--json")

    # THEN it loads, and the JSON names the ignored columns and counts them
    (document,) = stdout_json(result)["files"]
    assert document["outcome"] == "loaded"
    assert (document["ignored_columns"], document["ignored_columns_count"]) == (["views", "Hashtag"], 2)
    # AND the summary says so in a line of the file's own
    assert f"IGNORED {path.name}: 2 header columns match no posts column, not loaded: views, Hashtag" in " ".join(
        result.stderr.split()
    )
    # AND the file's ledger row keeps them
    (ledger_row,) = ledger_rows(Settings(lake_root=str(lake))).to_dicts()
    assert ledger_row["ignored_columns"] == ["views", "Hashtag"]


def test_a_file_whose_headers_all_match_reports_no_ignored_column(lake: Path) -> None:
    # WHEN the sample posts file runs with --json
    result = icegate("run", str(SAMPLES / "post_results_20260113_175319.csv"), "--lake", str(lake), "--json")

    # THEN nothing is reported ignored: an empty list in the JSON, no line in the summary, null in the ledger
    (document,) = stdout_json(result)["files"]
    assert (document["ignored_columns"], document["ignored_columns_count"]) == ([], 0)
    assert "IGNORED" not in result.stderr
    assert ledger_rows(Settings(lake_root=str(lake)))["ignored_columns"].to_list() == [None]


def test_tables_dlq_and_maintain_json(lake: Path) -> None:
    # GIVEN the samples ingested
    icegate("run", str(SAMPLES), "--lake", str(lake))

    # WHEN tables, dlq and maintain are asked for JSON
    tables = stdout_json(icegate("tables", "--lake", str(lake), "--json"))
    dlq = stdout_json(icegate("dlq", "--lake", str(lake), "--json"))
    maintained = stdout_json(icegate("maintain", "posts", "--lake", str(lake), "--json"))

    # THEN each is the documented shape
    by_name = {t["table"]: t for t in tables}
    assert set(by_name) == {"instagram_db.icegate_loads", "instagram_db.posts", "instagram_db.restaurants"}
    assert by_name["instagram_db.posts"]["rows"] == 28
    assert set(by_name["instagram_db.posts"]) == {
        "table", "rows", "data_files", "snapshots", "current_snapshot_id", "last_source",
    }  # fmt: skip
    kinds = sorted(entry["kind"] for entry in dlq)
    assert kinds == ["dead_lettered", "rows_rejected", "rows_rejected"]
    dead = next(entry for entry in dlq if entry["kind"] == "dead_lettered")
    assert (dead["stage"], dead["error_type"], dead["file"]) == (
        "parse",
        "SchemaMismatch",
        "post_results_20260116_120000.csv",
    )
    assert dead["uri"].endswith("error.json")
    # AND the rejected rows of a loaded file name the file they came from, and what they lack is null, not "-"
    rejected = {entry["file"]: entry for entry in dlq if entry["kind"] == "rows_rejected"}
    assert set(rejected) == {"post_results_20260113_175319.csv", "instagram_results_20260114_093000.csv"}
    posts = rejected["post_results_20260113_175319.csv"]
    assert (posts["dataset"], posts["stage"], posts["error_type"]) == ("posts", "validate", None)
    assert posts["message"].startswith("post_results_20260113_175319.csv loaded; 4 rejected rows in ")
    assert "-" not in {value for entry in dlq for value in entry.values()}
    assert maintained["table"] == "instagram_db.posts"
    assert set(maintained) == {
        "table", "files_compacted", "files_written", "snapshots_expired", "files_deleted", "orphans_deleted",
        "manifests_before", "manifests_after", "ledger_rows_recorded", "processing_removed",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "exit_code", "says"),
    [
        (["tables", "--json"], 1, "no catalog at"),
        (["history", "--json", "--since", "soon"], 2, "'soon' is not a duration"),
        (["dlq", "--json", "--no-such-option"], 2, "No such option"),
        (["run", "--json", "--lake", "s3://"], 1, "is not a local folder or s3://bucket"),
    ],
    ids=["no-lake", "bad-option-value", "unknown-option", "bucketless-lake"],
)
def test_a_user_error_under_json_is_a_document_on_stdout_too(
    tmp_path: Path, args: list[str], exit_code: int, says: str
) -> None:
    # GIVEN a lake with nothing ingested yet
    env = {"ICEGATE_LAKE_ROOT": str(tmp_path / "lake")}

    # WHEN a command with --json meets a user error
    result = CliRunner().invoke(main, args, env=env)

    # THEN the error is one line on stderr, as without --json, with the exit code the README gives
    assert result.exit_code == exit_code
    assert says in result.stderr
    # AND stdout is one document a script can read, saying the same
    document = stdout_json(result)
    assert document == {"error": document["error"], "exit_code": exit_code}
    assert says in document["error"]
    assert "Traceback" not in result.output


def test_without_json_a_user_error_prints_nothing_on_stdout(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["tables"], env={"ICEGATE_LAKE_ROOT": str(tmp_path / "lake")})

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no catalog at" in result.stderr


def test_ctrl_c_before_a_command_has_a_summary_exits_130_with_a_document(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN Ctrl-C arriving while `icegate run` is still finding its files (nothing has run, nothing to sum up)
    real_sources = pipeline.local_sources

    def sources_until_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        ctrl_c()
        return real_sources(*args, **kwargs)

    monkeypatch.setattr(pipeline, "local_sources", sources_until_ctrl_c)

    # WHEN it runs with --json
    result = icegate("run", str(SAMPLES), "--lake", str(lake), "--json")

    # THEN it exits 130, as a shell reports an interrupt (not click's "Aborted!", 1), and stdout is one document
    assert result.exit_code == 130
    assert stdout_json(result) == {"error": "interrupted (Ctrl-C)", "exit_code": 130}
    assert "Aborted!" not in result.output
