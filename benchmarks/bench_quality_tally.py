"""Quality scoring benchmark: ``score_batch`` over a whole posts file vs ``QualityTally`` over its batches.

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_quality_tally.py                # 1 M rows, 10 batches
    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_quality_tally.py --rows 200000 --batches 50

The file is the benchmark posts file with 1 % of rows rejected (likes "lots"), 1 % of rows costing
rule points and 1 % of keys repeated. Each slice is validated as the streamed validator does it
(not timed); the whole-file frames are the slices concatenated. Prints the median of ``--repeat``
runs of each (wall and CPU time, interleaved), and the tally's uniqueness state (16 bytes a row).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date

import polars as pl

from benchmarks.generate import posts_frame
from icegate.datasets import get_dataset
from icegate.dimensions import DEFAULT_WEIGHTS
from icegate.quality import QualityReport, QualityTally, resolve_floors, score_batch
from icegate.validate import validate_table

POSTS = get_dataset("posts")
FILE = "post_results_20260113_175319.csv"
UPLOAD = date(2026, 1, 14)
WEIGHTS, FLOORS, THRESHOLD = dict(DEFAULT_WEIGHTS), resolve_floors(POSTS, {}), 70.0


def raw_posts(rows: int) -> pl.DataFrame:
    frame = posts_frame(rows)
    frame = frame.rename({c: c.lower().replace(" ", "_") for c in frame.columns}).select(pl.all().cast(pl.String))
    row = pl.int_range(pl.len())
    return frame.with_columns(
        pl.when(row % 97 == 0).then(pl.lit("lots")).otherwise(pl.col("likes")).alias("likes"),
        pl.when(row % 89 == 0).then(pl.lit("??")).otherwise(pl.col("status")).alias("status"),
        pl.when(row % 83 == 1).then(pl.col("post_id").shift(1)).otherwise(pl.col("post_id")).alias("post_id"),
    )


def batches(raw: pl.DataFrame, count: int) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    size = -(-raw.height // count)
    out = []
    for start in range(0, raw.height, size):
        result = validate_table(raw.slice(start, size).to_arrow(), POSTS, file=FILE, first_row=start + 1)
        valid, rejected = pl.from_arrow(result.valid), pl.from_arrow(result.rejected)
        assert isinstance(valid, pl.DataFrame)
        assert isinstance(rejected, pl.DataFrame)
        out.append((valid, rejected))
    return out


def timed(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each run, the runs interleaved so that a busy machine slows all alike."""
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()

    parts = batches(raw_posts(args.rows), args.batches)
    valid = pl.concat([v for v, _ in parts])
    rejected = pl.concat([r for _, r in parts])

    def whole() -> QualityReport:
        return score_batch(
            valid, rejected, POSTS, file=FILE, upload_date=UPLOAD, weights=WEIGHTS, floors=FLOORS, threshold=THRESHOLD
        )

    tally = QualityTally(POSTS, file=FILE, upload_date=UPLOAD)

    def streamed() -> QualityReport:
        nonlocal tally
        tally = QualityTally(POSTS, file=FILE, upload_date=UPLOAD)
        for v, r in parts:
            tally.add(v, r)
        return tally.report(weights=WEIGHTS, floors=FLOORS, threshold=THRESHOLD)

    report = whole()
    assert report == streamed(), "the tally must report what score_batch reports"
    times = timed({"whole": whole, "streamed": streamed}, args.repeat)
    print(f"{args.rows:,} rows ({rejected.height:,} rejected), score {report.score}; median of {args.repeat}")
    for label, name in (("score_batch, whole file", "whole"), (f"QualityTally, {len(parts)} batches", "streamed")):
        wall, cpu = times[name]
        print(f"{label:28s} wall {wall * 1000:7.1f} ms   cpu {cpu * 1000:7.1f} ms")
    hashes = sum(s.estimated_size() for s in vars(tally)["_key_hashes"])
    print(f"tally uniqueness state: {hashes / 1e6:.1f} MB ({hashes / args.rows:.0f} bytes a row)")


if __name__ == "__main__":
    main()
