"""The ledger ``icegate_loads``: one row per file outcome, written after the data commit, never twice."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner, Result
from pyiceberg.expressions import In

from icegate import ledger, pipeline
from icegate.cli import main
from icegate.dimensions import QUALITY_DIMENSIONS
from icegate.lake import build_catalog
from icegate.lake import ledger as lake_ledger
from icegate.lake.ledger import LEDGER_TABLE, append_rows
from icegate.payloads import SourceObject
from icegate.pipeline import LocalRunner
from icegate.settings import Settings
from tests.conftest import SAMPLES
from tests.duckdb_reader import iceberg_scan
from tests.ledger_support import create_ledger_without, ledger_rows, posts_csv, write_posts

POSTS_CSV = "post_results_20260113_175319.csv"
RESTAURANTS_CSV = "instagram_results_20260114_093000.csv"
POSTS_XLSX = "post_results_20260115_081500.xlsx"
MISSING_COLUMNS = "post_results_20260116_120000.csv"


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def data_table_snapshots(settings: Settings, table: str) -> dict[int, dict[str, str]]:
    iceberg = build_catalog(settings).load_table((settings.namespace, table))
    return {s.snapshot_id: s.summary.additional_properties for s in iceberg.metadata.snapshots if s.summary}


def test_every_outcome_of_two_runs_of_the_samples_is_one_ledger_row(lake: Path, settings: Settings) -> None:
    # GIVEN the bundled samples ingested once
    first = icegate("run", str(SAMPLES), "--lake", str(lake))
    assert first.exit_code == 1  # the missing-columns sample is dead-lettered

    # WHEN they are ingested again
    icegate("run", str(SAMPLES), "--lake", str(lake))

    # THEN the ledger holds one row per file and run: 3 loaded, 3 already loaded, 2 dead-lettered
    rows = ledger_rows(settings)
    assert rows.group_by("outcome").len().sort("outcome").rows() == [
        ("already_loaded", 3),
        ("dead_lettered", 2),
        ("loaded", 3),
    ]
    assert rows.select("run_id", "outcome").is_duplicated().sum() == 0
    # AND an independent Iceberg reader (DuckDB's iceberg_scan) sees the same rows
    ledger = build_catalog(settings).load_table((settings.namespace, LEDGER_TABLE))
    seen_by_duckdb = iceberg_scan(ledger.metadata_location, order_by="run_id, outcome")
    assert (
        seen_by_duckdb.select("run_id", "outcome").rows()
        == rows.sort("run_id", "outcome").select("run_id", "outcome").rows()
    )

    # AND a loaded row carries the counts, scores and snapshot the run reported
    posts = rows.filter((pl.col("outcome") == "loaded") & pl.col("source_key").str.ends_with(POSTS_CSV)).row(
        0, named=True
    )
    assert (posts["rows_read"], posts["rows_valid"], posts["rows_rejected"]) == (28, 24, 4)
    assert (posts["rows_inserted"], posts["rows_updated"], posts["rows_skipped"]) == (23, 0, 0)
    assert posts["rows_duplicate_in_file"] == 1
    assert posts["quality_score"] == pytest.approx(97.2, abs=0.05)
    assert all(0 < posts[f"score_{d}"] <= 1 for d in QUALITY_DIMENSIONS)
    assert posts["table_name"] == "instagram_db.posts"
    assert posts["source_sha256"]
    assert len(posts["source_sha256"]) == 64
    markers = data_table_snapshots(settings, "posts")[posts["snapshot_id"]]
    assert markers["icegate.run-id"] == posts["run_id"]
    assert markers["icegate.source-sha256"] == posts["source_sha256"]
    assert dict(posts["failed_checks"])
    assert sum(dict(posts["failed_checks"]).values()) >= 4
    assert any(name.startswith("uniqueness/") for name in dict(posts["quality_checks"]))
    assert set(dict(posts["stage_seconds"])) == {"parse", "validate", "score", "load"}
    assert posts["started_at"] <= posts["finished_at"]
    assert posts["recorded_by"] == "loader"

    # AND the rerun's row points at the same snapshot, with nothing read or inserted
    again = rows.filter((pl.col("outcome") == "already_loaded") & pl.col("source_key").str.ends_with(POSTS_CSV))
    assert again["snapshot_id"].to_list() == [posts["snapshot_id"]]
    assert again["rows_inserted"].to_list() == [0]
    assert again["rows_read"].to_list() == [None]

    # AND a dead-lettered row names the stage, the error and the DLQ entry, which exists
    dead = rows.filter(pl.col("outcome") == "dead_lettered").row(0, named=True)
    assert (dead["stage"], dead["error_type"], dead["dataset"]) == ("parse", "SchemaMismatch", "posts")
    assert "post_url" in dead["error_message"]
    error = json.loads(Path(dead["error_uri"]).read_text())
    assert error["run_id"] == dead["run_id"]
    assert Path(dead["dead_letter_uri"]).read_bytes() == (SAMPLES / MISSING_COLUMNS).read_bytes()


def test_a_rerun_of_loaded_content_is_answered_from_the_ledger_without_parsing(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a posts file loaded once, then re-uploaded under another name (same content)
    first = write_posts(tmp_path / "in", "20260110_100000", posts_csv(50))
    runner = LocalRunner(settings)
    loaded = runner.run(SourceObject(bucket="", key=str(first)))
    assert loaded.outcome == "loaded"
    again = write_posts(tmp_path / "again", "20260111_100000", first.read_bytes())

    # WHEN it runs again with a parser that would fail if it were called
    def no_parsing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file was parsed")

    monkeypatch.setattr(pipeline, "parse_bytes", no_parsing)
    rerun = LocalRunner(settings, catalog=build_catalog(settings)).run(SourceObject(bucket="", key=str(again)))

    # THEN it is already loaded, into the snapshot of the first load, and the ledger says so
    assert rerun.outcome == "already_loaded"
    state: Any = rerun.state
    assert state.load.snapshot_id == loaded.state.load.snapshot_id  # type: ignore[attr-defined]
    assert state.quality.score == loaded.state.quality.score  # type: ignore[attr-defined]
    rows = ledger_rows(settings)
    assert rows.filter(pl.col("run_id") == rerun.run_id)["outcome"].to_list() == ["already_loaded"]


def test_a_parse_beside_the_catalog_opening_gives_way_to_the_ledger(tmp_path: Path, settings: Settings) -> None:
    """A runner whose catalog is not open yet parses while it opens; a ledger hit drops that parse, error and all."""
    # GIVEN a posts file loaded once
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(50))
    assert LocalRunner(settings).run(SourceObject(bucket="", key=str(path))).outcome == "loaded"

    # WHEN a fresh runner (its catalog still to open) reruns it under limits its parse now fails
    strict = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, max_rows=10))
    rerun = LocalRunner(strict).run(SourceObject(bucket="", key=str(path)))

    # THEN the ledger's answer wins: already loaded, not dead-lettered for the limit
    assert rerun.outcome == "already_loaded", rerun.dead_letter


def test_a_stale_ledger_row_never_skips_a_file_the_table_does_not_hold(tmp_path: Path, settings: Settings) -> None:
    # GIVEN a ledger that says a content was loaded into posts, but the posts table does not exist
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))
    import hashlib

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    Path(settings.lake_root).mkdir(parents=True)
    append_rows(
        build_catalog(settings),
        settings.namespace,
        [{"run_id": "old", "outcome": "loaded", "table_name": "instagram_db.posts", "source_sha256": sha}],
    )

    # WHEN the file runs
    outcome = LocalRunner(settings).run(SourceObject(bucket="", key=str(path)))

    # THEN the file is loaded: the ledger row alone is not proof of the data
    assert outcome.outcome == "loaded", outcome.dead_letter
    assert build_catalog(settings).load_table(("instagram_db", "posts")).scan().to_arrow().num_rows == 10


def test_a_failed_ledger_write_loses_no_load_and_maintain_repairs_the_row(
    tmp_path: Path, lake: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a ledger whose writes fail (catalog trouble after the data commit)
    def broken(*args: Any, **kwargs: Any) -> int:
        raise OSError("ledger unavailable")

    monkeypatch.setattr("icegate.ledger.append_rows", broken)
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(40))

    # WHEN a file loads
    outcome = LocalRunner(settings).run(SourceObject(bucket="", key=str(path)))

    # THEN the load succeeded and its rows are in the table, though the ledger has no row
    assert outcome.outcome == "loaded"
    assert build_catalog(settings).load_table(("instagram_db", "posts")).scan().to_arrow().num_rows == 40
    assert not build_catalog(settings).table_exists(("instagram_db", LEDGER_TABLE))

    # WHEN the ledger works again and `icegate maintain posts` runs
    monkeypatch.undo()
    result = icegate("maintain", "posts", "--lake", str(lake))

    # THEN the lost row is rebuilt from the snapshot marker, once
    assert result.exit_code == 0, result.output
    assert "recorded 1 loads missing from the ledger" in result.output
    rows = ledger_rows(settings)
    assert rows.select("run_id", "outcome", "recorded_by", "rows_inserted", "source_uri").rows() == [
        (outcome.run_id, "loaded", "maintain", 40, str(path))
    ]
    assert "recorded" not in icegate("maintain", "posts", "--lake", str(lake)).output
    assert ledger_rows(settings).height == 1


def test_a_retried_load_that_finds_its_own_commit_records_loaded_once(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the load stage of a run that committed its data but died before recording it
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(30))
    job = pipeline.Job(source=SourceObject(bucket="", key=str(path)), run_id="run-crashed")
    storage = pipeline.Storage()
    scored = pipeline.run_score(
        pipeline.run_validate(pipeline.run_parse(job, settings, storage), settings, storage), settings, storage
    )
    with monkeypatch.context() as patch:
        patch.setattr("icegate.ledger.append_rows", lambda *a, **k: (_ for _ in ()).throw(OSError("crash")))
        first = pipeline.run_load(scored, settings, storage)
    assert ledger_rows_or_empty(settings).is_empty()

    # WHEN Step Functions retries the same load (same run id)
    retried = pipeline.run_load(scored, settings, storage)

    # THEN the retry recognises its own commit: outcome loaded, same snapshot, one ledger row
    assert retried.load is not None
    assert first.load is not None
    assert retried.load.already_loaded is False
    assert retried.load.snapshot_id == first.load.snapshot_id
    rows = ledger_rows(settings)
    assert retried.load.inserted == 30
    assert rows.select("run_id", "outcome", "snapshot_id", "rows_inserted").rows() == [
        ("run-crashed", "loaded", first.load.snapshot_id, 30)
    ]

    # AND a third attempt writes nothing more (idempotent per run id and outcome)
    pipeline.run_load(scored, settings, storage)
    assert ledger_rows(settings).height == 1


def test_a_retried_streamed_load_whose_first_attempt_committed_and_recorded_records_nothing_more(
    tmp_path: Path, settings: Settings
) -> None:
    # GIVEN a file too big to hold (streamed), whose load stage committed and recorded it, then failed
    # to hand its result back (Step Functions retries the Task with the same run id)
    streaming = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, stream_above_bytes=1))
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(30))
    job = pipeline.Job(source=SourceObject(bucket="", key=str(path)), run_id="run-retried")
    storage = pipeline.Storage()
    scored = pipeline.run_score(
        pipeline.run_validate(pipeline.run_parse(job, streaming, storage), streaming, storage), streaming, storage
    )
    assert scored.streamed
    first = pipeline.run_load(scored, streaming, storage)
    assert ledger_rows(settings).select("run_id", "outcome").rows() == [("run-retried", "loaded")]

    # WHEN the retry runs the same load again
    retried = pipeline.run_load(scored, streaming, storage)

    # THEN it recognises its own commit (loaded, its counts, the same snapshot)
    assert retried.load is not None
    assert first.load is not None
    assert (retried.load.already_loaded, retried.load.inserted) == (False, 30)
    assert retried.load.snapshot_id == first.load.snapshot_id
    # AND the ledger still holds its one row: the retry looked for it before appending
    assert ledger_rows(settings).select("run_id", "outcome").rows() == [("run-retried", "loaded")]


def ledger_rows_or_empty(settings: Settings) -> pl.DataFrame:
    if not build_catalog(settings).table_exists((settings.namespace, LEDGER_TABLE)):
        return pl.DataFrame()
    return ledger_rows(settings)


def test_concurrent_ledger_writers_record_each_run_once(settings: Settings) -> None:
    # GIVEN 6 writers that each record 5 runs, two writers for each run (duplicate S3 events)
    Path(settings.lake_root).mkdir(parents=True)
    build_catalog(settings)
    errors: list[BaseException] = []

    def writer(group: int) -> None:
        try:
            catalog = build_catalog(settings)
            rows = [
                {"run_id": f"run-{group % 3}-{i}", "outcome": "loaded", "dataset": "posts", "rows_inserted": i}
                for i in range(5)
            ]
            for row in rows:
                append_rows(catalog, settings.namespace, [row], attempts=40, backoff=0.01)
        except BaseException as exc:
            errors.append(exc)

    # WHEN they all write at once
    threads = [threading.Thread(target=writer, args=(g,)) for g in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN every run is recorded exactly once
    assert errors == []
    rows = ledger_rows(settings)
    assert rows.height == 15
    assert rows.select("run_id", "outcome").is_duplicated().sum() == 0


def test_the_ledger_is_an_ordinary_iceberg_table_with_the_documented_columns(settings: Settings) -> None:
    # GIVEN a ledger created on first use
    Path(settings.lake_root).mkdir(parents=True)
    catalog = build_catalog(settings)
    lake_ledger.ledger_table(catalog, settings.namespace, create=True)

    # WHEN it is loaded from the catalog like any table
    table = catalog.load_table((settings.namespace, LEDGER_TABLE))

    # THEN its columns are the ledger's, each documented, and the README's schema table lists each one
    names = [field.name for field in table.schema().fields]
    assert names == list(lake_ledger.COLUMN_NAMES)
    assert all(field.doc for field in table.schema().fields)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in names if f"`{name}`" not in readme]
    assert missing == []
    # pyiceberg's own retries would re-apply an append without the idempotency check
    assert table.properties["commit.retry.num-retries"] == "0"


def test_an_object_version_already_loaded_is_answered_without_reading_it(tmp_path: Path, settings: Settings) -> None:
    # GIVEN an object version loaded once (an S3 version id names immutable bytes)
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(20))
    source = SourceObject(bucket="", key=str(path), version_id="v1")
    first = LocalRunner(settings).run(source)
    assert first.outcome == "loaded"

    # WHEN the same version runs again, with the bytes at its location now unreadable garbage
    path.write_bytes(b"\x00 not a csv \x00")
    rerun = LocalRunner(settings).run(source)

    # THEN it is answered from the ledger without reading them: already loaded, with the first hash
    assert rerun.outcome == "already_loaded", rerun.dead_letter
    state: Any = rerun.state
    assert state.sha256 == first.state.sha256  # type: ignore[attr-defined]
    assert state.load.snapshot_id == first.state.load.snapshot_id  # type: ignore[attr-defined]


def count_ledger_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each ledger read (a scan of icegate_loads) from here on, by its filter."""
    scans: list[str] = []
    real = lake_ledger.scan

    def counted(table: Any, row_filter: Any = None, columns: Any = ("*",)) -> Any:
        if table.name()[-1] == LEDGER_TABLE:
            scans.append(str(row_filter))
        return real(table, row_filter, columns)

    monkeypatch.setattr(lake_ledger, "scan", counted)
    return scans


