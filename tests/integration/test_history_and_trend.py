"""``icegate history`` and the trend gate, end to end through ``icegate run`` and the ledger."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from icegate import pipeline
from icegate.cli import main
from icegate.datasets import Dataset, get_dataset
from icegate.lake import build_catalog
from icegate.settings import Settings
from icegate.trend import TrendGate
from tests.conftest import SAMPLES
from tests.ledger_support import ledger_rows, posts_csv, write_posts


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def load_three_files_of_100_rows(folder: Path, lake: Path) -> None:
    for day in range(3):
        path = write_posts(folder, f"2026011{day}_100000", posts_csv(100, start=day * 1000))
        assert icegate("run", str(path), "--lake", str(lake)).exit_code == 0


@pytest.fixture
def posts_with_trend_gate(monkeypatch: pytest.MonkeyPatch) -> Dataset:
    """The posts contract with the trend gate on (every other dataset unchanged)."""
    gated = dataclasses.replace(get_dataset("posts"), trend_gate=TrendGate(max_score_drop=10, min_rows_ratio=0.2))

    def lookup(name: str) -> Dataset:
        return gated if name == "posts" else get_dataset(name)

    monkeypatch.setattr(pipeline, "get_dataset", lookup)
    return gated


def test_a_collapsed_file_fails_the_trend_gate_naming_its_baseline(
    tmp_path: Path, lake: Path, settings: Settings, posts_with_trend_gate: Dataset
) -> None:
    # GIVEN three loaded posts files of 100 rows each
    load_three_files_of_100_rows(tmp_path / "in", lake)

    # WHEN a posts file of 10 clean rows arrives (a scraper stopped early)
    small = write_posts(tmp_path / "in", "20260114_100000", posts_csv(10, start=9000))
    result = icegate("run", str(small), "--lake", str(lake))

    # THEN it is dead-lettered at the gate, and the reason names the baseline
    assert result.exit_code == 1
    error = json.loads(next((lake / "dlq").rglob("error.json")).read_text())
    assert (error["stage"], error["error_type"]) == ("gate", "QualityGateFailed")
    assert error["message"].startswith(f"{small}: quality gate failed: "), "it names the file, as every DLQ message"
    assert "10 rows read is under 20% of the median of the last 3 loaded posts files (100 rows)" in error["message"]
    assert error["quality"]["trend_failures"] == [error["message"].split("quality gate failed: ")[1]]

    # AND the ledger records it, with its own good score
    dead = ledger_rows(settings).filter(pl.col("outcome") == "dead_lettered").row(0, named=True)
    assert dead["error_type"] == "QualityGateFailed"
    assert "median of the last 3 loaded posts files" in dead["error_message"]
    assert dead["quality_score"] > 90
    assert build_catalog(settings).load_table(("instagram_db", "posts")).scan().to_arrow().num_rows == 300


def test_the_trend_gate_is_off_unless_the_contract_sets_it(tmp_path: Path, lake: Path) -> None:
    # GIVEN the same three loaded files, and the posts contract as shipped
    assert get_dataset("posts").trend_gate is None
    load_three_files_of_100_rows(tmp_path / "in", lake)

    # WHEN the same small file arrives
    small = write_posts(tmp_path / "in", "20260114_100000", posts_csv(10, start=9000))

    # THEN it loads
    assert icegate("run", str(small), "--lake", str(lake)).exit_code == 0


def test_history_lists_the_ledger_and_filters_it(lake: Path) -> None:
    # GIVEN the samples ingested twice
    icegate("run", str(SAMPLES), "--lake", str(lake))
    icegate("run", str(SAMPLES), "--lake", str(lake))

    # WHEN the history is asked for as JSON, all of it, then by dataset and outcome
    everything = json.loads(icegate("history", "--lake", str(lake), "--json").output)
    restaurants = json.loads(icegate("history", "restaurants", "--lake", str(lake), "--json").output)
    dead = json.loads(icegate("history", "--outcome", "dead_lettered", "--lake", str(lake), "--json").output)
    future = json.loads(icegate("history", "--since", "2999-01-01", "--lake", str(lake), "--json").output)
    recent = json.loads(icegate("history", "--since", "1h", "--lake", str(lake), "--json").output)

    # THEN each is the matching ledger rows, oldest first, with ISO times
    assert len(everything) == 8
    assert [row["finished_at"] for row in everything] == sorted(row["finished_at"] for row in everything)
    assert {row["outcome"] for row in restaurants} == {"loaded", "already_loaded"}
    assert {row["dataset"] for row in restaurants} == {"restaurants"}
    assert [row["error_type"] for row in dead] == ["SchemaMismatch", "SchemaMismatch"]
    assert future == []
    assert len(recent) == 8
    assert set(everything[0]) >= {"run_id", "outcome", "source_sha256", "quality_score", "score_validity"}
    loaded = next(row for row in restaurants if row["outcome"] == "loaded")
    assert loaded["failed_checks"] == {
        "followers:type(long)": 1,
        "posts_count:greater_than_or_equal_to(0)": 1,
        "restaurant_name:not_nullable": 1,
    }
    assert set(loaded["stage_seconds"]) == {"parse", "validate", "score", "load"}

    # AND the table form names each file and outcome
    table = icegate("history", "posts", "--lake", str(lake))
    assert table.exit_code == 0
    assert "post_results_20260113_175319" in table.output
    assert "already_loaded" in table.output
    assert "SchemaMismatch" in table.output


def test_the_history_table_shows_each_run_id_whole(lake: Path) -> None:
    """Regression: the README says `icegate history posts` finds the run id to roll back; only --json had it."""
    # GIVEN the samples ingested (loads and a dead letter)
    icegate("run", str(SAMPLES), "--lake", str(lake))
    run_ids = {row["run_id"] for row in json.loads(icegate("history", "--lake", str(lake), "--json").output)}

    # WHEN the history is shown as a table
    table = icegate("history", "--lake", str(lake))

    # THEN every run id is on a line of the table, unfolded, so it can be copied into rollback --run-id
    assert table.exit_code == 0, table.output
    assert len(run_ids) == 4
    for run_id in run_ids:
        assert run_id in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--since", "yesterday"], "not a duration like 30m, 12h or 7d", id="unreadable since"),
        pytest.param(["--outcome", "lost"], "'lost' is not one of", id="unknown outcome"),
    ],
)
def test_history_refuses_bad_options_without_a_traceback(lake: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["history", "--lake", str(lake), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_history_refuses_a_dataset_no_contract_defines(lake: Path) -> None:
    """Regression: `icegate history nosuch` said "no matching outcome" and exited 0, hiding the typo."""
    # GIVEN a lake with a ledger
    assert icegate("run", str(SAMPLES / "post_results_20260116_120000.csv"), "--lake", str(lake)).exit_code == 1

    # WHEN the history of a dataset that does not exist is asked for, and of one that has no outcome yet
    typo = CliRunner().invoke(main, ["history", "nosuch", "--lake", str(lake)])
    quiet = icegate("history", "restaurants", "--lake", str(lake))

    # THEN the unknown one is refused in one line naming the known datasets (exit 1), the known one is just empty
    assert typo.exit_code == 1, typo.output
    assert "no dataset named 'nosuch'; known: posts, restaurants, unknown" in typo.output
    assert (quiet.exit_code, quiet.output.strip()) == (0, "the ledger has no matching outcome")


def test_history_of_a_lake_without_a_ledger_says_so(tmp_path: Path) -> None:
    # GIVEN a lake whose catalog exists, but where no file has run yet
    (tmp_path / "empty").mkdir()
    build_catalog(Settings(lake_root=str(tmp_path / "empty")))
    result = icegate("history", "--lake", str(tmp_path / "empty"))
    assert result.exit_code == 0
    assert "the ledger has no matching outcome" in result.output


@pytest.mark.parametrize("command", ["history", "report"])
def test_a_lake_that_does_not_exist_is_a_user_error(tmp_path: Path, command: str) -> None:
    result = CliRunner().invoke(main, [command, "--lake", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "nothing was ingested into this lake yet" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
