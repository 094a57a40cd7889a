"""The CPU and wall time of each piece of ``icegate run``'s work on one posts CSV, each piece alone.

``bench_run.py`` times the whole run; this says what it is made of. Each piece is the library call the
run makes, on the whole file, in this process (the imports in a fresh one):

- start: a fresh interpreter importing what ``icegate run`` imports (CLI, pipeline, lake, SQL catalog);
- hash: SHA-256 of the file — the run hashes it twice, once beside the parse to ask the ledger whether the
  content is loaded, once in the parse to prove the bytes parsed are the bytes looked up;
- parse: ``stream_delimited`` with the records' lines; validate: ``validate_table`` per block; score:
  the quality tally; load: ``load_stream`` of the valid rows into a fresh table (dedup, plan, lineage, key
  sort, Parquet encoding, commit).

Alone, the pieces take more CPU than inside the run (the sum here exceeds ``bench_run.py``'s CPU column):
each starts its libraries' thread pools and caches cold, and polars' idle threads spin for work. So the sum
is no lower bound of the run's CPU time; the rows compare the pieces with one another.

    .venv/bin/python benchmarks/bench_pieces.py --rows 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import write_posts_csv

_IMPORTS = (
    "import icegate.cli, icegate.pipeline, icegate.lake, icegate.ledger; from pyiceberg.catalog.sql import SqlCatalog"
)


def start_cpu() -> tuple[float, float]:
    """CPU and wall seconds of a fresh interpreter importing what a run imports."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _IMPORTS], check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """What ``call`` returns, and the CPU seconds (every thread of this process) and wall seconds it took."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="where generated files are cached")
    args = parser.parse_args()
    source = (args.data / f"{args.rows}" / "post_results_20260113_175319.csv").resolve()
    if not source.exists():
        print(f"generating {args.rows:,} rows -> {source}", flush=True)
        write_posts_csv(source, args.rows)

    rows: list[tuple[str, float, float]] = []
    cpu, wall = start_cpu()
    rows.append(("start: interpreter + imports", cpu, wall))

    import polars as pl

    from icegate.datasets import NormalizeContext, get_dataset
    from icegate.lake import SourceIdentity, build_catalog, load_stream
    from icegate.parse import stream_delimited
    from icegate.quality import QualityTally
    from icegate.settings import Limits, Settings
    from icegate.streamed import stream_limits
    from icegate.validate import no_rejected_rows, validate_table

    posts = get_dataset("posts")

    def sha256() -> str:
        digest = hashlib.sha256()
        with source.open("rb") as stream:
            while block := stream.read(8 << 20):
                digest.update(block)
        return digest.hexdigest()

    _, cpu, wall = timed(sha256)
    rows.append(("hash: SHA-256 of the file, twice", 2 * cpu, 2 * wall))

    def parse() -> list[Any]:
        with source.open("rb") as stream:
            batches = stream_delimited(
                stream, source.name, posts, limits=stream_limits(Limits()), normalize=NormalizeContext()
            )
            return [batch.with_lines() for batch in batches]

    blocks, cpu, wall = timed(parse)
    rows.append(("parse: stream_delimited, lines kept", cpu, wall))

    def validate() -> list[Any]:
        return [validate_table(block, posts, file=source.name) for block in blocks]

    results, cpu, wall = timed(validate)
    rows.append(("validate: validate_table per block", cpu, wall))
    blocks.clear()
    valid = [pl.DataFrame(result.valid) for result in results]
    del results

    def tally() -> None:
        quality = QualityTally(posts, file=source.name, upload_date=date.today())
        for frame in valid:
            quality.add(frame, no_rejected_rows(posts))

    _, cpu, wall = timed(tally)
    rows.append(("score: quality tally", cpu, wall))

    with tempfile.TemporaryDirectory() as lake:
        settings = Settings(lake_root=lake)
        catalog = build_catalog(settings)
        identity = SourceIdentity(sha256="0" * 64, file=str(source), version="", run_id=f"bench-{time.time_ns()}")
        load = lambda: load_stream(catalog, posts, lambda: iter(valid), identity, namespace=settings.namespace)  # noqa: E731
        summary, cpu, wall = timed(load)
        assert summary.inserted == sum(frame.height for frame in valid), summary
        rows.append(("load: load_stream into a new table", cpu, wall))

    total = sum(cpu for _, cpu, _ in rows)
    width = max(len(name) for name, _, _ in rows)
    print(f"\n{args.rows:,} posts rows, {source.stat().st_size / 1e6:.0f} MB CSV, each piece alone\n")
    print(f"| {'piece':<{width}} | {'CPU':>7} | {'wall':>7} |")
    print(f"|{'-' * (width + 2)}|{'-' * 8}:|{'-' * 8}:|")
    for name, cpu, wall in rows:
        print(f"| {name:<{width}} | {cpu:>5.2f} s | {wall:>5.2f} s |")
    print(f"| {'sum':<{width}} | {total:>5.2f} s |         |")


if __name__ == "__main__":
    main()
