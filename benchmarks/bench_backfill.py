"""A backfill of many small files, interrupted part-way and resumed: files/s of each leg, and rows exact.

Generates N small posts CSVs (each overlapping the one before by half its keys, modification times
in file order) in a temp folder, backfills them into a fresh local lake in-process
(``icegate.backfill``), interrupts the first leg after K files (a KeyboardInterrupt from the
``on_done`` hook, as Ctrl-C between files), resumes with the same backfill, and prints each leg's
time and files/s, and the rows in the table (read by DuckDB's own Iceberg reader when installed,
else pyiceberg) against the distinct keys expected. Not part of the test run.

    .venv/bin/python benchmarks/bench_backfill.py --files 1000 --rows 200 --workers 4 [--interrupt-after 400]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.duckdb_reader
from generate import write_posts_csv

from icegate import backfill
from icegate.pipeline import FileOutcome, LocalRunner
from icegate.settings import Settings


def generate(folder: Path, files: int, rows: int) -> int:
    """``files`` posts CSVs of ``rows`` rows, each sharing half its keys with the one before; returns the
    distinct keys they hold."""
    step = max(1, rows // 2)
    for n in range(files):
        path = write_posts_csv(folder / f"post_results_20250101_{n:06d}.csv", rows, id_offset=n * step)
        moment = 1_700_000_000 + n
        os.utime(path, (moment, moment))
    return step * (files - 1) + rows


def table_rows(runner: LocalRunner) -> tuple[int, str]:
    """Rows of the posts table, and who counted them."""
    table = runner.catalog.load_table((runner.settings.namespace, "posts"))
    try:
        from tests.duckdb_reader import iceberg_scan
    except ImportError:  # the dev extra (DuckDB and its extensions) is not installed
        return table.scan().to_arrow().num_rows, "pyiceberg"
    return iceberg_scan(table.metadata_location, "post_id").height, "DuckDB iceberg_scan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=200, help="rows per file")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--interrupt-after", type=int, help="files of the first leg (default: 40%% of --files)")
    args = parser.parse_args()
    interrupt_after = args.interrupt_after if args.interrupt_after is not None else args.files * 2 // 5

    with tempfile.TemporaryDirectory() as tmp:
        folder, lake = Path(tmp) / "history", Path(tmp) / "lake"
        started = time.perf_counter()
        expected = generate(folder, args.files, args.rows)
        print(f"generated {args.files} files x {args.rows} rows in {time.perf_counter() - started:.1f} s "
              f"({expected:,} distinct keys)")  # fmt: skip
        runner = LocalRunner(Settings(lake_root=str(lake)))

        done: list[FileOutcome] = []

        def ctrl_c_part_way(outcome: FileOutcome) -> None:
            done.append(outcome)
            if len(done) == interrupt_after:
                raise KeyboardInterrupt

        legs = []
        plan = backfill.plan(runner.settings, str(folder), runner.catalog)
        legs.append(("first", plan, backfill.run(plan, runner, workers=args.workers, on_done=ctrl_c_part_way)))
        plan = backfill.plan(runner.settings, str(folder), runner.catalog)
        legs.append(("resumed", plan, backfill.run(plan, runner, workers=args.workers)))

        print(f"{'leg':<20} {'listed':>7} {'skipped':>8} {'ran':>6} {'loaded':>7} {'already':>8} {'dlq':>5} "
              f"{'list s':>7} {'run s':>8} {'files/s':>8}")  # fmt: skip
        for name, leg_plan, result in legs:
            print(f"{name:<20} {leg_plan.listed:>7} {len(leg_plan.loaded):>8} {len(result.outcomes):>6} "
                  f"{result.count('loaded'):>7} {result.count('already_loaded'):>8} "
                  f"{result.count('dead_lettered') + result.count('failed'):>5} {leg_plan.listing_seconds:>7.2f} "
                  f"{result.seconds:>8.1f} {result.files_per_second:>8.2f}")  # fmt: skip
        total_run = sum(result.seconds for _, _, result in legs)
        total_files = sum(len(result.outcomes) for _, _, result in legs)
        print(f"all files: {total_files} in {total_run:.1f} s, {total_files / total_run:.2f} files/s "
              f"(--workers {args.workers})")  # fmt: skip
        rows, reader = table_rows(runner)
        verdict = "exact" if rows == expected else "WRONG"
        print(f"rows in the table ({reader}): {rows:,}; expected distinct keys: {expected:,} — {verdict}")
        if rows != expected or total_files != args.files:
            sys.exit(1)


if __name__ == "__main__":
    main()
