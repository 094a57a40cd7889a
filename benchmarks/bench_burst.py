"""A burst of small files into one table: group commit with workers vs one commit per file.

Generates N posts CSVs of R rows whose keys overlap by half with the next file's (file i holds keys
i·R/2 … i·R/2 + R − 1), then loads the same files into fresh local lakes three ways, in this one run:

- ``sequential``: one file after another, one commit per file (``icegate run``);
- ``8 workers, alone`` (``--with-alone``): W threads, each file committing on its own (loaders racing for
  the table, as every execution did before group commit);
- ``8 workers, grouped``: W threads, each table's waiting loads committed together (``icegate run --workers``).

Prints files/s, catalog commits that landed (the table's + the ledger's), snapshots, outcomes, and the table's row
count read back by DuckDB against the expected distinct keys. Not part of the test run.

    .venv/bin/python benchmarks/bench_burst.py --files 1000 --rows 500 --workers 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.duckdb_reader
from generate import write_posts_csv

from icegate.constants import LEDGER_TABLE
from icegate.lake import build_catalog
from icegate.payloads import SourceObject
from icegate.pipeline import LocalRunner
from icegate.settings import Settings


def generate(folder: Path, files: int, rows: int) -> list[SourceObject]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(files):
        # One second apart: distinct names, the dataset detected from the prefix.
        path = folder / f"post_results_20260113_{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}.csv"
        write_posts_csv(path, rows, id_offset=i * rows // 2)
        sources.append(SourceObject(bucket="", key=str(path)))
    return sources


def leg(name: str, sources: list[SourceObject], lake: Path, workers: int, group: bool) -> dict[str, object]:
    settings = Settings(lake_root=str(lake))
    lake.mkdir(parents=True)
    catalog = build_catalog(settings)
    commits: Counter[str] = Counter()
    commit_table = catalog.commit_table

    def counted(table: Any, *args: Any, **kwargs: Any) -> Any:
        # Catalog commits that landed, per table: what a burst contends for.
        response = commit_table(table, *args, **kwargs)
        commits[table.name()[-1]] += 1
        return response

    catalog.commit_table = counted  # type: ignore[method-assign]
    runner = LocalRunner(settings, catalog=catalog)
    started = time.perf_counter()
    outcomes = runner.run_many(sources, workers=workers, group=group)
    seconds = time.perf_counter() - started
    table = build_catalog(settings).load_table((settings.namespace, "posts"))
    return {
        "name": name,
        "seconds": seconds,
        "files_per_s": len(sources) / seconds,
        "commits": f"{commits['posts']} + {commits[LEDGER_TABLE]}",
        "snapshots": len(table.metadata.snapshots),
        "outcomes": Counter(o.outcome for o in outcomes),
        "metadata": table.metadata_location,
    }


def duckdb_count(metadata_location: str) -> int | str:
    try:
        from tests.duckdb_reader import iceberg_scan
    except ImportError as exc:  # the dev extra is not installed
        return f"n/a ({exc})"
    frame = iceberg_scan(metadata_location, order_by="post_id")
    if frame["post_id"].n_unique() != frame.height:
        return f"{frame.height} rows but {frame['post_id'].n_unique()} keys: DUPLICATES"
    return frame.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--with-alone", action="store_true", help="also W threads each committing alone (slow: they race)"
    )
    args = parser.parse_args()
    expected = (args.files - 1) * (args.rows // 2) + args.rows

    with tempfile.TemporaryDirectory() as tmp:
        sources = generate(Path(tmp) / "landing", args.files, args.rows)
        print(f"{args.files} files x {args.rows} rows, half their keys shared with the next file: {expected} keys")
        legs = [("sequential", 1, False), (f"{args.workers} workers, grouped", args.workers, True)]
        if args.with_alone:
            legs.insert(1, (f"{args.workers} workers, alone", args.workers, False))
        results = []
        for name, workers, group in legs:
            results.append(leg(name, sources, Path(tmp) / name.replace(" ", "-").replace(",", ""), workers, group))
            print(f"{name}: {results[-1]['seconds']:.1f} s", flush=True)
        header = f"| {'run':<22} | {'seconds':>8} | {'files/s':>8} | {'commits':>12} | {'snapshots':>9} | outcomes |"
        print(f"\n{header} DuckDB rows (expected {expected}) |")
        print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|{'-' * 14}|{'-' * 11}|---|---|")
        for r in results:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))  # type: ignore[attr-defined]
            print(
                f"| {r['name']:<22} | {r['seconds']:8.1f} | {r['files_per_s']:8.1f} | {r['commits']:>12} | "
                f"{r['snapshots']:>9} | {outcomes} | {duckdb_count(str(r['metadata']))} |"
            )
        base = results[0]["files_per_s"]
        for r in results[1:]:
            print(f"{r['name']} / sequential: {r['files_per_s'] / base:.1f}x files/s")  # type: ignore[operator]


if __name__ == "__main__":
    main()
