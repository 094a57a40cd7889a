"""What maintenance does to a table after many small loads: files, snapshots, manifests, planning and reads.

Loads N small posts batches into a fresh local lake (SQLite catalog, as ``icegate run`` makes it), each
batch sharing a quarter of its keys with an earlier one, then runs ``icegate.lake.maintain.maintain``
(compaction to the table's ``write.target-file-size-bytes``, manifest rewrite, snapshot expiry) and
prints the table before and after, and whether DuckDB's own Iceberg reader reads the same rows (count
and an order-independent checksum of every column). Not part of the test run.

- ``--via loader`` (default): ``icegate.lake.load_batch`` directly, with the posts contract as an
  **upsert**: batch n re-scrapes a quarter of batch n/2's posts, which rewrites the file that holds
  them (copy-on-write overwrites: the loads that leave the most manifests behind), and adds a file of
  new posts to the current month. The default because the posts contract itself is ``insert_new``
  (shared keys are skipped, no file is rewritten), and 500 pipeline runs take longer on 2 cores.
- ``--via pipeline``: ``LocalRunner`` on CSV files, parse to load and the ledger, with the posts contract
  as it is (``insert_new``: each batch shares a quarter of its keys with the one before, which are
  skipped; every load is an append, posts dated over a year).

    .venv/bin/python benchmarks/bench_maintain.py [--loads 500] [--rows 200] [--via loader|pipeline]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.duckdb_reader
from generate import write_posts_csv

from icegate.datasets import get_dataset
from icegate.lake import SourceIdentity, build_catalog, load_batch
from icegate.lake.maintain import maintain
from icegate.payloads import SourceObject
from icegate.pipeline import LocalRunner
from icegate.settings import Settings
from tests.duckdb_reader import iceberg_scan

POSTS = get_dataset("posts")
#: A batch shares this share of its keys with the batch before it.
OVERLAP = 0.25


def loader_batch(number: int, rows: int) -> pl.DataFrame:
    """Batch ``number``: ``rows`` posts, a quarter of them re-scraped posts of batch ``number // 2``.

    A post is dated by the batch that first brought it (a day per batch, so about 30 batches per
    monthly partition): new posts add a file to the current month, re-scraped ones rewrite a file of
    an older one (copy-on-write), with newer likes.
    """
    step = max(1, round(rows * (1 - OVERLAP)))
    older = number // 2
    ids = [*range(number * step, (number + 1) * step), *range(older * step, older * step + rows - step)]
    if number == 0:
        ids = list(range(rows))
    return pl.DataFrame(
        {
            "search_term": ["pizza nyc"] * len(ids),
            "post_id": [f"P{k:09d}" for k in ids],
            "creator": [f"creator_{k % 97}" for k in ids],
            "posted_date": [date(2025, 1, 1) + timedelta(days=k // step) for k in ids],
            "likes": [number * 1000 + k % 1000 for k in ids],
            "comments": [k % 50 for k in ids],
            "hashtags": ["#pizza #nyc"] * len(ids),
            "caption": [f"slice number {k}" for k in ids],
            "image_description": ["Food on a table"] * len(ids),
            "post_url": [f"https://www.instagram.com/p/P{k:09d}/" for k in ids],
            "status": ["success"] * len(ids),
        }
    )


def load_all(settings: Settings, loads: int, rows: int, via: str, scratch: Path) -> float:
    """The loads, one after the other; returns seconds taken."""
    started = time.perf_counter()
    if via == "loader":
        catalog = build_catalog(settings)
        upsert = dataclasses.replace(POSTS, strategy="upsert")
        for n in range(loads):
            identity = SourceIdentity(sha256=f"{n:064x}", file=f"batch-{n:04d}", version=None, run_id=f"bench-{n}")
            load_batch(catalog, upsert, loader_batch(n, rows), identity, namespace=settings.namespace)
            _progress(n, loads, started)
    else:
        runner = LocalRunner(settings)
        step = max(1, round(rows * (1 - OVERLAP)))
        for n in range(loads):
            source = write_posts_csv(scratch / f"post_results_20260113_{n:06d}.csv", rows, id_offset=n * step)
            outcome = runner.run(SourceObject(bucket="", key=str(source)))
            if outcome.outcome != "loaded":
                sys.exit(f"load {n} ended {outcome.outcome}: {outcome.error or outcome.dead_letter}")
            _progress(n, loads, started)
    return time.perf_counter() - started


def _progress(n: int, loads: int, started: float) -> None:
    if (n + 1) % 50 == 0 or n + 1 == loads:
        print(f"  {n + 1}/{loads} loads, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def measure(settings: Settings, plans: int) -> dict[str, Any]:
    table = build_catalog(settings).load_table((settings.namespace, POSTS.table))
    snapshot = table.current_snapshot()
    assert snapshot is not None
    tasks = list(table.scan().plan_files())
    sizes = [task.file.file_size_in_bytes for task in tasks]
    plan_times = []
    for _ in range(plans):
        started = time.perf_counter()
        list(table.scan().plan_files())
        plan_times.append(time.perf_counter() - started)
    read_times = []
    for _ in range(3):
        started = time.perf_counter()
        rows = table.scan().to_arrow().num_rows
        read_times.append(time.perf_counter() - started)
    started = time.perf_counter()
    duck = iceberg_scan(table.metadata_location, "post_id, creator")
    duck_seconds = time.perf_counter() - started
    # Order-independent: a sum of per-row hashes (a multiset hash), over every column DuckDB returns.
    checksum = sum(duck.hash_rows(seed=11).to_list()) % 2**64
    return {
        "data files": len(tasks),
        "avg data file": f"{statistics.mean(sizes) / 1024:,.1f} KiB" if sizes else "-",
        "total data bytes": f"{sum(sizes):,}",
        "rows (pyiceberg)": f"{rows:,}",
        "snapshots": len(table.metadata.snapshots),
        "manifests (current)": len(snapshot.manifests(table.io)),
        "metadata.json": f"{len(table.io.new_input(table.metadata_location)) / 1024:,.1f} KiB",
        f"plan_files median of {plans}": f"{statistics.median(plan_times) * 1000:,.1f} ms",
        "full scan median of 3": f"{statistics.median(read_times) * 1000:,.1f} ms",
        "DuckDB full read": f"{duck_seconds * 1000:,.1f} ms",
        "_duck": (duck.height, checksum),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=500)
    parser.add_argument("--rows", type=int, default=200, help="rows per batch")
    parser.add_argument("--via", choices=("loader", "pipeline"), default="loader")
    parser.add_argument("--plans", type=int, default=7, help="plan_files timings to take the median of")
    parser.add_argument("--retain-last", type=int, default=10, help="snapshots maintenance keeps (expiry age: 0)")
    args = parser.parse_args()

    strategy = "upsert (shared keys rewrite their files)" if args.via == "loader" else "insert_new (contract)"
    how = "icegate.lake.load_batch" if args.via == "loader" else "the pipeline (LocalRunner, CSV files)"
    print(f"loads: {args.loads} x {args.rows} rows via {how}, posts as {strategy}, {OVERLAP:.0%} of keys shared")
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        lake.mkdir()
        settings = Settings(lake_root=str(lake))
        seconds = load_all(settings, args.loads, args.rows, args.via, Path(tmp) / "landing")
        print(f"loading: {seconds:.0f} s ({seconds / args.loads * 1000:.0f} ms per load)")
        before = measure(settings, args.plans)
        started = time.perf_counter()
        report = maintain(
            build_catalog(settings),
            (settings.namespace, POSTS.table),
            expire_older_than=timedelta(0),
            retain_last=args.retain_last,
        )
        maintain_seconds = time.perf_counter() - started
        after = measure(settings, args.plans)

    print(
        f"maintain: {maintain_seconds:.1f} s — compacted {report.files_compacted} files into {report.files_written}, "
        f"packed {report.manifests_before} manifests into {report.manifests_after}, expired "
        f"{report.snapshots_expired} snapshots (retain last {args.retain_last}), deleted {report.files_deleted} "
        f"files they alone used, {report.orphans_deleted} orphans (older than 3 days)"
    )
    width = max(len(name) for name in before)
    print(f"\n{'':<{width}}  {'before':>14}  {'after':>14}")
    for name in before:
        if not name.startswith("_"):
            print(f"{name:<{width}}  {before[name]!s:>14}  {after[name]!s:>14}")
    (rows_before, sum_before), (rows_after, sum_after) = before["_duck"], after["_duck"]
    print(f"{'DuckDB rows':<{width}}  {rows_before:>14,}  {rows_after:>14,}")
    print(f"{'DuckDB checksum':<{width}}  {sum_before:>14x}  {sum_after:>14x}")
    print(f"\nidentical: {'yes' if (rows_before, sum_before) == (rows_after, sum_after) else 'no'}")


if __name__ == "__main__":
    main()
