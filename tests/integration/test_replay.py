"""``icegate replay`` after a contract fix, end to end with a real SqlCatalog; error.json's line/column fields;
the run summary naming where rejected rows went."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

import icegate.datasets as datasets_module
from icegate.cli import main
from icegate.datasets import Column, Dataset, all_datasets
from icegate.lake import build_catalog
from icegate.settings import Settings
from tests.conftest import SAMPLES
from tests.ledger_support import create_ledger_without, ledger_rows, posts_csv, write_posts

Contract = Callable[..., Dataset]


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def posts_contract(monkeypatch: pytest.MonkeyPatch) -> Contract:
    """Change the posts contract (as a fix to its module would) for the rest of the test."""
    original = all_datasets()

    def change(**fields: Any) -> Dataset:
        changed = dataclasses.replace(original["posts"], **fields)
        monkeypatch.setattr(datasets_module, "all_datasets", lambda: {**original, "posts": changed})
        return changed

    return change


def posts_rows(settings: Settings) -> int:
    return build_catalog(settings).load_table((settings.namespace, "posts")).scan().to_arrow().num_rows


def error_documents(lake: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((lake / "dlq").rglob("error.json"))]


# --- error.json's location fields, the summary's rejected rows --------------------------------------


def test_error_json_names_line_and_column_as_fields(tmp_path: Path, lake: Path) -> None:
    # GIVEN an NDJSON posts file whose second line is broken JSON
    good = '{"post_id": "a", "creator": "b", "posted_date": "2026-01-10", "likes": "1", "comments": "2", '
    good += '"post_url": "https://www.instagram.com/p/a/"}'
    path = tmp_path / "post_results_20260110_100000.ndjson"
    path.write_text(f'{good}\n{{"post_id": "c", "creator" "d"}}\n', encoding="utf-8")

    # WHEN it is run
    assert icegate("run", str(path), "--lake", str(lake)).exit_code == 1

    # THEN error.json carries the line and column as numbers, beside the message that states them
    (error,) = error_documents(lake)
    assert error["error_type"] == "MalformedFile"
    assert (error["line"], error["column"], error["row"]) == (2, 28, None)
    assert "line 2, column 28" in error["message"]


def test_error_json_location_fields_are_null_when_the_error_has_no_place(tmp_path: Path, lake: Path) -> None:
    # GIVEN a posts file whose header lacks required columns (the error names the header, no line)
    path = tmp_path / "post_results_20260110_100000.csv"
    path.write_text("post_id,creator\na,b\n", encoding="utf-8")

    # WHEN it is run
    icegate("run", str(path), "--lake", str(lake))

    # THEN the fields are there, and null
    (error,) = error_documents(lake)
    assert error["error_type"] == "SchemaMismatch"
    assert (error["line"], error["row"], error["column"]) == (None, None, None)


def test_the_run_summary_says_where_the_rejected_rows_of_a_loaded_file_went(tmp_path: Path, lake: Path) -> None:
    # GIVEN a posts file of 20 good rows and one with a negative like count
    content = posts_csv(20) + b"pizza,P999999,bad,2026-01-10,-5,3,#p,c,d,https://www.instagram.com/p/x/,success\n"
    path = write_posts(tmp_path, "20260110_100000", content)

    # WHEN it is run
    result = icegate("run", str(path), "--lake", str(lake))

    # THEN it loads, and the summary names the rejected.parquet that holds the one rejected row
    assert result.exit_code == 0
    (rejected,) = (lake / "dlq").rglob("rejected.parquet")
    assert f"REJECTED {path.name}: 1 rows → {rejected}" in " ".join(result.output.split())
    assert pl.read_parquet(rejected).height == 1


def test_a_ledger_created_before_replay_of_gains_the_column_on_its_next_write(
    tmp_path: Path, lake: Path, settings: Settings
) -> None:
    # GIVEN a ledger table as older versions created it, without replay_of
    create_ledger_without(settings, "replay_of")

    # WHEN a file is loaded
    assert (
        icegate("run", str(write_posts(tmp_path, "20260110_100000", posts_csv(5))), "--lake", str(lake)).exit_code == 0
    )

    # THEN the ledger has the column (null for this ordinary load) and the load's row
    rows = ledger_rows(settings)
    assert rows["outcome"].to_list() == ["loaded"]
    assert rows["replay_of"].to_list() == [None]


# --- replaying dead-lettered files ------------------------------------------------------------------


def dead_letter_at_the_gate(tmp_path: Path, lake: Path, posts_contract: Contract) -> str:
    """A clean posts file dead-lettered by a threshold no file can pass; returns its run id."""
    posts_contract(quality_threshold=101.0)
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))
    assert icegate("run", str(path), "--lake", str(lake)).exit_code == 1
    (error,) = error_documents(lake)
    assert error["error_type"] == "QualityGateFailed"
    return str(error["run_id"])


def test_replay_after_a_contract_fix_loads_the_file_and_links_the_original_run(
    tmp_path: Path, lake: Path, settings: Settings, posts_contract: Contract
) -> None:
    # GIVEN a file dead-lettered at the gate, then the contract's threshold fixed
    original_run = dead_letter_at_the_gate(tmp_path, lake, posts_contract)
    posts_contract(quality_threshold=70.0)

    # WHEN its run is replayed
    result = icegate("replay", "--run-id", original_run, "--lake", str(lake))

    # THEN it loads all its rows; the ledger's row links the original run; the DLQ entry stays, noting the replay
    assert result.exit_code == 0, result.output
    assert posts_rows(settings) == 10
    loaded = ledger_rows(settings).filter(pl.col("outcome") == "loaded").row(0, named=True)
    assert loaded["replay_of"] == original_run
    assert loaded["rows_inserted"] == 10
    (entry,) = error_documents(lake)
    assert entry["run_id"] == original_run
    assert entry["replays"] == [{"run_id": loaded["run_id"], "outcome": "loaded"}]


def test_replaying_twice_is_already_loaded_and_adds_nothing(
    tmp_path: Path, lake: Path, settings: Settings, posts_contract: Contract
) -> None:
    # GIVEN a dead-lettered file replayed once after the fix
    original_run = dead_letter_at_the_gate(tmp_path, lake, posts_contract)
    posts_contract(quality_threshold=70.0)
    assert icegate("replay", "--all", "--lake", str(lake)).exit_code == 0

    # WHEN it is replayed again
    result = icegate("replay", "--all", "--lake", str(lake), "--json")

    # THEN the second replay is "already loaded", recorded as such, and the table holds each row once
    (document,) = json.loads(result.stdout)["replays"]
    assert (document["outcome"], document["replay_of"]) == ("already_loaded", original_run)
    assert posts_rows(settings) == 10
    outcomes = ledger_rows(settings).filter(pl.col("replay_of") == original_run)["outcome"].to_list()
    assert outcomes == ["loaded", "already_loaded"]


def test_replay_without_the_fix_dead_letters_again_into_the_same_entry(
    tmp_path: Path, lake: Path, settings: Settings, posts_contract: Contract
) -> None:
    # GIVEN a file dead-lettered at the gate, and no fix
    original_run = dead_letter_at_the_gate(tmp_path, lake, posts_contract)

    # WHEN it is replayed
    result = icegate("replay", "--error-type", "QualityGateFailed", "--lake", str(lake))

    # THEN it fails (exit 1), nothing is loaded, and the first entry counts the rerun instead of a new folder
    assert result.exit_code == 1
    (entry,) = error_documents(lake)
    assert (entry["run_id"], entry["rerun_count"]) == (original_run, 1)
    assert entry["replays"][0]["outcome"] == "dead_lettered"
    assert not build_catalog(settings).table_exists((settings.namespace, "posts"))


def test_replays_of_a_file_whose_error_names_it_dead_letter_into_the_same_entry(tmp_path: Path, lake: Path) -> None:
    # GIVEN a file dead-lettered for missing columns (its message names the file, where the run read it)
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(SAMPLES / "post_results_20260116_120000.csv", inbox)
    icegate("run", str(inbox), "--lake", str(lake))
    (original,) = error_documents(lake)
    assert str(inbox) in original["message"]

    # WHEN it is replayed twice, unfixed (read from its copy in dlq/, another folder)
    for _ in range(2):
        assert icegate("replay", "--all", "--lake", str(lake)).exit_code == 1

    # THEN the first entry counts both replays as reruns; no new entry is filed (nor replayed the next time)
    (entry,) = error_documents(lake)
    assert (entry["run_id"], entry["rerun_count"]) == (original["run_id"], 2)
    assert [replay["outcome"] for replay in entry["replays"]] == ["dead_lettered", "dead_lettered"]


def test_replay_selects_by_dataset_and_error_type(
    tmp_path: Path, lake: Path, settings: Settings, posts_contract: Contract
) -> None:
    # GIVEN a posts file dead-lettered at the gate and a restaurants file dead-lettered for its header
    dead_letter_at_the_gate(tmp_path, lake, posts_contract)
    broken = tmp_path / "instagram_results_20260110_100000.csv"
    broken.write_text("nothing,useful\n1,2\n", encoding="utf-8")
    icegate("run", str(broken), "--lake", str(lake))
    posts_contract(quality_threshold=70.0)

    # WHEN only restaurants, then only SchemaMismatch of posts, are replayed
    by_dataset = json.loads(icegate("replay", "--dataset", "restaurants", "--lake", str(lake), "--json").stdout)
    none = json.loads(
        icegate("replay", "--dataset", "posts", "--error-type", "SchemaMismatch", "--lake", str(lake), "--json").stdout
    )

    # THEN each picks exactly what it names, and the posts file was not loaded by either
    assert [(r["dataset"], r["outcome"]) for r in by_dataset["replays"]] == [("restaurants", "dead_lettered")]
    assert none == {"replays": [], "exit_code": 0}
    assert not build_catalog(settings).table_exists((settings.namespace, "posts"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--error-type", "QualityGateFaild", "--all"],
            "no error type 'QualityGateFaild'; known: UnknownDataset, UnsupportedFormat, ",
            id="misspelt-error-type",
        ),
        pytest.param(
            ["--dataset", "postz"], "no dataset named 'postz'; known: posts, restaurants, unknown", id="dataset"
        ),
    ],
)
def test_replay_refuses_a_name_it_does_not_know(lake: Path, args: list[str], message: str) -> None:
    """Regression: a misspelt error type or dataset said "nothing ... matches" and exited 0, as if all was done."""
    # GIVEN a lake with a dead-lettered file
    assert icegate("run", str(SAMPLES / "post_results_20260116_120000.csv"), "--lake", str(lake)).exit_code == 1

    # WHEN a replay names an error type or dataset that does not exist
    result = CliRunner().invoke(main, ["replay", *args, "--lake", str(lake)])

    # THEN it is refused in one line listing the known names, exit 1
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "QualityGateFailed" in result.output or "postz" in result.output
    assert "Traceback" not in result.output


def test_replay_json_document(tmp_path: Path, lake: Path, posts_contract: Contract) -> None:
    # GIVEN a file dead-lettered at the gate, then the fix
    original_run = dead_letter_at_the_gate(tmp_path, lake, posts_contract)
    posts_contract(quality_threshold=70.0)

    # WHEN it is replayed with --json
    result = icegate("replay", "--all", "--lake", str(lake), "--json")

    # THEN stdout is one JSON document of the documented shape
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0
    (replayed,) = document["replays"]
    assert set(replayed) == {
        "kind", "dataset", "replay_of", "source", "error_type", "run_id", "outcome", "rows", "message", "seconds",
    }  # fmt: skip
    assert (replayed["kind"], replayed["replay_of"]) == ("dead_lettered", original_run)
    assert replayed["error_type"] == "QualityGateFailed"
    assert replayed["rows"] == {"read": 10, "valid": 10, "rejected": 0, "inserted": 10, "updated": 0, "skipped": 0}
    assert Path(replayed["source"]).parent.name == original_run


def test_replay_says_what_it_needs_without_a_traceback(lake: Path) -> None:
    result = CliRunner().invoke(main, ["replay", "--lake", str(lake)])
    assert result.exit_code == 2
    assert "say what to replay: --run-id, --dataset, --error-type, or --all" in result.output
    assert "Traceback" not in result.output


# --- replaying the rejected rows of loaded files ----------------------------------------------------


def test_rejected_rows_replayed_after_a_contract_fix_load_once(
    tmp_path: Path, lake: Path, settings: Settings, posts_contract: Contract
) -> None:
    # GIVEN a posts file loaded with two rows rejected for a URL without its scheme
    rows = posts_csv(20).decode()
    rows += "pizza,Q1,c1,2026-01-10,5,3,#p,c,d,www.instagram.com/p/Q1/,success\n"
    rows += "pizza,Q2,c2,2026-01-10,6,3,#p,c,d,www.instagram.com/p/Q2/,success\n"
    path = write_posts(tmp_path, "20260110_100000", rows.encode())
    assert icegate("run", str(path), "--lake", str(lake)).exit_code == 0
    assert posts_rows(settings) == 20

    # WHEN the contract accepts such URLs and the rejected rows are replayed, twice
    columns = tuple(
        Column("post_url", aliases=("url", "link")) if col.name == "post_url" else col
        for col in all_datasets()["posts"].columns
    )
    posts_contract(columns=columns)
    first = json.loads(icegate("replay", "--all", "--rejected", "--lake", str(lake), "--json").stdout)
    second = json.loads(icegate("replay", "--all", "--rejected", "--lake", str(lake), "--json").stdout)

    # THEN the first loads the two rows, the second finds them already loaded; the table holds each once
    (loaded,) = first["replays"]
    assert (loaded["kind"], loaded["outcome"], loaded["rows"]["inserted"]) == ("rejected_rows", "loaded", 2)
    (again,) = second["replays"]
    assert again["outcome"] == "already_loaded"
    assert posts_rows(settings) == 22
    replays = ledger_rows(settings).filter(pl.col("replay_of").is_not_null())
    assert replays["outcome"].to_list() == ["loaded", "already_loaded"]
    assert set(replays["replay_of"].to_list()) == {loaded["replay_of"]}
    # No second copy of rows still rejected: the original rejected.parquet stays the one record.
    assert len(list((lake / "dlq").rglob("rejected.parquet"))) == 1


def test_rejected_rows_that_still_fail_are_reported_and_not_filed_again(tmp_path: Path, lake: Path) -> None:
    # GIVEN a posts file loaded with one row rejected for a negative like count
    content = posts_csv(20) + b"pizza,Q1,c1,2026-01-10,-5,3,#p,c,d,https://www.instagram.com/p/Q1/,success\n"
    assert icegate("run", str(write_posts(tmp_path, "20260110_100000", content)), "--lake", str(lake)).exit_code == 0

    # WHEN its rejected rows are replayed with no fix
    result = icegate("replay", "--all", "--rejected", "--lake", str(lake), "--json")

    # THEN the replay says they are still rejected (exit 1) and the DLQ holds the one record it had
    (replayed,) = json.loads(result.stdout)["replays"]
    assert replayed["outcome"] == "still_rejected"
    # AND its rows have every documented count, null where the replay did not get (it never loaded)
    never = {"inserted": None, "updated": None, "skipped": None}
    assert replayed["rows"] == {"read": 1, "valid": 0, "rejected": 1, **never}
    assert result.exit_code == 1
    assert len(list((lake / "dlq").rglob("rejected.parquet"))) == 1
