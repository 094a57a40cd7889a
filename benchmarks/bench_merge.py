"""Merge benchmark: the loader's upsert and insert_new vs pyiceberg's ``Table.upsert``, by table size.

    .venv/bin/python benchmarks/bench_merge.py                    # every scenario, median of 3
    .venv/bin/python benchmarks/bench_merge.py --only scale       # one group: vs-pyiceberg, big, scale, scattered

Data: deterministic posts (``generate.posts_frame``). A table of N rows holds post ids 0..N-1 and is
built once (cached under ``bench-data/merge/``) by loading 1 000 000-row batches, as a history of
scrapes would. A merge batch of B rows holds the B/2 newest ids of the table (a re-scrape of recent
posts, with changed likes) and B/2 new ids. The ``scattered`` group spreads the existing half over the
whole table instead: the worst case for copy-on-write.

Each run is a fresh process (imports excluded from the timing, included in the peak RSS) that
merges the batch into the table; the table is then restored to its state before the run. Wall time
is the load call: plan, read, write, commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import posts_frame

BUILD_CHUNK = 1_000_000
NAMESPACE = "instagram_db"


def table_rows_frame(rows: int, *, id_offset: int = 0, likes_bump: int = 0) -> pl.DataFrame:
    """Generated posts in the table's columns and types (what the validate stage hands the loader)."""
    from icegate.datasets import get_dataset

    posts = get_dataset("posts")
    raw = posts_frame(rows, id_offset=id_offset)
    frame = raw.rename(dict(zip(raw.columns, posts.column_names, strict=True)))
    likes = pl.col("likes")
    return frame.with_columns(
        pl.when(likes.str.ends_with("K"))
        .then(likes.str.strip_suffix("K").cast(pl.Float64) * 1000)
        .otherwise(likes.cast(pl.Float64))
        .cast(pl.Int64)
        .add(likes_bump)
        .alias("likes"),
        pl.col("comments").cast(pl.Int64),
    )


