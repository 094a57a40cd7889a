"""End-to-end benchmark: ``icegate run`` on a deterministic posts CSV of N rows, on a fresh lake.

Prints wall time and the peak RSS of the ``icegate`` process. Not part of the test run.

    .venv/bin/python benchmarks/bench_run.py --rows 1000000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import write_posts_csv

ICEGATE = Path(sys.executable).with_name("icegate")


def run_once(source: Path, lake: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one ``icegate run`` in a child process."""
    shutil.rmtree(lake, ignore_errors=True)
    started = time.perf_counter()
    # The rusage of children is a high-water mark over all of them: run each in a fresh wrapper.
    wrapper = (
        "import resource, subprocess, sys; "
        "code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, str(ICEGATE), "run", str(source), "--lake", str(lake)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"icegate run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return wall, peak_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="where generated files are cached")
    args = parser.parse_args()

    source = args.data / f"{args.rows}" / "post_results_20260113_175319.csv"
    if not source.exists():
        print(f"generating {args.rows:,} rows -> {source}")
        write_posts_csv(source, args.rows)
    size_mb = source.stat().st_size / 1e6
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(args.repeat):
            wall, rss = run_once(source, Path(scratch) / "lake")
            runs.append((wall, rss))
            print(f"run {i + 1}: {wall:.2f} s wall, {rss:,.0f} MiB peak RSS")
    walls = [w for w, _ in runs]
    print(
        f"icegate run, {args.rows:,} posts rows ({size_mb:.0f} MB CSV): "
        f"median {statistics.median(walls):.2f} s wall (min {min(walls):.2f}), "
        f"peak RSS {max(r for _, r in runs):,.0f} MiB"
    )


if __name__ == "__main__":
    main()
