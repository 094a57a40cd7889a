"""The physical lines of each CSV/TSV record, beside what pyarrow read."""

from __future__ import annotations

import codecs

import pytest

from icegate.datasets import get_dataset
from icegate.parse import parse_bytes
from icegate.parse.lines import LAST_LINE, LINE, record_lines
from icegate.settings import Limits

POSTS = get_dataset("posts")
HEADER = "post_id,creator,posted_date,likes,comments,caption,post_url\n"


def row(post_id: str, caption: str) -> str:
    return f'{post_id},c,2026-01-10,1,2,"{caption}",https://www.instagram.com/p/{post_id}/\n'


def lines_of(text: str, *, name: str = "post_results_1.csv", encoding: str = "utf-8") -> list[tuple[int, int]]:
    data = text.encode(encoding)
    if encoding == "utf-16-le":
        data = codecs.BOM_UTF16_LE + data
    parsed = parse_bytes(data, name, POSTS, limits=Limits())
    assert parsed.lines is not None
    assert parsed.lines.num_rows == parsed.table.num_rows
    return list(zip(parsed.lines.column(LINE).to_pylist(), parsed.lines.column(LAST_LINE).to_pylist(), strict=True))


def test_captions_over_several_lines_move_the_records_after_them() -> None:
    # GIVEN records whose quoted captions span 3 and 2 lines, a blank line, and CRLF endings
    text = HEADER + row("A", "one\ntwo\nthree") + row("B", "single") + "\n" + row("C", 'say ""hi""\r\nbye')
    text += row("D", "last").replace("\n", "\r\n")

    # THEN each record's first and last physical line is where an editor shows it
    assert lines_of(text) == [(2, 4), (5, 5), (7, 8), (9, 9)]


def test_tsv_and_utf16_count_the_same_lines() -> None:
    text = HEADER + row("A", "one\ntwo") + row("B", "x")
    tsv = text.replace(",", "\t")
    assert lines_of(tsv, name="post_results_1.tsv") == [(2, 3), (4, 4)]
    assert lines_of(text, encoding="utf-16-le") == [(2, 3), (4, 4)]


def test_a_stray_quote_inside_an_unquoted_value_is_counted_as_the_reader_reads_it() -> None:
    # GIVEN an unquoted value with one quote in it (pyarrow reads it literally; parity alone would not)
    text = b'a,b\n5" tall,x\n"two\nlines",y\n'

    # THEN the csv reader's count is used, and it agrees with the records
    assert record_lines(text, ",", 2, 2).to_pydict() == {LINE: [2, 3], LAST_LINE: [2, 4]}


@pytest.mark.parametrize(
    "text",
    [
        b'a,b\n1,"x\ry"\n2,z\n',
        b'a,b\n1,"x\ry"\n5" tall,z\n',
        b'a,b\r1,"x\ry"\r2,z\r',
        b'a,b\r\n1,"x\ry"\r\n2,z\r\n',
    ],
    ids=["quotes-around-values", "a-stray-quote-elsewhere", "lone-cr-line-ends", "crlf-line-ends"],
)
def test_a_lone_carriage_return_is_a_line_break_however_the_lines_are_counted(text: bytes) -> None:
    # GIVEN a quoted value holding a lone carriage return, in files counted by quote parity or, with a stray
    # quote elsewhere, by the csv reader (a streamed file's blocks may be counted either way)
    # WHEN their records' lines are counted
    # THEN the carriage return moves the record after it down a line in every one
    assert record_lines(text, ",", 2, 2).to_pydict() == {LINE: [2, 4], LAST_LINE: [3, 4]}


@pytest.mark.parametrize("rows", [1, 5])
def test_lines_that_cannot_agree_with_the_records_are_null_not_wrong(rows: int) -> None:
    assert record_lines(b"a,b\n1,2\n3,4\n", ",", rows, 2).to_pydict() == {LINE: [None] * rows, LAST_LINE: [None] * rows}


def test_formats_whose_records_are_not_lines_have_none() -> None:
    data = b'[{"post_id": "A", "creator": "c", "posted_date": "2026-01-10", "likes": "1", "comments": "2", '
    data += b'"post_url": "u"}]'
    assert parse_bytes(data, "post_results_1.json", POSTS, limits=Limits()).lines is None


def test_lines_of_spaces_are_skipped_but_records_that_start_with_spaces_count() -> None:
    # GIVEN a blank line, a line of spaces and a CR, and records that start with spaces or a tab
    text = HEADER + "\n" + " \t \r\n" + "  " + row("A", "x") + "\t" + row("B", "two\nlines") + row("C", "y")

    # THEN the records' lines skip only the blank ones
    assert lines_of(text) == [(4, 4), (5, 6), (7, 7)]


def test_in_a_tsv_a_line_of_tabs_is_a_record() -> None:
    # GIVEN a TSV whose header has two columns and a line of a single tab (two empty fields)
    # THEN that line is a record, as the reader reads it
    assert record_lines(b"a\tb\n\t\n1\t2\n", "\t", 2, 2).to_pydict() == {LINE: [2, 3], LAST_LINE: [2, 3]}


@pytest.mark.parametrize("counted_by", ["quote-parity", "csv-reader"])
def test_in_a_tsv_a_line_of_whitespace_with_other_than_the_headers_fields_is_blank(counted_by: str) -> None:
    """Regression: one line holding a tab in a three-column TSV made every record's lines null (the reader
    skipped it as blank, the count took it for a record)."""
    # GIVEN a TSV of three columns with a line of one tab, a line of spaces and tabs, and a line of two tabs,
    # counted by quote parity or (a stray quote elsewhere) by the csv reader
    stray = '5" tall' if counted_by == "csv-reader" else "x"
    text = f"a\tb\tc\n1\t{stray}\t2\n\t\n \t \n\t\t\n3\tz\t4\n".encode()

    # THEN the lines of one and of two fields are blank, and the line of three empty fields is a record
    assert record_lines(text, "\t", 3, 3).to_pydict() == {LINE: [2, 5, 6], LAST_LINE: [2, 5, 6]}
