"""How fast a rerun of an already-loaded file is answered: the ledger lookup before parsing.

Loads a deterministic posts CSV of N rows into a fresh lake once, then reruns the same file and
prints the wall time of each rerun (in-process: ``LocalRunner.run``, no interpreter start-up), with
the part spent reading and hashing the file. Not part of the test run.

    .venv/bin/python benchmarks/bench_already_loaded.py --rows 1000000 [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import write_posts_csv

from icegate.payloads import SourceObject
from icegate.pipeline import LocalRunner
from icegate.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="where generated files are cached")
    args = parser.parse_args()

    source = args.data / f"{args.rows}" / "post_results_20260113_175319.csv"
    if not source.exists():
        print(f"generating {args.rows:,} rows -> {source}")
        write_posts_csv(source, args.rows)
    print(f"file: {source} ({source.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)")

    with tempfile.TemporaryDirectory() as tmp:
        runner = LocalRunner(Settings(lake_root=str(Path(tmp) / "lake")))
        started = time.perf_counter()
        first = runner.run(SourceObject(bucket="", key=str(source)))
        print(f"first run: {first.outcome} in {time.perf_counter() - started:.1f} s")
        if first.outcome != "loaded":
            sys.exit(f"the first run did not load: {first.dead_letter}")

        reruns = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            outcome = runner.run(SourceObject(bucket="", key=str(source)))
            reruns.append(time.perf_counter() - started)
            if outcome.outcome != "already_loaded":
                sys.exit(f"a rerun ended {outcome.outcome}")
        started = time.perf_counter()
        hashlib.sha256(source.read_bytes()).hexdigest()
        read_and_hash = time.perf_counter() - started

    print(f"rerun (already loaded): median {statistics.median(reruns):.3f} s, min {min(reruns):.3f} s, "
          f"max {max(reruns):.3f} s over {len(reruns)}")  # fmt: skip
    print(f"  of which reading + SHA-256 of the file: {read_and_hash:.3f} s")


if __name__ == "__main__":
    main()