def test_a_new_file_is_loaded_and_recorded_without_reading_the_ledger_while_the_history_is_whole(
    tmp_path: Path, lake: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two files loaded (a ledger of two rows, the table's history whole)
    first = write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))
    assert LocalRunner(settings).run(SourceObject(bucket="", key=str(first))).outcome == "loaded"
    second = write_posts(tmp_path / "in", "20260111_100000", posts_csv(10, start=100))
    assert LocalRunner(settings).run(SourceObject(bucket="", key=str(second))).outcome == "loaded"
    scans = count_ledger_scans(monkeypatch)

    # WHEN a new file loads
    third = write_posts(tmp_path / "in", "20260112_100000", posts_csv(10, start=200))
    assert LocalRunner(settings).run(SourceObject(bucket="", key=str(third))).outcome == "loaded"

    # THEN the table's markers said "not loaded before", and its row was appended without a look for it
    assert scans == []
    assert ledger_rows(settings).filter(pl.col("outcome") == "loaded").height == 3
    # AND a rerun of loaded content still gets its answer (and score) from the ledger
    rerun = LocalRunner(settings).run(SourceObject(bucket="", key=str(first)))
    assert rerun.outcome == "already_loaded"
    assert scans != []

    # WHEN snapshots expired, the markers no longer tell every load: a new file asks the ledger
    result = icegate("maintain", "posts", "--lake", str(lake), "--expire-older-than", "0m", "--retain-last", "1")
    assert result.exit_code == 0, result.output
    scans.clear()
    fourth = write_posts(tmp_path / "in", "20260113_100000", posts_csv(10, start=300))
    assert LocalRunner(settings).run(SourceObject(bucket="", key=str(fourth))).outcome == "loaded"
    assert scans != []


