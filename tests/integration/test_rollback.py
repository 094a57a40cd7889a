"""``icegate rollback``: undo one load as a new snapshot, even after later loads, on a real SqlCatalog."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from icegate import ledger
from icegate.cli import main
from icegate.constants import LEDGER_OUTCOMES
from icegate.datasets import get_dataset
from icegate.lake import SourceIdentity, build_catalog, find_loaded, load_batch
from icegate.lake import ledger as lake_ledger
from icegate.lake.maintain import maintain
from icegate.lake.rollback import LaterChanges, RollbackError, rollback
from icegate.payloads import LoadSummary
from icegate.report import report_data
from icegate.settings import Settings
from tests.frames import posts_frame
from tests.ledger_support import ledger_rows, posts_csv, write_posts

POSTS = get_dataset("posts")
UPSERT_POSTS = dataclasses.replace(POSTS, strategy="upsert")
NS = "instagram_db"
TABLE = (NS, "posts")
#: The keys of `rollback --json`, as the README's scripting table documents them.
ROLLBACK_KEYS = {
    "table", "run_id", "source_file", "source_sha256", "rolled_back_snapshot_id", "snapshot_id", "rows_removed",
    "rows_restored", "keys_kept_later", "later_runs", "ledger_recorded",
}  # fmt: skip


@pytest.fixture(autouse=True)
def lake_folder(lake: Path) -> None:
    lake.mkdir(parents=True, exist_ok=True)


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def posts(*ids: str, likes: int = 1) -> pl.DataFrame:
    return posts_frame(*ids, likes=likes)


def load(settings: Settings, frame: pl.DataFrame, run: str, dataset: object = POSTS) -> LoadSummary:
    identity = SourceIdentity(sha256=f"sha-{run}", file=f"/landing/{run}.csv", version=None, run_id=run)
    return load_batch(build_catalog(settings), dataset, frame, identity, namespace=NS, backoff_seconds=0)  # type: ignore[arg-type]


def rows(settings: Settings) -> dict[str, tuple[int, str]]:
    frame = pl.from_arrow(build_catalog(settings).load_table(TABLE).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return {r["post_id"]: (r["likes"], r["run_id"]) for r in frame.iter_rows(named=True)}


def test_rollback_of_an_insert_new_load_after_later_loads_removes_only_its_rows(settings: Settings) -> None:
    # GIVEN three insert_new loads, the middle one to be undone
    load(settings, posts("p1", "p2"), "run-a")
    load(settings, posts("p3", "p4"), "run-b")
    load(settings, posts("p5", "p1"), "run-c")  # p1 skipped: run-a holds it
    before = build_catalog(settings).load_table(TABLE).current_snapshot()
    assert before is not None

    # WHEN run-b is rolled back (forced: run-c skipped a row, which might have been one of run-b's keys)
    done = rollback(build_catalog(settings), TABLE, run_id="run-b", force=True)

    # THEN only run-b's rows are gone, the others stay, in a new snapshot on top of the head
    assert rows(settings) == {"p1": (1, "run-a"), "p2": (1, "run-a"), "p5": (1, "run-c")}
    assert (done.rows_removed, done.rows_restored, done.later_runs) == (2, 0, ["run-c"])
    table = build_catalog(settings).load_table(TABLE)
    head = table.current_snapshot()
    assert head is not None
    assert head.snapshot_id == done.snapshot_id
    assert head.parent_snapshot_id == before.snapshot_id
    # AND run-b's marker no longer counts as loaded, the other loads' still do
    assert find_loaded(table, "sha-run-b") is None
    assert find_loaded(table, "sha-run-a") is not None


def test_rollback_refuses_when_a_later_insert_skipped_rows_and_the_later_loads_rolled_back_first_restore_them(
    settings: Settings,
) -> None:
    # GIVEN run-b inserted p1 and p2; the later run-c held p2 and p3, and skipped p2 (run-b's)
    load(settings, posts("p1", "p2", likes=1), "run-b")
    later = load(settings, posts("p2", "p3", likes=7), "run-c")
    assert (later.inserted, later.skipped) == (1, 1)
    head = build_catalog(settings).load_table(TABLE).current_snapshot()

    # WHEN run-b is rolled back
    with pytest.raises(LaterChanges, match="skipped rows whose keys were already stored") as refused:
        rollback(build_catalog(settings), TABLE, run_id="run-b")

    # THEN it refuses, naming run-c, whose row of p2 no table row would hold; nothing changes
    assert refused.value.later_runs == ["run-c"]
    assert build_catalog(settings).load_table(TABLE).current_snapshot() == head

    # WHEN the later load is rolled back first, then run-b, and run-c's file runs again
    rollback(build_catalog(settings), TABLE, run_id="run-c")
    rollback(build_catalog(settings), TABLE, run_id="run-b")
    again = load(settings, posts("p2", "p3", likes=7), "run-c")

    # THEN run-c's rows are all in, p2 among them
    assert again.inserted == 2
    assert rows(settings) == {"p2": (7, "run-c"), "p3": (7, "run-c")}


def test_rollback_of_an_upsert_restores_the_replaced_values(settings: Settings) -> None:
    # GIVEN an upsert table: p1, p2 at likes=1, then a load that sets p1 to 5 and inserts p3
    load(settings, posts("p1", "p2", likes=1), "run-a", UPSERT_POSTS)
    updated = load(settings, posts("p1", "p3", likes=5), "run-b", UPSERT_POSTS)
    assert (updated.inserted, updated.updated) == (1, 1)
    # AND a later load of other keys
    load(settings, posts("p4", likes=7), "run-c", UPSERT_POSTS)

    # WHEN run-b is rolled back
    done = rollback(build_catalog(settings), TABLE, run_id="run-b")

    # THEN p1 has its old value and lineage back, p3 is gone, p2 and the later p4 are untouched
    assert rows(settings) == {"p1": (1, "run-a"), "p2": (1, "run-a"), "p4": (7, "run-c")}
    assert (done.rows_removed, done.rows_restored) == (2, 1)


def test_rollback_refuses_when_a_later_load_changed_the_same_keys_and_force_keeps_the_later_rows(
    settings: Settings,
) -> None:
    # GIVEN run-b upserted p1 and p3, and the later run-c replaced p1 again
    load(settings, posts("p1", "p2", likes=1), "run-a", UPSERT_POSTS)
    load(settings, posts("p1", "p3", likes=5), "run-b", UPSERT_POSTS)
    load(settings, posts("p1", likes=9), "run-c", UPSERT_POSTS)
    head = build_catalog(settings).load_table(TABLE).current_snapshot()

    # WHEN run-b is rolled back without --force
    with pytest.raises(LaterChanges) as refused:
        rollback(build_catalog(settings), TABLE, run_id="run-b")

    # THEN it refuses, naming the later run, and the table is unchanged
    assert refused.value.later_runs == ["run-c"]
    assert refused.value.keys == 1
    assert build_catalog(settings).load_table(TABLE).current_snapshot() == head

    # WHEN forced
    done = rollback(build_catalog(settings), TABLE, run_id="run-b", force=True)

    # THEN p3 (still run-b's) goes, p1 keeps run-c's later value rather than run-a's older one
    assert rows(settings) == {"p1": (9, "run-c"), "p2": (1, "run-a")}
    assert (done.rows_removed, done.rows_restored, done.keys_kept_later) == (1, 0, 1)


def test_a_load_cannot_be_rolled_back_twice_and_an_unknown_run_is_refused(settings: Settings) -> None:
    # GIVEN one load, rolled back
    load(settings, posts("p1"), "run-a")
    rollback(build_catalog(settings), TABLE, run_id="run-a")

    # WHEN it is rolled back again, or an unknown run is
    # THEN each is refused with a message that says why
    with pytest.raises(RollbackError, match="already rolled back"):
        rollback(build_catalog(settings), TABLE, run_id="run-a")
    with pytest.raises(RollbackError, match="no load of run 'nope'"):
        rollback(build_catalog(settings), TABLE, run_id="nope")


def test_readme_documents_the_rollback_json_keys() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `rollback` |"))
    assert all(f'"{key}"' in row for key in ROLLBACK_KEYS)


def test_a_rolled_back_file_loads_again_and_the_ledger_records_the_rollback(lake: Path, settings: Settings) -> None:
    # GIVEN two files run through the pipeline
    landing = lake.parent / "in"
    first = write_posts(landing, "20260101_000000", posts_csv(3))
    second = write_posts(landing, "20260102_000000", posts_csv(2, start=100))
    assert icegate("run", str(first), "--lake", str(lake)).exit_code == 0
    assert icegate("run", str(second), "--lake", str(lake)).exit_code == 0
    loaded = ledger_rows(settings).filter(pl.col("outcome") == "loaded")
    first_run = loaded.filter(pl.col("source_key").str.ends_with(first.name)).item(0, "run_id")

    # WHEN the first file is rolled back by its name
    result = icegate("rollback", "posts", "--file", first.name, "--lake", str(lake), "--json")

    # THEN the JSON says what was undone, and only the second file's rows remain
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == ROLLBACK_KEYS
    assert document["run_id"] == first_run
    assert (document["rows_removed"], document["rows_restored"], document["ledger_recorded"]) == (3, 0, True)
    assert sorted(rows(settings)) == ["P000100", "P000101"]
    # AND the ledger has a rolled_back row linked to the load by its run id, pointing at the new snapshot
    undone = ledger_rows(settings).filter(pl.col("outcome") == "rolled_back").row(0, named=True)
    assert undone["run_id"] == first_run
    assert undone["snapshot_id"] == document["snapshot_id"]
    assert undone["source_key"].endswith(first.name)
    # AND neither "already loaded" memory answers for it any more: the ledger, nor its fallback for expired markers
    catalog = build_catalog(settings)
    assert ledger.find_prior_load(catalog, NS, "instagram_db.posts", sha256=undone["source_sha256"]) is None
    assert lake_ledger.loaded_snapshot(catalog.load_table(TABLE), undone["source_sha256"]) is None
    # AND the trend gate's baseline and the report count only the load that still stands
    baseline = ledger.recent_loaded(catalog, NS, "posts", 10)
    second_run = loaded.filter(pl.col("source_key").str.ends_with(second.name)).item(0, "run_id")
    assert baseline.get_column("run_id").to_list() == [second_run]
    totals = report_data(ledger.history(catalog, NS), title="t")["totals"]
    assert (totals["loaded"], totals["rolled_back"], totals["rows_inserted"]) == (1, 1, 2)

    # WHEN the same file is run again
    again = icegate("run", str(first), "--lake", str(lake))

    # THEN it loads again (not "already loaded"), its rows back in the table
    assert again.exit_code == 0, again.output
    assert sorted(rows(settings)) == ["P000000", "P000001", "P000002", "P000100", "P000101"]
    reloaded = ledger_rows(settings).filter(
        (pl.col("outcome") == "loaded") & pl.col("source_key").str.ends_with(first.name)
    )
    assert reloaded.height == 2
    assert ledger_rows(settings).filter(pl.col("outcome") == "already_loaded").height == 0
    # AND a third run of it is "already loaded" again: the rollback undid one load, not every future one
    icegate("run", str(first), "--lake", str(lake))
    assert ledger_rows(settings).filter(pl.col("outcome") == "already_loaded").height == 1


def test_the_cli_refuses_clearly_without_a_traceback(lake: Path, settings: Settings) -> None:
    # GIVEN an upsert load whose key a later load changed, and the CLI
    load(settings, posts("p1", likes=1), "run-a", UPSERT_POSTS)
    load(settings, posts("p1", likes=2), "run-b", UPSERT_POSTS)

    # WHEN run-a is rolled back without --force, an unknown run is, or neither option is given
    refused = CliRunner().invoke(main, ["rollback", "posts", "--run-id", "run-a", "--lake", str(lake)])
    unknown = CliRunner().invoke(main, ["rollback", "posts", "--run-id", "nope", "--lake", str(lake)])
    neither = CliRunner().invoke(main, ["rollback", "posts", "--lake", str(lake)])

    # THEN each exits 1 or 2 with one line saying why, no traceback
    assert refused.exit_code == 1
    assert "later loads changed 1 of the keys" in refused.output
    assert "run-b" in refused.output
    assert unknown.exit_code == 1
    assert "no load of run 'nope'" in unknown.output
    assert neither.exit_code == 2
    assert "exactly one of --run-id and --file" in neither.output
    for result in (refused, unknown, neither):
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)

    # WHEN forced
    forced = icegate("rollback", "posts", "--run-id", "run-a", "--force", "--lake", str(lake))

    # THEN it proceeds, keeping run-b's row
    assert forced.exit_code == 0, forced.output
    assert rows(settings) == {"p1": (2, "run-b")}


def test_a_rollback_outlives_its_expired_snapshot_through_the_ledger(settings: Settings) -> None:
    # GIVEN a load rolled back without a ledger row (as if the CLI's ledger write was lost), and a later load
    load(settings, posts("p1"), "run-a")
    rollback(build_catalog(settings), TABLE, run_id="run-a")
    load(settings, posts("p2"), "run-b")

    # WHEN maintenance compacts and expires every snapshot but the newest (the load's and the rollback's)
    maintain(build_catalog(settings), TABLE, expire_older_than=timedelta(0), retain_last=1, orphans_older_than=None)

    # THEN the ledger remembers both the load and its rollback, rebuilt from their markers first
    recorded = ledger_rows(settings).filter(pl.col("run_id") == "run-a")
    assert sorted(recorded.get_column("outcome").to_list()) == ["loaded", "rolled_back"]
    # AND the content still counts as not loaded, run-b's as loaded; the compacted rows are run-b's alone
    table = build_catalog(settings).load_table(TABLE)
    assert len(table.metadata.snapshots) == 1
    assert find_loaded(table, "sha-run-a") is None
    assert find_loaded(table, "sha-run-b") is not None
    assert rows(settings) == {"p2": (1, "run-b")}


def test_a_load_whose_snapshot_or_replaced_files_expired_is_refused_clearly(settings: Settings) -> None:
    # GIVEN upsert loads: run-a (p1, p2), run-b replacing p1; then run-c; and maintenance that keeps
    # only the two newest snapshots (run-a's expires, and with it the file run-b replaced)
    load(settings, posts("p1", "p2", likes=1), "run-a", UPSERT_POSTS)
    load(settings, posts("p1", likes=5), "run-b", UPSERT_POSTS)
    load(settings, posts("p3", likes=1), "run-c", UPSERT_POSTS)
    # The ledger is how an expired load is told from an unknown run.
    lake_ledger.record_markers(build_catalog(settings), NS, build_catalog(settings).load_table(TABLE))
    maintain(
        build_catalog(settings),
        TABLE,
        expire_older_than=timedelta(0),
        retain_last=2,
        compact_files=False,
        orphans_older_than=None,
    )
    head = build_catalog(settings).load_table(TABLE).current_snapshot()

    # WHEN run-a (snapshot expired) and run-b (its replaced rows deleted) are rolled back
    # THEN each is refused saying why, and the table is unchanged
    with pytest.raises(RollbackError, match=r"snapshot of the load of run 'run-a' .* expired"):
        rollback(build_catalog(settings), TABLE, run_id="run-a")
    with pytest.raises(RollbackError, match="the rows run 'run-b' replaced are gone"):
        rollback(build_catalog(settings), TABLE, run_id="run-b")
    assert build_catalog(settings).load_table(TABLE).current_snapshot() == head
    assert rows(settings) == {"p1": (5, "run-b"), "p2": (1, "run-a"), "p3": (1, "run-c")}


def test_history_offers_every_ledger_outcome_and_filters_on_rolled_back(lake: Path, settings: Settings) -> None:
    # GIVEN a file loaded and then rolled back
    path = write_posts(lake.parent / "in", "20260101_000000", posts_csv(3))
    assert icegate("run", str(path), "--lake", str(lake)).exit_code == 0
    assert icegate("rollback", "posts", "--file", path.name, "--lake", str(lake)).exit_code == 0

    # WHEN the history is asked for rolled_back outcomes only
    result = icegate("history", "--outcome", "rolled_back", "--lake", str(lake), "--json")

    # THEN the option is accepted and lists exactly the rollback's row
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["outcome"], row["source_key"]) == ("rolled_back", str(path))
    # AND every outcome the ledger records is a choice of --outcome
    for outcome in LEDGER_OUTCOMES:
        assert icegate("history", "--outcome", outcome, "--lake", str(lake)).exit_code == 0, outcome


def test_tables_names_a_newer_load_whose_ledger_row_was_lost(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a file loaded and recorded, then a second one loaded whose ledger row could not be written
    landing = lake.parent / "in"
    first = write_posts(landing, "20260101_000000", posts_csv(3))
    second = write_posts(landing, "20260102_000000", posts_csv(2, start=100))
    assert icegate("run", str(first), "--lake", str(lake)).exit_code == 0
    with monkeypatch.context() as lost:
        lost.setattr(ledger, "record_rows", lambda *args, **kwargs: None)
        assert icegate("run", str(second), "--lake", str(lake)).exit_code == 0

    # WHEN the tables are listed  THEN the last source is the second file, which the table's newest load names
    documents = json.loads(icegate("tables", "--lake", str(lake), "--json").stdout)
    assert next(d["last_source"] for d in documents if d["table"] == "instagram_db.posts") == str(second)


def test_tables_names_the_last_load_that_stands_after_a_rollback_and_after_expiry(lake: Path) -> None:
    # GIVEN two files loaded one after the other, and the second rolled back
    landing = lake.parent / "in"
    first = write_posts(landing, "20260101_000000", posts_csv(3))
    second = write_posts(landing, "20260102_000000", posts_csv(2, start=100))
    for path in (first, second):
        assert icegate("run", str(path), "--lake", str(lake)).exit_code == 0
    assert icegate("rollback", "posts", "--file", second.name, "--lake", str(lake)).exit_code == 0

    def last_source() -> str | None:
        documents = json.loads(icegate("tables", "--lake", str(lake), "--json").stdout)
        return next(d["last_source"] for d in documents if d["table"] == "instagram_db.posts")

    # WHEN the tables are listed, THEN the last source is the first file: the second's rows left the table
    assert last_source() == str(first)

    # WHEN maintenance expires every snapshot but the newest (the rollback's), markers and all
    expired = icegate(
        "maintain", "posts", "--lake", str(lake), "--expire-older-than", "0m", "--retain-last", "1", "--no-compact",
        "--orphans-older-than", "off",
    )  # fmt: skip
    assert expired.exit_code == 0, expired.output

    # THEN the ledger still names it
    assert last_source() == str(first)
