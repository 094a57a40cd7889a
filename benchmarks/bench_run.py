"""End-to-end benchmark: one posts CSV of N rows through the raw floor, dlt (optional) and ``icegate run``.

Each contender runs in its own child process on the same file; the table gives the median wall time, the
median CPU time (user + system, all its threads) and the peak RSS (the child's high-water mark) over
``--repeat`` runs. CPU / wall is how many of the cores a contender kept busy. Not part of the test run.

- **raw floor**: pyarrow ``read_csv`` + ``write_table`` to Parquet — reading and writing the bytes,
  nothing else;
- **dlt append** (``--with-dlt``): dlt's plain append to an Iceberg table, no validation and no
  dedup. dlt is installed into ``.bench-venv/`` (created on first use, from PyPI), never into the
  project's venv;
- **icegate run**: parse, validate, score, dedup-merge, commit, into a fresh lake — with the default
  settings, so a file over ``ICEGATE_STREAM_ABOVE_BYTES`` is streamed; such a file is also run **held
  whole** (the threshold and the whole-file limits raised), to show what streaming costs and saves.

    .venv/bin/python benchmarks/bench_run.py --rows 1000000 [--repeat 3] [--with-dlt]
    .venv/bin/python benchmarks/bench_run.py --rows 10000000 --repeat 1 --streamed-only   # the peak is the point
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import write_posts_csv

from icegate.settings import Limits

HERE = Path(__file__).resolve().parent
ICEGATE = Path(sys.executable).with_name("icegate")
BENCH_VENV = HERE.parent / ".bench-venv"
DLT_REQUIREMENT = "dlt[filesystem,pyiceberg]>=1.10,<2"
#: Measures its command's peak RSS and CPU time: the rusage of children is a high-water mark (and a sum)
#: over all of them, so each run gets a fresh wrapper.
_WRAPPER = (
    "import resource, subprocess, sys; "
    "code = subprocess.call(sys.argv[1:]); "
    "used = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(used.ru_maxrss, used.ru_utime + used.ru_stime); sys.exit(code)"
)
#: Captions hold line breaks inside quotes, as scraped text does: every reader must allow them.
_FLOOR = (
    "import sys, pyarrow.csv as c, pyarrow.parquet as pq; "
    "t = c.read_csv(sys.argv[1], parse_options=c.ParseOptions(newlines_in_values=True)); "
    "pq.write_table(t, sys.argv[2] + '/floor.parquet')"
)


@dataclass(frozen=True)
class Run:
    wall: float
    #: User + system seconds of all the child's threads.
    cpu: float
    peak_mib: float


def measure(command: list[str], env: dict[str, str] | None = None) -> Run:
    """Wall and CPU seconds and peak RSS of ``command`` in a child process (with ``env`` added to its environment)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    peak_kib, cpu = done.stdout.strip().splitlines()[-1].split()
    return Run(wall, float(cpu), int(peak_kib) / 1024)


def dlt_python() -> Path:
    """The benchmark venv's interpreter, with dlt installed (created once)."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {BENCH_VENV} with {DLT_REQUIREMENT} (once)", flush=True)
        venv.create(BENCH_VENV, with_pip=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", DLT_REQUIREMENT], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--with-dlt", action="store_true", help=f"add dlt's append (installs {BENCH_VENV.name}/)")
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="where generated files are cached")
    parser.add_argument(
        "--streamed-only", action="store_true", help="skip the run of a streamed file held whole (10 M rows: ~10 GB)"
    )
    args = parser.parse_args()

    source = (args.data / f"{args.rows}" / "post_results_20260113_175319.csv").resolve()
    if not source.exists():
        print(f"generating {args.rows:,} rows -> {source}", flush=True)
        write_posts_csv(source, args.rows)

    floor = "raw floor: pyarrow read_csv + write Parquet"
    contenders: dict[str, Callable[[Path], list[str]]] = {
        floor: lambda out: [sys.executable, "-c", _FLOOR, str(source), str(out)],
    }
    if args.with_dlt:
        python = dlt_python()
        contenders["dlt plain append to Iceberg"] = lambda out: [
            str(python),
            str(HERE / "dlt_append.py"),
            str(source),
            str(out),
        ]
    icegate = "icegate run (parse, validate, score, merge, commit)"
    contenders[icegate] = lambda out: [str(ICEGATE), "run", str(source), "--lake", str(out / "lake")]
    # The same, with the file held whole in memory instead of streamed (when it is small enough to be).
    held_whole = {"ICEGATE_STREAM_ABOVE_BYTES": str(2**40), "ICEGATE_MAX_BYTES": str(2**40)}
    held_whole["ICEGATE_MAX_UNCOMPRESSED_BYTES"] = held_whole["ICEGATE_MAX_BYTES"]
    streams = source.stat().st_size > Limits().stream_above_bytes
    if streams and not args.streamed_only:
        contenders[f"{icegate}, held whole"] = contenders[icegate]
    environments = {f"{icegate}, held whole": held_whole}

    results: dict[str, list[Run]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out"
        for i in range(args.repeat):
            for name, command in contenders.items():  # interleaved: a busy spell hits every row alike
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                results[name].append(measure(command(out), environments.get(name)))
                print(f"run {i + 1}: {name}: {results[name][-1].wall:.2f} s", flush=True)

    size_mb = source.stat().st_size / 1e6
    print(
        f"\n{args.rows:,} posts rows, {size_mb:.0f} MB CSV, {args.repeat} run(s) each, "
        "median wall and CPU (cores busy = CPU / wall) / max peak RSS\n"
    )
    width = max(map(len, results))
    print(f"| {'':<{width}} | {'wall':>8} | {'CPU':>8} | {'cores':>5} | {'peak RSS':>9} |")
    print(f"|{'-' * (width + 2)}|{'-' * 9}:|{'-' * 9}:|{'-' * 6}:|{'-' * 10}:|")
    for name, runs in results.items():
        wall = statistics.median(run.wall for run in runs)
        cpu = statistics.median(run.cpu for run in runs)
        rss = max(run.peak_mib for run in runs)
        print(f"| {name:<{width}} | {wall:>6.2f} s | {cpu:>6.2f} s | {cpu / wall:>5.2f} | {rss / 1024:>6.2f} GB |")


if __name__ == "__main__":
    main()