def test_a_ledger_append_that_may_have_landed_looks_for_its_rows_before_the_next_attempt(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a catalog database that reports "locked" after the first ledger commit has landed
    from sqlalchemy.exc import OperationalError

    Path(settings.lake_root).mkdir(parents=True)
    catalog = build_catalog(settings)
    real_transaction = lake_ledger.transaction
    failures: list[bool] = []

    def landed_then_locked(table: Any) -> Any:
        pending = real_transaction(table)
        real_commit = pending.commit_transaction

        def commit() -> Any:
            result = real_commit()
            if not failures:
                failures.append(True)
                raise OperationalError("COMMIT", {}, Exception("database is locked"))
            return result

        pending.commit_transaction = commit
        return pending

    monkeypatch.setattr(lake_ledger, "transaction", landed_then_locked)
    row = {"run_id": "r1", "outcome": "loaded", "table_name": "instagram_db.posts", "source_sha256": "abc"}

    # WHEN the loader records a load it has just committed (no look for its row first)
    written = append_rows(catalog, settings.namespace, [row], backoff=0, unrecorded={"r1"})

    # THEN the retry found the row that landed and wrote it once
    assert failures == [True]
    assert written == 0
    assert ledger_rows(settings).height == 1


def test_the_ledgers_history_shows_a_load_once_when_maintain_rebuilt_its_row_meanwhile(settings: Settings) -> None:
    # GIVEN a load's row rebuilt by maintain from its marker, and then written by its loader too
    from icegate import ledger

    Path(settings.lake_root).mkdir(parents=True)
    catalog = build_catalog(settings)
    row = {"run_id": "r1", "outcome": "loaded", "table_name": "instagram_db.posts", "dataset": "posts"}
    append_rows(catalog, settings.namespace, [{**row, "recorded_by": "maintain"}])
    append_rows(catalog, settings.namespace, [{**row, "recorded_by": "loader"}], unrecorded={"r1"})

    # WHEN its history is read
    rows = ledger.history(catalog, settings.namespace, dataset="posts")

    # THEN the load is there once, as its loader recorded it
    assert rows.select("run_id", "recorded_by").rows() == [("r1", "loader")]


def test_a_ledger_created_before_ignored_columns_gains_the_list_column_and_a_dead_letter_fills_it(
    tmp_path: Path, lake: Path, settings: Settings
) -> None:
    # GIVEN a ledger table as older versions created it, without ignored_columns (a list, so a nested type)
    create_ledger_without(settings, "ignored_columns")
    # AND a posts file with a header no posts column matches, which fails the gate
    header, *rows = posts_csv(5, bad_status=1).decode().splitlines()
    content = "\n".join([f"{header},views", *(f"{row},500" for row in rows)]) + "\n"
    path = write_posts(tmp_path / "in", "20260110_100000", content.encode())

    # WHEN it runs under a threshold it cannot reach
    result = CliRunner().invoke(
        main, ["run", str(path), "--lake", str(lake)], env={"ICEGATE_QUALITY_THRESHOLD_POSTS": "100"}
    )

    # THEN it is dead-lettered, and its ledger row, in the evolved table, names the ignored column
    assert result.exit_code == 1, result.output
    (row,) = ledger_rows(settings).to_dicts()
    assert (row["outcome"], row["ignored_columns"]) == ("dead_lettered", ["views"])


def test_a_ledger_not_written_since_a_column_was_added_reads_it_as_null(settings: Settings) -> None:
    # GIVEN a ledger as older versions created and wrote it: one row, no ignored_columns
    create_ledger_without(settings, "ignored_columns")
    table = build_catalog(settings).load_table((settings.namespace, LEDGER_TABLE))
    schema = table.schema().as_arrow()
    table.append(pa.Table.from_pylist([{"run_id": "r1", "outcome": "loaded"}], schema=schema))

    # WHEN its history is read  THEN every column the ledger has today is there, the new one null
    rows = ledger.history(build_catalog(settings), settings.namespace)
    assert rows.columns == list(lake_ledger.COLUMN_NAMES)
    assert rows.select("run_id", "ignored_columns").rows() == [("r1", None)]


def test_a_ledger_write_reads_only_the_files_of_its_own_runs(settings: Settings) -> None:
    # GIVEN a ledger written five times within one hour (local run ids share their first 21 characters), the
    # first write by a version that kept the default statistics (run ids cut to 16 characters)
    create_ledger_without(settings, "ignored_columns")
    catalog = build_catalog(settings)
    run_ids = [f"local-20261130T1940{n:02d}-{n:08x}" for n in range(5)]
    for run_id in run_ids:
        append_rows(catalog, settings.namespace, [{"run_id": run_id, "outcome": "already_loaded"}], backoff=0)

    # WHEN one run's rows are looked up, as a write looks for what is recorded already
    table = catalog.load_table((settings.namespace, LEDGER_TABLE))
    planned = table.scan(row_filter=In("run_id", {run_ids[3]})).plan_files()

    # THEN only its own file is read (and the one file written before the statistics were kept whole)
    assert len(planned) <= 2 < len(run_ids)
    assert table.properties["write.metadata.metrics.column.run_id"] == "full"
    assert sorted(ledger.history(catalog, settings.namespace)["run_id"]) == run_ids


def test_the_readmes_local_ledger_folder_and_duckdb_recipe_are_what_a_local_lake_has(
    lake: Path, settings: Settings
) -> None:
    # GIVEN the samples run into a local lake
    icegate("run", str(SAMPLES), "--lake", str(lake))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()

    # WHEN the README's query for the ledger's metadata file is run against the lake's catalog
    (query,) = re.findall(r'`sqlite3 lake/catalog\.db "([^"]+)"`', readme)
    with sqlite3.connect(lake / "catalog.db") as connection:
        ((metadata_location,),) = connection.execute(query).fetchall()

    # THEN the file is in the folder the README names for local mode, where the catalog keeps the ledger
    folder = lake / "warehouse" / "instagram_db" / LEDGER_TABLE
    assert "`<lake>/warehouse/instagram_db/icegate_loads` locally" in readme
    assert build_catalog(settings).load_table((settings.namespace, LEDGER_TABLE)).location() == str(folder)
    assert Path(metadata_location).parent == folder / "metadata"
    # AND DuckDB's own reader reads every outcome from it
    outcomes = iceberg_scan(metadata_location, order_by="finished_at")["outcome"].to_list()
    assert sorted(outcomes) == ["dead_lettered", "loaded", "loaded", "loaded"]
