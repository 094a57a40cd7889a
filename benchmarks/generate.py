"""Deterministic posts data for benchmarks: the same N rows on every machine and every run.

Pseudo-random columns come from a multiplicative hash of the row number (no RNG state, no numpy),
so the data depends only on ``rows``, ``seed`` and ``id_offset``.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import polars as pl

CAPTIONS = (
    "Fresh out of the oven 🍕🔥 Come grab a slice!",
    'The "spicy spring" is back, yes, with the honey.',
    "Margherita, the way nonna made it.\nOpen till 11pm tonight!",
    "Cash only, still worth it.",
    "Line out the door, worth it. Thanks, everyone, for coming out!",
)
TERMS = ("best pizza nyc", "ramen nyc", "tacos nyc", "bagels nyc", "coffee nyc")
DAYS = 360


def _scrambled(row: pl.Expr, seed: int, modulo: int) -> pl.Expr:
    """A well-spread pseudo-random integer in [0, modulo) for each row number."""
    mixed = ((row + seed * 7919) * 2_654_435_761) % 4_294_967_291
    return ((mixed * 40_503 + seed) % 4_294_967_291) % modulo


def posts_frame(rows: int, *, seed: int = 7, id_offset: int = 0) -> pl.DataFrame:
    """``rows`` posts with unique keys ``P<n>`` (n from ``id_offset``), realistic text and counts."""
    row = pl.int_range(id_offset, id_offset + rows, dtype=pl.Int64)
    likes = _scrambled(row, seed, 250_000)
    post_id = pl.lit("P") + row.cast(pl.String).str.zfill(9)
    return pl.select(
        pl.lit(pl.Series(TERMS)).gather(_scrambled(row, seed + 1, len(TERMS))).alias("Search Term"),
        post_id.alias("Post ID"),
        (pl.lit("creator_") + _scrambled(row, seed + 2, 50_000).cast(pl.String)).alias("Creator"),
        (pl.lit(date(2026, 1, 13)) - pl.duration(days=_scrambled(row, seed + 3, DAYS)))
        .cast(pl.Date)
        .alias("Posted Date"),
        # The largest counts come abbreviated, the way the scraper writes them ("231.4K").
        pl.when(likes > 225_000)
        .then((likes / 1000).round(1).cast(pl.String) + "K")
        .otherwise(likes.cast(pl.String))
        .alias("Likes"),
        _scrambled(row, seed + 4, 5_000).cast(pl.String).alias("Comments"),
        pl.lit("#food #nyc").alias("Hashtags"),
        pl.lit(pl.Series(CAPTIONS)).gather(_scrambled(row, seed + 5, len(CAPTIONS))).alias("Caption"),
        pl.lit("Food on a table").alias("Image Description"),
        (pl.lit("https://www.instagram.com/p/") + post_id + pl.lit("/")).alias("Post URL"),
        pl.lit("success").alias("Status"),
    )


def write_posts_csv(path: Path, rows: int, *, seed: int = 7, id_offset: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    posts_frame(rows, seed=seed, id_offset=id_offset).write_csv(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench-data/post_results_20260113_175319.csv"))
    args = parser.parse_args()
    print(write_posts_csv(args.out, args.rows))