def merge_batch(table_rows: int, batch_rows: int, *, scattered: bool) -> pl.DataFrame:
    """Half of the batch's keys are in the table (the newest, or spread evenly), half are new."""
    half = batch_rows // 2
    new = table_rows_frame(batch_rows - half, id_offset=table_rows)
    if not scattered:
        existing = table_rows_frame(half, id_offset=table_rows - half, likes_bump=1)
    else:
        existing = _every(table_rows // half, half, table_rows)
    return pl.concat([existing, new])


def _every(step: int, count: int, table_rows: int) -> pl.DataFrame:
    # One id in every `step`: generate the table's rows chunk by chunk and keep those.
    parts = []
    for offset in range(0, table_rows, BUILD_CHUNK):
        chunk = table_rows_frame(min(BUILD_CHUNK, table_rows - offset), id_offset=offset)
        ids = pl.int_range(offset, offset + chunk.height, eager=True)
        parts.append(chunk.filter((ids % step == 0) & (ids // step < count)).with_columns(pl.col("likes") + 1))
    return pl.concat(parts)


def settings_for(lake: Path) -> Any:
    from icegate.settings import Settings

    return Settings(lake_root=str(lake))


def build_table(data: Path, rows: int) -> Path:
    """A lake whose posts table holds ``rows`` generated posts, loaded in 1M-row batches (cached)."""
    from icegate.datasets import get_dataset
    from icegate.lake import SourceIdentity, build_catalog, load_batch

    lake = data / "merge" / f"table-{rows}"
    if (lake / "READY").exists():
        return lake
    shutil.rmtree(lake, ignore_errors=True)
    lake.mkdir(parents=True)
    catalog = build_catalog(settings_for(lake))
    append = dataclasses.replace(get_dataset("posts"), strategy="append")
    started = time.perf_counter()
    for offset in range(0, rows, BUILD_CHUNK):
        frame = table_rows_frame(min(BUILD_CHUNK, rows - offset), id_offset=offset)
        identity = SourceIdentity(f"build-{offset}", f"build/{offset}.csv", None, "bench-build")
        load_batch(catalog, append, frame, identity, namespace=NAMESPACE)
    (lake / "READY").write_text("")
    print(f"  built a {rows:,}-row table in {time.perf_counter() - started:.1f} s -> {lake}", flush=True)
    return lake


def batch_path(data: Path, table_rows: int, batch_rows: int, scattered: bool) -> Path:
    path = data / "merge" / f"batch-{table_rows}-{batch_rows}{'-scattered' if scattered else ''}.parquet"
    if not path.exists():
        merge_batch(table_rows, batch_rows, scattered=scattered).write_parquet(path)
    return path


# --- one run in a child process ---------------------------------------------------------------


def child(mode: str, lake: Path, batch: Path) -> None:
    """Merge ``batch`` into the lake's posts table; print the timing and what happened as JSON."""
    from icegate.datasets import get_dataset
    from icegate.lake import SourceIdentity, build_catalog, load_batch, with_lineage

    posts = get_dataset("posts")
    catalog = build_catalog(settings_for(lake))
    frame = pl.read_parquet(batch)
    identity = SourceIdentity(f"bench-{time.time_ns()}", str(batch), None, "bench")
    if mode == "pyiceberg-upsert":
        from datetime import UTC, datetime

        table = catalog.load_table((NAMESPACE, "posts"))
        arrow = with_lineage(frame, posts, identity, datetime.now(UTC)).to_arrow()
        started = time.perf_counter()
        result = table.upsert(arrow, join_cols=list(posts.key))
        seconds = time.perf_counter() - started
        outcome = {"updated": result.rows_updated, "inserted": result.rows_inserted}
    else:
        dataset = dataclasses.replace(posts, strategy="upsert" if mode == "ours-upsert" else "insert_new")
        started = time.perf_counter()
        summary = load_batch(catalog, dataset, frame, identity, namespace=NAMESPACE)
        seconds = time.perf_counter() - started
        outcome = {"inserted": summary.inserted, "updated": summary.updated, "skipped": summary.skipped}
    print(json.dumps({"seconds": seconds, **outcome}), flush=True)


def run_once(mode: str, lake: Path, batch: Path, timeout: float) -> dict[str, Any]:
    """One merge in a fresh process, then the table put back as it was."""
    catalog_db = lake / "catalog.db"
    with sqlite3.connect(catalog_db) as db:
        (location,) = db.execute("SELECT metadata_location FROM iceberg_tables WHERE table_name = 'posts'").fetchone()
    files_before = {p for p in (lake / "warehouse").rglob("*") if p.is_file()}
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(lake), str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = _PeakRss(process.pid)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"ok": False, "peak_mib": peak.stop(), "error": f"timed out after {timeout:.0f} s (killed)"}
    finally:
        with sqlite3.connect(catalog_db) as db:
            db.execute("UPDATE iceberg_tables SET metadata_location = ? WHERE table_name = 'posts'", (location,))
        for path in (p for p in (lake / "warehouse").rglob("*") if p.is_file()):
            if path not in files_before:
                path.unlink()
    peak_mib = peak.stop()
    if process.returncode == 0:
        return {"ok": True, "peak_mib": peak_mib, **json.loads(stdout.strip().splitlines()[-1])}
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    how = f"killed by signal {-process.returncode}" if process.returncode < 0 else f"exit {process.returncode}"
    return {"ok": False, "peak_mib": peak_mib, "error": f"{how}: {last[:200]}"}


class _PeakRss:
    """The high-water mark of a process's resident memory (VmHWM), sampled until it ends or crashes.

    ``ru_maxrss`` of a child is useless here: Linux carries the parent's RSS over fork and exec.
    """

    def __init__(self, pid: int) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._peak_kib = 0
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while self._running:
            try:
                for line in self._status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self._peak_kib = max(self._peak_kib, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                return
            time.sleep(0.02)

    def stop(self) -> float:
        self._running = False
        self._thread.join()
        return self._peak_kib / 1024


def measure(label: str, mode: str, lake: Path, batch: Path, repeat: int, timeout: float) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        run = run_once(mode, lake, batch, timeout)
        runs.append(run)
        if not run["ok"]:
            break  # a crash or a timeout is the finding; do not repeat it
    ok = [r for r in runs if r["ok"]]
    if ok:
        seconds = statistics.median(r["seconds"] for r in ok)
        peak = max(r["peak_mib"] for r in ok)
        detail = ", ".join(f"{k} {ok[0][k]:,}" for k in ("inserted", "updated", "skipped") if k in ok[0])
        each = " / ".join(f"{r['seconds']:.2f}" for r in ok)
        print(f"{label:<58} {seconds:7.2f} s  {peak:7,.0f} MiB   ({each} s; {detail})", flush=True)
        result = {"label": label, "seconds": seconds, "peak_mib": peak}
    else:
        result = {"label": label, "seconds": None, "peak_mib": runs[-1]["peak_mib"]}
    for failed in (r for r in runs if not r["ok"]):
        print(f"{label:<58} FAILED: {failed['error']} (peak {failed['peak_mib']:,.0f} MiB)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="where tables and batches are cached")
    parser.add_argument("--only", choices=("vs-pyiceberg", "big", "scale", "scattered"), action="append")
    parser.add_argument("--pyiceberg-timeout", type=float, default=600.0)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "LAKE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return

    groups = set(args.only or ("vs-pyiceberg", "big", "scale", "scattered"))
    data = args.data.resolve()
    print(f"merge benchmark: median of {args.repeat} runs, {os.cpu_count()} CPUs; wall time of the load, peak RSS")
    timeout = 600.0
    if "vs-pyiceberg" in groups:
        print("\n10 000 rows (5 000 existing keys) into a 1 000 000-row table")
        lake, batch = build_table(data, 1_000_000), batch_path(data, 1_000_000, 10_000, False)
        measure("  icegate upsert (copy-on-write)", "ours-upsert", lake, batch, args.repeat, timeout)
        measure("  icegate insert_new", "ours-insert_new", lake, batch, args.repeat, timeout)
        measure("  pyiceberg Table.upsert", "pyiceberg-upsert", lake, batch, args.repeat, args.pyiceberg_timeout)
        print("\n1 000 rows (500 existing keys) into the same table: a size pyiceberg's upsert survives")
        small = batch_path(data, 1_000_000, 1_000, False)
        measure("  icegate upsert (copy-on-write)", "ours-upsert", lake, small, args.repeat, timeout)
        measure("  pyiceberg Table.upsert", "pyiceberg-upsert", lake, small, args.repeat, args.pyiceberg_timeout)
    if "big" in groups:
        print("\n100 000 rows (50 000 existing keys) into a 10 000 000-row table")
        lake, batch = build_table(data, 10_000_000), batch_path(data, 10_000_000, 100_000, False)
        measure("  icegate upsert (copy-on-write)", "ours-upsert", lake, batch, args.repeat, timeout)
        measure("  icegate insert_new", "ours-insert_new", lake, batch, args.repeat, timeout)
    if "scale" in groups:
        print("\nthe same 10 000-row upsert into tables of growing size")
        scale = {}
        for rows in (1_000_000, 3_000_000, 10_000_000):
            lake, batch = build_table(data, rows), batch_path(data, rows, 10_000, False)
            scale[rows] = measure(f"  into {rows:>10,} rows", "ours-upsert", lake, batch, args.repeat, timeout)
        if scale[1_000_000]["seconds"] and scale[10_000_000]["seconds"]:
            print(f"  10M / 1M cost ratio: {scale[10_000_000]['seconds'] / scale[1_000_000]['seconds']:.2f}x")
    if "scattered" in groups:
        print("\nworst case: 10 000 rows whose 5 000 existing keys are spread over the whole 1 000 000-row table")
        lake, batch = build_table(data, 1_000_000), batch_path(data, 1_000_000, 10_000, True)
        measure("  icegate upsert (copy-on-write)", "ours-upsert", lake, batch, args.repeat, timeout)
        measure("  icegate insert_new", "ours-insert_new", lake, batch, args.repeat, timeout)


if __name__ == "__main__":
    main()
