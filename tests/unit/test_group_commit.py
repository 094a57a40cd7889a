"""Group commit: several files of one table in one catalog commit, a marker per file (one snapshot for inserts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from icegate.datasets import get_dataset
from icegate.lake import Incoming, SourceIdentity, build_catalog, find_loaded, load_batch, load_group, prepare
from icegate.lake import commit as commit_module
from icegate.lake.ledger import ledger_table, record_markers, scan, where
from icegate.lake.markers import MARKER_INSERTED, MARKER_RUN, MARKER_SHA256, MARKER_SKIPPED, loaded_snapshots
from icegate.lake.rollback import RollbackError, rollback
from icegate.settings import Settings
from tests.frames import observe_commits, posts_frame

POSTS = get_dataset("posts")
NS = "instagram_db"


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    Path(settings.lake_root).mkdir(parents=True)
    return build_catalog(settings)


@pytest.fixture
def commits(catalog: Catalog) -> list[str]:
    return observe_commits(catalog)


def file(name: str, *ids: str) -> Incoming:
    identity = SourceIdentity(sha256=f"sha-{name}", file=f"s3://landing/{name}.csv", version=None, run_id=f"run-{name}")
    return prepare(POSTS, posts_frame(*ids, with_urls=True), identity)


def group(catalog: Catalog, own: Incoming, *waiting: Incoming) -> Any:
    return load_group(catalog, POSTS, own, namespace=NS, waiting=lambda: list(waiting), backoff_seconds=0)


def post_ids(catalog: Catalog) -> list[str]:
    return sorted(pl.from_arrow(catalog.load_table((NS, POSTS.table)).scan().to_arrow())["post_id"])  # type: ignore[index]


def test_waiting_files_commit_with_the_loaders_own_in_one_catalog_commit(catalog: Catalog, commits: list[str]) -> None:
    # GIVEN a table holding p1, and three files waiting whose keys overlap each other and the table
    load_batch(catalog, POSTS, posts_frame("p1", with_urls=True), file("first", "p1").identity, namespace=NS)
    commits.clear()
    own, b, c = file("a", "p1", "p2"), file("b", "p2", "p3"), file("c", "p3", "p4")

    # WHEN a loader takes its turn with them waiting
    done = group(catalog, own, b, c)

    # THEN one catalog commit holds the three files
    assert commits == [POSTS.table]
    # AND each file has its own snapshot and marker, planned against the file before it (insert_new: first wins)
    assert {run: (s.inserted, s.skipped) for run, s in done.loads.items()} == {
        "run-a": (1, 1),
        "run-b": (1, 1),
        "run-c": (1, 1),
    }
    markers = {props[MARKER_RUN]: (sid, props) for sid, props in loaded_snapshots(catalog.load_table((NS, "posts")))}
    for run_id, summary in done.loads.items():
        snapshot_id, props = markers[run_id]
        assert summary.snapshot_id == snapshot_id
        assert (props[MARKER_INSERTED], props[MARKER_SKIPPED]) == ("1", "1")
    # AND every key is stored once
    assert post_ids(catalog) == ["p1", "p2", "p3", "p4"]


def test_each_file_of_a_group_is_already_loaded_on_its_rerun(catalog: Catalog) -> None:
    # GIVEN three files committed together
    own, b, c = file("a", "p1"), file("b", "p2"), file("c", "p3")
    done = group(catalog, own, b, c)
    table = catalog.load_table((NS, POSTS.table))

    # WHEN each is loaded again, alone, under a new run
    for member in (own, b, c):
        rerun = dataclasses.replace(member.identity, run_id="rerun")
        summary = load_batch(catalog, POSTS, posts_frame("p9", with_urls=True), rerun, namespace=NS)
        # THEN its marker answers "already loaded", with the snapshot of its own part of the group
        assert summary.already_loaded
        assert summary.snapshot_id == find_loaded(table, member.identity.sha256)
        assert summary.snapshot_id == done.loads[member.identity.run_id].snapshot_id
    assert post_ids(catalog) == ["p1", "p2", "p3"]


def test_a_loader_whose_file_another_group_committed_writes_nothing_and_reports_its_counts(
    catalog: Catalog, commits: list[str]
) -> None:
    # GIVEN file b committed by the loader of file a, as one of its waiting files
    own, b = file("a", "p1"), file("b", "p1", "p2")
    group(catalog, own, b)
    commits.clear()

    # WHEN b's own loader takes its turn
    done = group(catalog, b)

    # THEN it commits nothing, and reports what b's snapshot did under b's own run (not "already loaded")
    assert commits == []
    summary = done.loads["run-b"]
    assert not summary.already_loaded
    assert (summary.inserted, summary.skipped) == (1, 1)


def test_waiting_files_already_committed_or_with_the_same_content_are_not_committed_again(catalog: Catalog) -> None:
    # GIVEN file b already committed, and file a2 with the same content as the loader's own file a
    group(catalog, file("b", "p2"))
    own = file("a", "p1")
    twin = dataclasses.replace(own, identity=dataclasses.replace(own.identity, run_id="run-a2"))

    # WHEN a's loader takes its turn with b, a2 and c waiting
    done = group(catalog, own, file("b", "p2"), twin, file("c", "p3"))

    # THEN it commits a and c only: b's marker exists, a2 is a's content (its own loader finds a's marker)
    assert set(done.loads) == {"run-a", "run-c"}
    shas = [props[MARKER_SHA256] for _, props in loaded_snapshots(catalog.load_table((NS, POSTS.table)))]
    assert sorted(shas) == ["sha-a", "sha-b", "sha-c"]


def test_a_waiting_file_that_cannot_be_written_is_left_out_and_the_others_commit(catalog: Catalog) -> None:
    # GIVEN a waiting file whose rows lack the contract's columns (its own loader fails on them)
    broken = file("broken", "p8")
    broken = dataclasses.replace(broken, rows=broken.rows.drop("creator"))

    # WHEN a loader takes its turn with it and a good file waiting
    done = group(catalog, file("a", "p1"), broken, file("c", "p3"))

    # THEN the broken one is left out, with its reason, and the others are committed
    assert set(done.loads) == {"run-a", "run-c"}
    assert "creator" in done.left_out["run-broken"]
    assert post_ids(catalog) == ["p1", "p3"]


def test_a_group_that_loses_the_race_is_replanned_without_duplicating_a_key(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN another writer that commits p2 (and file b itself) between the group's plan and its commit
    real = commit_module.commit_staged
    raced: list[bool] = []

    def racing(pending: Any) -> None:
        if not raced:
            raced.append(True)
            group(catalog, file("rival", "p2"))
            group(catalog, file("b", "p3"))
        real(pending)

    monkeypatch.setattr(commit_module, "commit_staged", racing)

    # WHEN the group (a: p1 p2, b: p3) commits
    done = group(catalog, file("a", "p1", "p2"), file("b", "p3"))

    # THEN it re-planned: a skips p2 (now stored), b is not committed twice, every key once
    assert raced
    assert (done.loads["run-a"].inserted, done.loads["run-a"].skipped) == (1, 1)
    assert "run-b" not in done.loads
    assert post_ids(catalog) == ["p1", "p2", "p3"]


def test_an_upsert_group_reads_the_manifests_once_and_plans_each_file_against_the_ones_before(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an upsert table holding p1 (1 like); files a (p1→2 likes, p2), b (p2→3 likes, p3), c (p1→4 likes)
    upsert = dataclasses.replace(POSTS, strategy="upsert")

    def liked(name: str, likes: int, *ids: str) -> Incoming:
        incoming = file(name, *ids)
        return prepare(upsert, posts_frame(*ids, likes=likes, with_urls=True), incoming.identity)

    load_batch(catalog, upsert, posts_frame("p1", with_urls=True), file("first", "p1").identity, namespace=NS)
    plans: list[int] = []
    real_plan_files = commit_module.LiveFiles.__init__

    def counted(self: Any, table: Any) -> None:
        plans.append(1)
        real_plan_files(self, table)

    monkeypatch.setattr(commit_module.LiveFiles, "__init__", counted)

    # WHEN they commit as one group, each rewriting a file the one before it staged
    done = load_group(
        catalog,
        upsert,
        liked("a", 2, "p1", "p2"),
        namespace=NS,
        waiting=lambda: [liked("b", 3, "p2", "p3"), liked("c", 4, "p1")],
        backoff_seconds=0,
    )

    # THEN the table's files were listed once for the three plans
    assert plans == [1]
    # AND each file saw the rows of the files before it: a updates p1, b updates a's p2, c updates a's p1
    assert {run: (s.inserted, s.updated) for run, s in done.loads.items()} == {
        "run-a": (1, 1),
        "run-b": (1, 1),
        "run-c": (0, 1),
    }
    rows = pl.from_arrow(catalog.load_table((NS, POSTS.table)).scan().to_arrow())
    assert isinstance(rows, pl.DataFrame)
    assert sorted(rows.select("post_id", "likes").iter_rows()) == [("p1", 4), ("p2", 3), ("p3", 3)]


def test_a_load_that_finds_this_process_last_commit_as_head_reads_no_manifest(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a table this process committed to last (p1, p2), and manifest readings counted
    from pyiceberg.table import DataScan

    group(catalog, file("a", "p1", "p2"))
    readings: list[int] = []
    real = DataScan.plan_files

    def counted(self: Any) -> Any:
        readings.append(1)
        return real(self)

    monkeypatch.setattr(DataScan, "plan_files", counted)

    # WHEN the next file loads
    done = group(catalog, file("b", "p2", "p3"))

    # THEN it planned against the files kept from that commit: no manifest read, p2 still found stored
    assert readings == []
    assert (done.loads["run-b"].inserted, done.loads["run-b"].skipped) == (1, 1)

    # WHEN another writer (not this process's loads) moves the head, the next load reads the manifests
    table = catalog.load_table((NS, POSTS.table))
    p1 = table.scan(row_filter="post_id == 'p1'").to_arrow()
    at = p1.schema.get_field_index("post_id")
    table.append(p1.set_column(at, p1.schema.field(at), pa.array(["p4"], p1.schema.field(at).type)))
    readings.clear()
    done = group(catalog, file("c", "p3", "p4", "p5"))
    assert readings == [1]
    assert (done.loads["run-c"].inserted, done.loads["run-c"].skipped) == (1, 2)
    assert post_ids(catalog) == ["p1", "p2", "p3", "p4", "p5"]


def test_a_waiting_file_left_out_at_writing_leaves_its_keys_to_the_files_after_it(catalog: Catalog) -> None:
    # GIVEN an empty table, and a broken waiting file (it cannot be written) whose key p2 a later file holds too
    broken = file("broken", "p2")
    broken = dataclasses.replace(broken, rows=broken.rows.drop("creator"))

    # WHEN a loader takes its turn with the broken file, then c (p2, p3), waiting
    done = group(catalog, file("a", "p1"), broken, file("c", "p2", "p3"))

    # THEN c inserts p2 itself: the broken file, left out, stored nothing for c to skip
    assert "creator" in done.left_out["run-broken"]
    assert (done.loads["run-c"].inserted, done.loads["run-c"].skipped) == (2, 0)
    assert post_ids(catalog) == ["p1", "p2", "p3"]


def test_a_group_that_replaces_nothing_is_one_snapshot_listing_each_files_marker_and_sharing_its_data_files(
    catalog: Catalog,
) -> None:
    # GIVEN three files of one month whose keys overlap (insert_new replaces nothing)
    own, b, c = file("a", "p1", "p2"), file("b", "p2", "p3"), file("c", "p3", "p4")

    # WHEN a loader commits them as a group
    done = group(catalog, own, b, c)

    # THEN the table has one snapshot, and every file's load names it
    table = catalog.load_table((NS, POSTS.table))
    assert len(table.metadata.snapshots) == 1
    snapshot_id = table.metadata.snapshots[0].snapshot_id
    assert {run: s.snapshot_id for run, s in done.loads.items()} == dict.fromkeys(
        ("run-a", "run-b", "run-c"), snapshot_id
    )
    # AND its summary lists each file's marker with the file's own counts (inserted, skipped)
    markers = {
        props[MARKER_RUN]: (sid, props[MARKER_SHA256], props[MARKER_INSERTED], props[MARKER_SKIPPED])
        for sid, props in loaded_snapshots(table)
    }
    assert markers == {
        "run-a": (snapshot_id, "sha-a", "2", "0"),
        "run-b": (snapshot_id, "sha-b", "1", "1"),
        "run-c": (snapshot_id, "sha-c", "1", "1"),
    }
    # AND the group's rows share its data files: one file for the one partition, not one per source file
    assert len(list(table.scan().plan_files())) == 1
    assert post_ids(catalog) == ["p1", "p2", "p3", "p4"]


def test_rolling_back_one_file_of_a_group_snapshot_leaves_the_others_loaded(catalog: Catalog) -> None:
    # GIVEN three files committed as one snapshot
    own, b, c = file("a", "p1"), file("b", "p2"), file("c", "p3")
    group(catalog, own, b, c)

    # WHEN the load of b is rolled back
    undone = rollback(catalog, (NS, POSTS.table), run_id="run-b")

    # THEN only b's rows are gone, and only b counts as not loaded (its file would load again)
    assert (undone.rows_removed, undone.source_sha256) == (1, "sha-b")
    assert post_ids(catalog) == ["p1", "p3"]
    table = catalog.load_table((NS, POSTS.table))
    assert find_loaded(table, "sha-b") is None
    assert find_loaded(table, "sha-a") == find_loaded(table, "sha-c") == undone.rolled_back_snapshot_id
    # AND a's load cannot be confused with b's: rolling back a still works, and b cannot be rolled back twice
    with pytest.raises(RollbackError, match="already rolled back"):
        rollback(catalog, (NS, POSTS.table), run_id="run-b")
    assert rollback(catalog, (NS, POSTS.table), run_id="run-a").rows_removed == 1
    assert post_ids(catalog) == ["p3"]


def test_maintain_rebuilds_a_ledger_row_for_every_file_of_a_group_snapshot(catalog: Catalog) -> None:
    # GIVEN three files committed as one snapshot, and a ledger that lacks their rows
    own, b, c = file("a", "p1", "p2"), file("b", "p2", "p3"), file("c", "p9")
    done = group(catalog, own, b, c)

    # WHEN the ledger is rebuilt from the table's markers (as icegate maintain does before expiring)
    written = record_markers(catalog, NS, catalog.load_table((NS, POSTS.table)))

    # THEN each file has its own row, with its own count of inserted rows and the group's snapshot
    assert written == 3
    rows = scan(ledger_table(catalog, NS, create=False), where(outcome="loaded")).to_pylist()  # type: ignore[arg-type]
    assert {r["run_id"]: (r["rows_inserted"], r["snapshot_id"], r["source_sha256"]) for r in rows} == {
        run: (s.inserted, s.snapshot_id, f"sha-{run.removeprefix('run-')}") for run, s in done.loads.items()
    }
