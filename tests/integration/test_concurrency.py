"""Loaders in separate processes committing to one table at once, on SQLite and on PostgreSQL.

Each test asserts the loader's invariants (ARCHITECTURE §5): (I1) the table's rows are the rows of
the files that loaded, (I2) no business key twice, (I3) each source in exactly one snapshot,
(I4) every input ends loaded, (I5) a crash leaves no visible partial data.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from icegate.datasets import Dataset, get_dataset
from icegate.lake import MARKER_SHA256, SourceIdentity, build_catalog, load_batch, loaded_snapshots
from icegate.settings import Settings
from tests.conftest import REPO
from tests.integration.loader_worker import CRASH, SCRAPES

POSTS = get_dataset("posts")
WORKERS = 8
FILES_PER_WORKER = 10
ROWS_PER_FILE = 120
KEY_POOL = 2000


@dataclass(frozen=True)
class Batch:
    name: str
    path: Path
    sha256: str
    frame: pl.DataFrame

    def job_entry(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256}


def save(frame: pl.DataFrame, folder: Path, name: str) -> Batch:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    frame.write_parquet(path)
    return Batch(name, path, hashlib.sha256(path.read_bytes()).hexdigest(), frame)


def key_indexes(file_number: int) -> list[int]:
    """120 distinct keys of a 2 000-key pool; neighbouring files share most of theirs."""
    return [(file_number * 53 + i * 7) % KEY_POOL for i in range(ROWS_PER_FILE)]


def posts_batch(file_number: int, folder: Path) -> Batch:
    ids = key_indexes(file_number)
    frame = pl.DataFrame(
        {
            "search_term": ["pizza"] * len(ids),
            "post_id": [f"P{k:05d}" for k in ids],
            "creator": [f"creator_{k % 7}" for k in ids],
            "posted_date": [date(2025, 11 + k % 2, 1 + k % 28) for k in ids],
            "likes": [file_number] * len(ids),
            "comments": [0] * len(ids),
            "hashtags": ["#pizza"] * len(ids),
            "caption": [None] * len(ids),
            "image_description": [None] * len(ids),
            "post_url": [f"https://www.instagram.com/p/P{k:05d}/" for k in ids],
            "status": ["success"] * len(ids),
        },
        schema_overrides={"caption": pl.String, "image_description": pl.String},
    )
    return save(frame, folder, f"post_results_{file_number:03d}")


def scrapes_batch(file_number: int, folder: Path) -> Batch:
    """File n scraped on day n: a later file number is a newer scrape of the keys it shares."""
    ids = key_indexes(file_number)
    frame = pl.DataFrame(
        {
            "item_id": [f"I{k:05d}" for k in ids],
            "shop": [f"shop_{k % 3}" for k in ids],
            "price": [file_number * 10_000 + k for k in ids],
            "scraped_on": [date(2025, 1, 1) + timedelta(days=file_number)] * len(ids),
        }
    )
    return save(frame, folder, f"scrapes_{file_number:03d}")


def run_workers(
    settings: Settings, dataset: Dataset, jobs: list[list[Batch]], *, crash: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """One process per job, all released at the same moment once ready; waits for all of them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if crash:
        env[CRASH] = crash
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.loader_worker",
                json.dumps(
                    {
                        "worker": f"worker-{i}",
                        "lake_root": settings.lake_root,
                        "catalog_uri": settings.catalog_uri,
                        "dataset": dataset.name,
                        "batches": [b.job_entry() for b in batches],
                    }
                ),
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, batches in enumerate(jobs)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", process.communicate(timeout=60)[1][-3000:]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def summaries(results: list[subprocess.CompletedProcess[str]]) -> list[dict[str, Any]]:
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for result in results for line in result.stdout.splitlines()]


