"""What the HTML report costs during a burst: rebuilds per burst, and the time of one rebuild.

Builds a local lake whose ledger holds ``--ledger-rows`` outcomes (one append, like a compacted ledger), then
plays a burst of ``--files`` outcomes ending ``--every`` seconds apart through ``publish_quietly``, as the
loader and dead-letter Lambdas call it, once with the interval off (0: a rebuild per file, the old
behaviour) and once with ``--interval``. The clock is simulated (files end on a virtual timeline; the page's
modification time is set to the virtual moment it was written), so the count of rebuilds is exact and the
run does not take the burst's real duration. The rebuild time is measured: the median of the real rebuilds.
Then one more outcome is recorded and the scheduled refresh runs twice (the first brings it in, the second
finds nothing new).
Not part of the test run.

    .venv/bin/python benchmarks/bench_report_burst.py [--ledger-rows 10000] [--files 1000] [--every 1.0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from icegate.lake import build_catalog
from icegate.lake.ledger import append_rows
from icegate.report import publish_quietly, refresh, report_location
from icegate.settings import Settings
from icegate.storage import Storage


def _row(n: int, finished: datetime) -> dict[str, object]:
    loaded = n % 10 != 0
    return {
        "run_id": f"run-{n}",
        "outcome": "loaded" if loaded else "dead_lettered",
        "dataset": "posts",
        "table_name": "instagram_db.posts",
        "source_key": f"landing/post_results_{n:07d}.csv",
        "rows_read": 1000,
        "rows_inserted": 990 if loaded else 0,
        "quality_score": 80.0 + n % 20,
        **{f"score_{d}": 0.9 for d in ("completeness", "accuracy", "consistency", "timeliness", "uniqueness")},
        "score_validity": 0.95,
        "quality_checks": {"accuracy/likes_not_negative": n % 7},
        "error_type": None if loaded else "SchemaMismatch",
        "finished_at": finished,
    }


def _burst(settings: Settings, files: int, every: float, start: datetime) -> tuple[int, list[float]]:
    """Play the burst on a virtual clock; returns (rebuilds, seconds of each real rebuild)."""
    page = Path(report_location(settings))
    storage = Storage()
    rebuilds: list[float] = []
    for n in range(files):
        now = start + timedelta(seconds=n * every)
        started = time.perf_counter()
        if publish_quietly(settings, storage, now=now) is not None:
            rebuilds.append(time.perf_counter() - started)
            os.utime(page, (now.timestamp(), now.timestamp()))  # written at the virtual moment
    return len(rebuilds), rebuilds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger-rows", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between two files' outcomes")
    parser.add_argument("--interval", type=int, default=Settings().report_min_interval_seconds)
    parser.add_argument("--samples", type=int, default=5, help="real rebuilds timed for the interval-0 case")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        lake.mkdir()
        settings = Settings(lake_root=str(lake))
        catalog = build_catalog(settings)
        base = datetime(2026, 1, 1, tzinfo=UTC)
        history = [_row(n, base + timedelta(minutes=n)) for n in range(args.ledger_rows)]
        append_rows(catalog, settings.namespace, history)
        print(f"ledger: {args.ledger_rows:,} rows; burst: {args.files:,} files, one every {args.every:g} s")

        # Interval 0 rebuilds after every file: time a few real rebuilds, the rest is that many times more.
        every_file = settings.with_overrides(report_min_interval_seconds=0)
        _, samples = _burst(every_file, args.samples, args.every, datetime.now(UTC))
        per_rebuild = statistics.median(samples)
        print(
            f"interval 0 (every file): {args.files:,} rebuilds x {per_rebuild:.2f} s (median of {len(samples)}) "
            f"= ~{args.files * per_rebuild:,.0f} s of ledger reads"
        )

        bounded = settings.with_overrides(report_min_interval_seconds=args.interval)
        start = datetime.now(UTC) + timedelta(hours=1)  # after the page the interval-0 run left
        count, seconds = _burst(bounded, args.files, args.every, start)
        print(
            f"interval {args.interval} s: {count:,} rebuilds, {sum(seconds):,.1f} s of ledger reads "
            f"(median {statistics.median(seconds):.2f} s each)"
        )

        # The burst's last outcome, recorded after the last rebuild: only the schedule brings it in.
        append_rows(catalog, settings.namespace, [_row(args.ledger_rows, datetime.now(UTC))])
        started = time.perf_counter()
        first = refresh(catalog, settings, Storage())
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        second = refresh(catalog, settings, Storage())
        second_seconds = time.perf_counter() - started
        print(
            f"scheduled refresh: {'rebuilt' if first else 'current'} in {first_seconds:.2f} s, then "
            f"{'rebuilt' if second else 'current'} in {second_seconds:.3f} s"
        )


if __name__ == "__main__":
    main()
