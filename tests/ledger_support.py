"""Posts files made to measure for the ledger, trend-gate and report tests, and a ledger reader."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl

from icegate.lake import build_catalog
from icegate.lake.ledger import COLUMN_NAMES, LEDGER_TABLE, ledger_schema
from icegate.settings import Settings


def posts_csv(rows: int, *, start: int = 0, bad_status: int = 0) -> bytes:
    """A clean posts file of ``rows`` distinct posts (ids from ``start``); ``bad_status`` rows get an
    out-of-vocabulary status, which costs consistency points but rejects no row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["search_term", "post_id", "creator", "posted_date", "likes", "comments", "hashtags", "caption",
                     "image_description", "post_url", "status"])  # fmt: skip
    for i in range(start, start + rows):
        post_id = f"P{i:06d}"
        status = "weird" if i - start < bad_status else "success"
        writer.writerow(["pizza", post_id, f"creator_{i}", "2026-01-10", str(100 + i), "3", "#pizza", "a slice",
                         "a pizza", f"https://www.instagram.com/p/{post_id}/", status])  # fmt: skip
    return out.getvalue().encode()


def write_posts(folder: Path, stamp: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"post_results_{stamp}.csv"
    path.write_bytes(content)
    return path


def ledger_rows(settings: Settings) -> pl.DataFrame:
    """The whole ledger table, read straight from the catalog."""
    table = build_catalog(settings).load_table((settings.namespace, LEDGER_TABLE))
    frame = pl.from_arrow(table.scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("finished_at")


def create_ledger_without(settings: Settings, column: str) -> None:
    """A ledger table as versions older than ``column`` created it, in a new lake."""
    Path(settings.lake_root).mkdir()
    catalog = build_catalog(settings)
    catalog.create_namespace(settings.namespace)
    old_columns = [name for name in COLUMN_NAMES if name != column]
    catalog.create_table((settings.namespace, LEDGER_TABLE), schema=ledger_schema().select(*old_columns))