def stored(settings: Settings, dataset: Dataset) -> pl.DataFrame:
    table = build_catalog(settings).load_table((settings.namespace, dataset.table))
    frame = pl.from_arrow(table.scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def marker_counts(settings: Settings, dataset: Dataset) -> Counter[str]:
    table = build_catalog(settings).load_table((settings.namespace, dataset.table))
    return Counter(props[MARKER_SHA256] for _, props in loaded_snapshots(table))


def assert_unique_keys(frame: pl.DataFrame, dataset: Dataset) -> None:
    duplicated = frame.filter(pl.struct(list(dataset.key)).is_duplicated())
    assert duplicated.height == 0, f"duplicate keys: {duplicated.select(dataset.key).unique().head()}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("catalog_settings", "dataset"),
    [("sqlite", POSTS), ("postgres", POSTS), ("postgres", SCRAPES)],
    # The upsert run (copy-on-write under contention) goes to the catalog built for many writers;
    # one run per combination would add half a minute to every CI run.
    ids=["sqlite-insert_new", "postgres-insert_new", "postgres-upsert-by-scrape-date"],
    indirect=["catalog_settings"],
)
def test_eight_loaders_with_overlapping_keys_load_every_file_exactly_once(
    catalog_settings: Settings, dataset: Dataset, tmp_path: Path
) -> None:
    # GIVEN 80 files whose keys overlap heavily, spread over 8 loader processes (interleaved, so that
    # newer and older scrapes of a key arrive in no particular order)
    make = posts_batch if dataset is POSTS else scrapes_batch
    batches = [make(n, tmp_path / "batches") for n in range(WORKERS * FILES_PER_WORKER)]
    jobs = [batches[w::WORKERS] if w % 2 == 0 else batches[w::WORKERS][::-1] for w in range(WORKERS)]

    # WHEN all of them load into one table at the same time
    results = summaries(run_workers(catalog_settings, dataset, jobs))

    # THEN every file was loaded, none was mistaken for another (I4)
    assert sorted(r["name"] for r in results) == sorted(b.name for b in batches)
    assert not any(r["already_loaded"] for r in results)
    # AND each file's rows were all accounted for
    for r in results:
        assert r["inserted"] + r["updated"] + r["skipped"] == ROWS_PER_FILE
    # AND the table holds exactly one row per distinct key of all files (I1, I2)
    table = stored(catalog_settings, dataset)
    expected_keys = {k for n in range(len(batches)) for k in key_indexes(n)}
    assert table.height == len(expected_keys) == sum(r["inserted"] for r in results)
    assert_unique_keys(table, dataset)
    # AND each source is in exactly one snapshot (I3)
    assert marker_counts(catalog_settings, dataset) == Counter({b.sha256: 1 for b in batches})
    if dataset is SCRAPES:
        # AND each key holds its newest scrape, whatever order the files committed in
        newest = {k: n for n in range(len(batches)) for k in key_indexes(n)}
        expected = {(f"I{k:05d}", f"shop_{k % 3}"): n * 10_000 + k for k, n in newest.items()}
        assert dict(zip(zip(table["item_id"], table["shop"], strict=True), table["price"], strict=True)) == expected


def test_the_same_file_loaded_by_two_processes_at_once_is_loaded_once(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    # GIVEN one file, delivered twice (S3 events are at least once)
    batch = posts_batch(0, tmp_path / "batches")

    # WHEN two loaders take it at the same moment
    results = summaries(run_workers(catalog_settings, POSTS, [[batch], [batch]]))

    # THEN one loaded it and the other reports it as already loaded, into the same snapshot
    assert sorted(r["already_loaded"] for r in results) == [False, True]
    assert len({r["snapshot_id"] for r in results}) == 1
    assert stored(catalog_settings, POSTS).height == ROWS_PER_FILE
    assert marker_counts(catalog_settings, POSTS) == Counter({batch.sha256: 1})


@pytest.mark.parametrize(
    ("crash", "exit_code"), [("before-commit", 17), ("after-commit", 18)], ids=["before-commit", "after-commit"]
)
def test_a_loader_killed_around_its_commit_leaves_no_partial_data_and_a_rerun_completes(
    catalog_settings: Settings, tmp_path: Path, crash: str, exit_code: int
) -> None:
    # GIVEN a table that already holds one file's rows
    first, second = posts_batch(0, tmp_path / "batches"), posts_batch(1, tmp_path / "batches")
    catalog = build_catalog(catalog_settings)
    identity = SourceIdentity(sha256=first.sha256, file=first.name, version=None, run_id="setup")
    load_batch(catalog, POSTS, first.frame, identity, namespace=catalog_settings.namespace)
    before = stored(catalog_settings, POSTS)

    # WHEN a loader of an overlapping second file dies (os._exit, no cleanup) around its commit
    [killed] = run_workers(catalog_settings, POSTS, [[second]], crash=crash)
    assert killed.returncode == exit_code, killed.stderr[-3000:]

    # THEN the table shows either none of the second file (before) or all of it (after)
    expected = len(set(key_indexes(0)) | set(key_indexes(1)))
    after_crash = stored(catalog_settings, POSTS)
    assert after_crash.height == (before.height if crash == "before-commit" else expected)
    assert_unique_keys(after_crash, POSTS)

    # WHEN the state machine reruns the load
    [rerun] = summaries(run_workers(catalog_settings, POSTS, [[second]]))

    # THEN it completes the load, or recognises that its own run's commit had landed and reports
    # what that commit inserted (not "already loaded": the marker names this run)
    assert rerun["already_loaded"] is False
    assert rerun["inserted"] == expected - before.height
    final = stored(catalog_settings, POSTS)
    assert final.height == expected
    assert_unique_keys(final, POSTS)
    assert marker_counts(catalog_settings, POSTS) == Counter({first.sha256: 1, second.sha256: 1})
