"""Phone normaliser benchmark: rows per second of the restaurants ``phone`` column through phonenumbers.

    .venv/bin/python benchmarks/bench_phone.py                      # 100 000 rows, all distinct
    .venv/bin/python benchmarks/bench_phone.py --rows 1000000 --distinct 20000

The normaliser parses each *distinct* value once (phonenumbers is pure Python), so the cost follows
the number of distinct phones in a file, not its rows. Prints the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import pyarrow as pa

from icegate.datasets import NormalizeContext
from icegate.datasets._normalizers import _phone, phone

SPELLINGS = ("({a}) {b}-{c}", "+1 {a}-{b}-{c}", "{a}.{b}.{c}", "{a}-{b}-{c} ext. 7")


def phones(rows: int, distinct: int, seed: int = 7) -> pa.ChunkedArray:
    rng = random.Random(seed)
    pool = [
        rng.choice(SPELLINGS).format(a=rng.randint(201, 989), b=rng.randint(200, 999), c=f"{rng.randint(0, 9999):04d}")
        for _ in range(distinct)
    ]
    return pa.chunked_array([[pool[i % distinct] for i in range(rows)]], pa.string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=None, help="distinct phones (default: --rows)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    values = phones(args.rows, args.distinct or args.rows)
    seconds = []
    for _ in range(args.repeat):
        _phone.cache_clear()  # a fresh process: nothing cached from the previous run
        started = time.perf_counter()
        phone(values, NormalizeContext())
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    print(
        f"{args.rows:,} rows, {args.distinct or args.rows:,} distinct phones: "
        f"{median:.2f} s median of {args.repeat} ({args.rows / median:,.0f} rows/s)"
    )


if __name__ == "__main__":
    main()
