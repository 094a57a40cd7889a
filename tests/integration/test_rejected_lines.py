"""Rejected rows say which file and which physical lines they came from, through ``icegate run``."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from click.testing import CliRunner

from icegate.cli import main

HEADER = "search_term,post_id,creator,posted_date,likes,comments,hashtags,caption,image_description,post_url,status\n"


def post(post_id: str, *, likes: str = "10", caption: str = "a slice") -> str:
    return (
        f'pizza,{post_id},creator_{post_id},2026-01-10,{likes},3,#pizza,"{caption}",a pizza,'
        f"https://www.instagram.com/p/{post_id}/,success\n"
    )


def test_rejected_rows_name_their_file_and_physical_lines_after_multi_line_captions(tmp_path: Path, lake: Path) -> None:
    # GIVEN a posts CSV whose captions span several lines before and inside the rows the schema rejects
    text = HEADER
    text += "".join(post(f"P{i:03d}") for i in range(20))  # lines 2-21
    text += post("M1", caption="line one\nline two\nline three")  # lines 22-24
    text += post("BAD1", likes="-1")  # line 25
    text += post("M2", caption="first\n\nthird")  # lines 26-28
    text += post("BAD2", likes="many", caption="spans\ntwo")  # lines 29-30
    source = tmp_path / "post_results_20260110_100000.csv"
    source.write_text(text, encoding="utf-8")

    # WHEN it is run
    result = CliRunner().invoke(main, ["run", str(source), "--lake", str(lake)], catch_exceptions=False)

    # THEN it loads, and each rejected row names the file, its record number and the lines it spans
    assert result.exit_code == 0, result.output
    (rejected_file,) = (lake / "dlq").rglob("rejected.parquet")
    rejected = pl.read_parquet(rejected_file).select("post_id", "source_file", "row_number", "line", "last_line")
    assert rejected.rows() == [
        ("BAD1", str(source), 22, 25, 25),
        ("BAD2", str(source), 24, 29, 30),
    ]
    # The lines are where the rows are: line 25 of the file is BAD1's row.
    assert text.split("\n")[25 - 1].startswith("pizza,BAD1,")
