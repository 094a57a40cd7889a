"""Maintenance while loads run: compaction, manifest rewrite and expiry race real loads, and no load is lost.

The scheduled maintainer runs while the state machine loads files. A load that lost its commit to
maintenance re-plans (its planned files may have been compacted away and deleted); orphan removal
never deletes a file a load has written and not yet committed (:data:`MIN_ORPHAN_AGE`).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from icegate.datasets import get_dataset
from icegate.errors import CommitConflict
from icegate.lake import MARKER_SHA256, SourceIdentity, build_catalog, load_batch, loaded_snapshots
from icegate.lake import commit as loader_commit
from icegate.lake.maintain import MIN_ORPHAN_AGE, MaintenanceReport, UnsafeOrphanAge, maintain
from icegate.ledger import LEDGER_TABLE
from icegate.payloads import SourceObject
from icegate.pipeline import FileOutcome, LocalRunner
from icegate.settings import Settings
from tests.duckdb_reader import iceberg_scan

POSTS = get_dataset("posts")
ROWS_PER_FILE = 40
KEY_POOL = 400
LOADERS = 2
FILES_PER_LOADER = 10
#: Loaded before the race starts, so that the first maintenance already has small files and snapshots.
FILES_BEFORE = 6


def key_indexes(file_number: int) -> list[int]:
    """40 distinct keys of a 400-key pool; neighbouring files share some of theirs."""
    return [(file_number * 23 + i * 7) % KEY_POOL for i in range(ROWS_PER_FILE)]


def posts_rows(file_number: int) -> pl.DataFrame:
    ids = key_indexes(file_number)
    return pl.DataFrame(
        {
            "search_term": ["pizza nyc"] * len(ids),
            "post_id": [f"P{k:05d}" for k in ids],
            "creator": [f"creator_{k % 7}" for k in ids],
            # A few months: several partitions, each collecting one small file per load.
            "posted_date": [date(2026, 1 + k % 3, 1 + k % 28) for k in ids],
            "likes": [file_number] * len(ids),
            "comments": [k % 10 for k in ids],
            "hashtags": ["#pizza"] * len(ids),
            "caption": [f"slice {k}" for k in ids],
            "image_description": ["Food on a table"] * len(ids),
            "post_url": [f"https://www.instagram.com/p/P{k:05d}/" for k in ids],
            "status": ["success"] * len(ids),
        }
    )


def posts_csv(file_number: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"post_results_20260301_{file_number:06d}.csv"
    posts_rows(file_number).write_csv(path)
    return path


def run_files(settings: Settings, paths: list[Path]) -> list[FileOutcome]:
    """``icegate run`` on each file in turn, in this thread, with its own catalog (as one loader would)."""
    runner = LocalRunner(settings)
    return [runner.run(SourceObject(bucket="", key=str(path))) for path in paths]


def stored_keys(table_location: str) -> pl.DataFrame:
    return iceberg_scan(table_location, "post_id, creator")


@pytest.mark.slow
def test_loads_racing_maintenance_load_every_file_once_and_reruns_stay_already_loaded(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN a posts table already holding a few small loads, and more files whose keys overlap
    landing = tmp_path / "landing"
    files = [posts_csv(n, landing) for n in range(FILES_BEFORE + LOADERS * FILES_PER_LOADER)]
    lake.mkdir()
    first_outcomes = run_files(settings, files[:FILES_BEFORE])
    assert {o.outcome for o in first_outcomes} == {"loaded"}
    racing = files[FILES_BEFORE:]

    # WHEN two loaders load the rest while maintenance runs over and over, compacting, rewriting manifests
    # and expiring every snapshot but the newest (orphans: the youngest age allowed while loads run)
    outcomes: list[FileOutcome] = []
    reports: list[MaintenanceReport] = []
    loaders_done = threading.Event()

    def load(paths: list[Path]) -> None:
        outcomes.extend(run_files(settings, paths))

    def maintain_until_loads_end() -> None:
        catalog = build_catalog(settings)
        while True:
            last_round = loaders_done.is_set()
            # Five commits lost in a row to the loads is a CommitConflict: the next round tries again.
            with contextlib.suppress(CommitConflict):
                reports.append(
                    maintain(
                        catalog,
                        (settings.namespace, POSTS.table),
                        expire_older_than=timedelta(0),
                        retain_last=1,
                        orphans_older_than=MIN_ORPHAN_AGE,
                    )
                )
            if last_round:
                return

    loaders = [threading.Thread(target=load, args=(racing[i::LOADERS],)) for i in range(LOADERS)]
    maintainer = threading.Thread(target=maintain_until_loads_end)
    for thread in (*loaders, maintainer):
        thread.start()
    for thread in loaders:
        thread.join(timeout=120)
    loaders_done.set()
    maintainer.join(timeout=120)
    assert not any(thread.is_alive() for thread in (*loaders, maintainer))

    # THEN maintenance did its work while the loads ran (every round but the last began before they ended)
    during_loads = reports[:-1]
    assert sum(r.files_compacted for r in during_loads) > 0
    assert sum(r.snapshots_expired for r in during_loads) > 0
    # AND no load failed or was mistaken for another: a load that lost a race to maintenance re-planned
    assert sorted(o.source.key for o in outcomes) == sorted(str(p) for p in racing)
    assert {o.outcome for o in outcomes} == {"loaded"}, [o.error or o.dead_letter for o in outcomes]
    # AND the table, read by DuckDB, holds one row per distinct key of all files, none twice (I1, I2)
    catalog = build_catalog(settings)
    table = catalog.load_table((settings.namespace, POSTS.table))
    expected = {(f"P{k:05d}", f"creator_{k % 7}") for n in range(len(files)) for k in key_indexes(n)}
    rows = stored_keys(table.metadata_location)
    assert rows.height == len(expected)
    assert set(zip(rows["post_id"], rows["creator"], strict=True)) == expected
    # AND the loads' own counts agree: each key was inserted by exactly one load
    assert sum(o.state.to_dict()["load"]["inserted"] for o in (*first_outcomes, *outcomes)) == len(expected)
    # AND the ledger holds exactly one "loaded" row per file, whether the loader or maintenance recorded it
    ledger = catalog.load_table((settings.namespace, LEDGER_TABLE)).scan().to_arrow()
    loaded = Counter(
        sha
        for sha, outcome in zip(ledger["source_sha256"].to_pylist(), ledger["outcome"].to_pylist(), strict=True)
        if outcome == "loaded"
    )
    shas = {o.state.to_dict()["sha256"] for o in (*first_outcomes, *outcomes)}
    assert len(shas) == len(files)
    assert all(loaded[sha] == 1 for sha in shas), loaded

    # WHEN the snapshots of all loads have expired (one more maintenance, now quiet) and every file is rerun
    maintain(catalog, (settings.namespace, POSTS.table), expire_older_than=timedelta(0), retain_last=1)
    table = catalog.load_table((settings.namespace, POSTS.table))
    in_history = {props[MARKER_SHA256] for _, props in loaded_snapshots(table)}
    assert len(in_history) <= 1
    reruns = run_files(settings, files)

    # THEN each one is "already loaded", and the table is unchanged
    assert {o.outcome for o in reruns} == {"already_loaded"}
    table = catalog.load_table((settings.namespace, POSTS.table))
    assert stored_keys(table.metadata_location).height == len(expected)


def test_a_load_whose_files_were_written_before_maintenance_commits_them_after_it(
    lake: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a posts table with a few small loads
    lake.mkdir()
    catalog = build_catalog(settings)
    for n in range(4):
        identity = SourceIdentity(sha256=f"{n:064x}", file=f"batch-{n}", version=None, run_id=f"run-{n}")
        load_batch(catalog, POSTS, posts_rows(n), identity, namespace=settings.namespace)
    # AND a load that has written its data files and is held just before its commit
    written, release = threading.Event(), threading.Event()
    held_files: list[str] = []
    commit_attempts: list[list[str]] = []
    real_stage = loader_commit.stage_snapshot

    def held_stage(pending: Any, added: Any, *args: Any, **kwargs: Any) -> int:
        # Each commit attempt stages its snapshot just before committing it.
        commit_attempts.append([f.file_path for f in added])
        if not held_files:
            held_files.extend(f.file_path for f in added)
            written.set()
            release.wait(timeout=60)
        return real_stage(pending, added, *args, **kwargs)

    monkeypatch.setattr(loader_commit, "stage_snapshot", held_stage)
    summary: list[Any] = []
    late = SourceIdentity(sha256=f"{99:064x}", file="batch-late", version=None, run_id="run-late")
    loader = threading.Thread(
        target=lambda: summary.append(
            load_batch(
                build_catalog(settings), POSTS, posts_rows(99), late, namespace=settings.namespace, backoff_seconds=0
            )
        )
    )
    loader.start()
    assert written.wait(timeout=60)
    assert held_files
    assert all(Path(path.removeprefix("file://")).exists() for path in held_files)

    # WHEN maintenance asks to remove every orphan however young, it is refused (the load is still running)
    with pytest.raises(UnsafeOrphanAge):
        maintain(catalog, (settings.namespace, POSTS.table), orphans_older_than=timedelta(0))
    # AND maintenance at the youngest allowed age compacts, rewrites manifests and expires every old snapshot
    report = maintain(
        catalog,
        (settings.namespace, POSTS.table),
        expire_older_than=timedelta(0),
        retain_last=1,
        orphans_older_than=MIN_ORPHAN_AGE,
    )
    assert report.files_compacted > 0
    assert report.snapshots_expired > 0

    # THEN the held load's files survived it
    assert all(Path(path.removeprefix("file://")).exists() for path in held_files)

    # WHEN the load goes on: its commit loses to maintenance's, it re-plans against the compacted table
    release.set()
    loader.join(timeout=60)
    assert not loader.is_alive()

    # THEN its first commit attempt lost, and the second committed the very files it wrote before
    # maintenance started; every row reads back
    [loaded] = summary
    assert not loaded.already_loaded
    assert commit_attempts == [held_files, held_files]
    table = catalog.load_table((settings.namespace, POSTS.table))
    live = {task.file.file_path for task in table.scan().plan_files()}
    assert set(held_files) <= live
    expected = {(f"P{k:05d}", f"creator_{k % 7}") for n in (0, 1, 2, 3, 99) for k in key_indexes(n)}
    rows = stored_keys(table.metadata_location)
    assert set(zip(rows["post_id"], rows["creator"], strict=True)) == expected
    assert rows.height == len(expected)
