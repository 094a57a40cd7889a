"""The format registry: one home for the suffixes icegate reads and the parser of each."""

from __future__ import annotations

import gzip
import io
import json
import math
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from icegate import constants
from icegate.datasets import get_dataset
from icegate.errors import FileTooLarge
from icegate.parse import COMPRESSED_SUFFIX, FORMATS, decode_parquet, decode_xlsx, parse_bytes
from icegate.parse.doubles import double_strings, double_text
from icegate.payloads import Job, SourceObject
from icegate.pipeline import run_parse
from icegate.settings import Limits, Settings
from icegate.storage import Storage
from icegate.validate import validate_table

POSTS = get_dataset("posts")
ROWS = [
    {
        "search_term": "food",
        "post_id": f"C{i}",
        "creator": "chef",
        "posted_date": "2026-01-13",
        "likes": str(10 * i),
        "comments": "2",
        "hashtags": "#pizza",
        "caption": f"caption {i}, with a comma",
        "image_description": "a pizza",
        "post_url": f"https://www.instagram.com/p/C{i}/",
        "status": "success",
    }
    for i in range(1, 4)
]


def _delimited(delimiter: str, rows: list[dict[str, Any]] = ROWS) -> bytes:
    lines = [delimiter.join(POSTS.column_names)]
    lines += [delimiter.join(json.dumps(row[c]) for c in POSTS.column_names) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _xlsx(rows: list[dict[str, Any]] = ROWS) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(list(POSTS.column_names))
    for row in rows:
        sheet.append([row[c] for c in POSTS.column_names])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _with_cell_value(data: bytes, old: str, new: str) -> bytes:
    """The workbook with one stored cell value (``<v>``) replaced, as another program or Excel would store it."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert content.count(f"<v>{old}</v>".encode()) == 1
                content = content.replace(f"<v>{old}</v>".encode(), f"<v>{new}</v>".encode())
            target.writestr(item, content)
    return out.getvalue()


def _outcome(data: bytes, suffix: str) -> list[tuple[int, list[str]]]:
    """Each rejected row of a posts file, parsed and validated: its row number and the checks it failed."""
    name = f"post_results_20260113_175319{suffix}"
    result = validate_table(parse_bytes(data, name, POSTS, limits=Limits()).table, POSTS, file=name)
    return [(row["row_number"], row["failed_checks"]) for row in result.rejected.to_pylist()]


def _parquet() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), buffer)
    return buffer.getvalue()


#: The same three posts rows written in the format of each suffix.
WRITERS: dict[str, Callable[[], bytes]] = {
    ".csv": lambda: _delimited(","),
    ".tsv": lambda: _delimited("\t"),
    ".xlsx": _xlsx,
    ".json": lambda: json.dumps(ROWS).encode(),
    ".ndjson": lambda: "\n".join(json.dumps(row) for row in ROWS).encode(),
    ".jsonl": lambda: "\n".join(json.dumps(row) for row in ROWS).encode(),
    ".parquet": _parquet,
}


def test_the_suffixes_the_pipeline_accepts_are_exactly_the_registered_formats() -> None:
    # GIVEN the copy of the suffixes that cdk/ (the EventBridge rule) and the folder walk use,
    # which cannot import the parsers
    # WHEN it is compared with the registry  THEN every accepted suffix has a parser and vice versa
    assert set(constants.SUPPORTED_SUFFIXES) == {*FORMATS, COMPRESSED_SUFFIX}
    assert len(constants.SUPPORTED_SUFFIXES) == len(set(constants.SUPPORTED_SUFFIXES))


def test_every_registered_format_has_a_test_file() -> None:
    # A format added to the registry must be added to the round-trip below too.
    assert set(WRITERS) == set(FORMATS)


@pytest.mark.parametrize("suffix", sorted(FORMATS), ids=str)
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_every_registered_format_reads_the_same_rows(suffix: str, compressed: bool) -> None:
    # GIVEN the same posts rows written in the format of a registered suffix, maybe gzipped
    data = WRITERS[suffix]()
    name = f"post_results_20260113_175319{suffix}"
    if compressed:
        data, name = gzip.compress(data), name + COMPRESSED_SUFFIX

    # WHEN it is parsed
    parsed = parse_bytes(data, name, POSTS, limits=Limits())

    # THEN every format gives the same table, and reports the format its registry entry names
    assert parsed.table.to_pylist() == ROWS
    assert parsed.format == FORMATS[suffix].name


def test_an_oversized_object_is_refused_by_the_pipeline_in_the_parser_s_words(tmp_path: Path) -> None:
    # GIVEN a stored file one byte over the limit, of a format held whole (a CSV would be streamed)
    data = json.dumps(ROWS).encode()
    source = tmp_path / "post_results_20260113_175319.json"
    source.write_bytes(data)
    limits = Limits(max_bytes=len(data) - 1)
    settings = Settings(lake_root=str(tmp_path / "lake"), limits=limits)

    # WHEN the parse stage sees its stored size, and the parser its bytes
    with pytest.raises(FileTooLarge) as by_stage:
        run_parse(Job(source=SourceObject(bucket="", key=str(source)), run_id="run-1"), settings, Storage())
    with pytest.raises(FileTooLarge) as by_parser:
        parse_bytes(data, str(source), POSTS, limits=limits)

    # THEN both refuse it with one message naming the size, the limit and the setting
    assert str(by_stage.value) == str(by_parser.value)
    assert f"{len(data):,} bytes" in str(by_stage.value)
    assert "ICEGATE_MAX_BYTES" in str(by_stage.value)


def test_a_csv_over_the_streamed_limit_is_refused_by_its_stored_size_naming_that_limit(tmp_path: Path) -> None:
    # GIVEN a CSV over the limit of a file held whole, and one byte over the limit of a streamed one
    data = _delimited(",")
    source = tmp_path / "post_results_20260113_175319.csv"
    source.write_bytes(data)
    settings = Settings(lake_root=str(tmp_path / "lake"), limits=Limits(max_bytes=10, max_stream_bytes=len(data) - 1))

    # WHEN the parse stage sees it
    with pytest.raises(FileTooLarge) as refused:
        run_parse(Job(source=SourceObject(bucket="", key=str(source)), run_id="run-1"), settings, Storage())

    # THEN it is refused before it is read, naming its size and the streamed-file setting
    assert f"{len(data):,} bytes" in str(refused.value)
    assert "ICEGATE_MAX_STREAM_BYTES" in str(refused.value)


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        pytest.param("1.23456789012346E+18", "1.23456789012346E+18", id="as-excel-stores-a-big-number"),
        pytest.param("9.007199254740994E+15", "9.00719925474099E+15", id="just-past-2**53"),
        pytest.param("1e+16", "1E+16", id="round-number"),
    ],
)
def test_an_xlsx_count_a_double_cannot_hold_is_rejected_as_the_same_csv_value_is(stored: str, shown: str) -> None:
    # GIVEN a posts workbook whose second row's likes is a double past 2**53 (a spreadsheet holds every number as
    # one, so the count's last digits are gone), and a CSV file holding that value's text
    rows = [dict(row) for row in ROWS]
    rows[1]["likes"] = 0.125  # a placeholder replaced by the stored double
    workbook = _with_cell_value(_xlsx(rows), "0.125", stored)
    rows[1]["likes"] = stored

    # WHEN both are parsed and validated
    read = parse_bytes(workbook, "post_results_20260113_175319.xlsx", POSTS, limits=Limits()).table

    # THEN the cell reads as the spreadsheet shows it (15 significant digits, no made-up ones), and its row is
    # rejected as the CSV's is, rather than loaded as a count the file never held
    assert read.column("likes").to_pylist()[1] == shown
    assert _outcome(workbook, ".xlsx") == _outcome(_delimited(",", rows), ".csv") == [(2, ["likes:type(long)"])]


def test_an_xlsx_whole_double_below_2_53_reads_as_its_digits() -> None:
    # GIVEN a workbook whose likes is the largest double below 2**53 that Excel shows in full, stored with an exponent
    rows = [dict(row) for row in ROWS]
    rows[1]["likes"] = 0.125
    workbook = _with_cell_value(_xlsx(rows), "0.125", "9.00719925474099E+15")

    # WHEN it is parsed and validated  THEN it is that count, exactly, and loads
    read = parse_bytes(workbook, "post_results_20260113_175319.xlsx", POSTS, limits=Limits()).table
    assert read.column("likes").to_pylist()[1] == "9007199254740990"
    assert _outcome(workbook, ".xlsx") == []


def test_parquet_doubles_read_as_the_same_doubles_in_a_spreadsheet() -> None:
    # GIVEN doubles as pandas writes an integer column with a gap (a phone, a count past 1e10), with binary noise,
    # small, and past 2**53, in a Parquet file and in a workbook
    doubles = [12125550100.0, 12345678901.0, None, 1.5, 0.1 + 0.2, 1e-07, 12345678901.25, 1.23456789012346e18, -0.0]
    buffer = io.BytesIO()
    pq.write_table(pa.table({"n": list(range(len(doubles))), "v": pa.array(doubles, pa.float64())}), buffer)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in [["n", "v"], *enumerate(doubles)]:
        sheet.append(list(row))
    xlsx = io.BytesIO()
    workbook.save(xlsx)

    # WHEN both are decoded
    from_parquet = decode_parquet(buffer.getvalue(), "x.parquet", limits=Limits()).column("v").to_pylist()
    from_xlsx = decode_xlsx(xlsx.getvalue(), "x.xlsx", limits=Limits()).column("v").to_pylist()

    # THEN each reads as the same text: a whole number as its digits, never in exponent form below 2**53
    assert from_parquet == from_xlsx
    assert from_parquet == [
        "12125550100", "12345678901", None, "1.5", "0.3", "1e-07", "12345678901.25", "1.23456789012346E+18", "0",
    ]  # fmt: skip


def test_a_parquet_whole_double_past_1e10_is_a_phone_and_a_count_as_in_csv() -> None:
    # GIVEN a restaurants file whose phone and followers pandas wrote as doubles (a gap made them float64)
    rows = {"restaurant_name": ["Joe", "Al"], "city": ["New York"] * 2, "instagram_handle": ["@joe", "@al"],
            "posts_count": ["1", "1"]}  # fmt: skip
    buffer = io.BytesIO()
    phones, followers = [12125550100.0, None], [5.0, 12345678901.0]
    pq.write_table(pa.table({**rows, "phone": pa.array(phones), "followers": pa.array(followers)}), buffer)
    csv = "restaurant_name,city,instagram_handle,posts_count,phone,followers\n"
    csv += "Joe,New York,@joe,1,12125550100,5\nAl,New York,@al,1,,12345678901\n"

    # WHEN both are parsed and validated
    name = "instagram_results_20260114_093000"
    restaurants = get_dataset("restaurants")
    parsed = [parse_bytes(data, name + suffix, restaurants, limits=Limits()).table
              for data, suffix in ((buffer.getvalue(), ".parquet"), (csv.encode(), ".csv"))]  # fmt: skip
    results = [validate_table(table, restaurants, file=name) for table in parsed]

    # THEN the Parquet file gives the CSV's phone (so the same merge key) and count, and no row is rejected
    assert parsed[0].to_pylist() == parsed[1].to_pylist()
    assert [result.valid.to_pylist() for result in results] == [results[1].valid.to_pylist()] * 2
    assert results[0].rejected.num_rows == 0
    assert results[0].valid.column("followers").to_pylist() == [5, 12345678901]


def test_parquet_doubles_are_written_by_the_spreadsheet_rule_for_any_double() -> None:
    # GIVEN doubles of every kind: random bits, whole numbers around 2**53, decimals of up to 15 and 17 digits,
    # every magnitude, and the edges (zeros, nan, infinities, the exponent thresholds)
    draw = random.Random(20260113)
    doubles: list[float | None] = [None, 0.0, -0.0, math.nan, math.inf, -math.inf, 1e-4, 9.999e-5, 1e10, 0.1 + 0.2]
    doubles += [2.0**53 + step for step in (-2, -1, 0, 2)] + [-(2.0**53)]
    for _ in range(5000):
        doubles.append(struct.unpack("<d", draw.getrandbits(64).to_bytes(8, "little"))[0])
        doubles.append(float(draw.randint(-(10**17), 10**17)))
        doubles.append(round(draw.uniform(-1e12, 1e12), draw.randint(0, 8)))
        doubles.append(draw.uniform(-1, 1) * 10 ** draw.randint(-8, 16))

    # WHEN they are cast as a Parquet column is (vectorised)
    cast = double_strings(pa.array(doubles, pa.float64())).to_pylist()

    # THEN each is the text a spreadsheet cell holding it reads as
    assert cast == [None if value is None else double_text(value) for value in doubles]


def test_an_xlsx_row_of_spaces_is_a_rejected_row_as_in_csv_and_an_empty_row_is_skipped_as_a_blank_line() -> None:
    # GIVEN posts rows with, between two of them, a row whose every cell is a space and an empty row (no cells),
    # in a workbook and in a CSV file (the empty row a blank line)
    first, last = dict(ROWS[0]), dict(ROWS[1], likes="x")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in [list(POSTS.column_names), [first[c] for c in POSTS.column_names], [" "] * len(POSTS.column_names),
                [None] * len(POSTS.column_names), [last[c] for c in POSTS.column_names]]:  # fmt: skip
        sheet.append(row)
    xlsx = io.BytesIO()
    workbook.save(xlsx)
    csv = _delimited(",", [first]) + (",".join([" "] * len(POSTS.column_names)) + "\n\n").encode()
    csv += _delimited(",", [last]).split(b"\n", 1)[1]

    # WHEN both are parsed and validated
    outcomes = [_outcome(xlsx.getvalue(), ".xlsx"), _outcome(csv, ".csv")]

    # THEN both read three rows: the row of spaces is row 2, rejected for its empty key, and the bad count is row 3
    assert (
        outcomes[0] == outcomes[1] == [(2, ["creator:not_nullable", "post_id:not_nullable"]), (3, ["likes:type(long)"])]
    )


def test_an_xlsx_number_in_a_zero_padded_format_reads_as_the_text_it_shows_as_in_csv() -> None:
    # GIVEN a restaurants workbook whose phone is a number formatted to show its leading zero (a London number),
    # and a CSV file holding the text the sheet shows
    header = ["restaurant_name", "city", "phone", "instagram_handle", "followers", "posts_count"]
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(header)
    sheet.append(["Dishoom", "London", 2079460958, "@dishoom", 1000, 10])
    sheet.cell(2, 3).number_format = "00000000000"
    xlsx = io.BytesIO()
    workbook.save(xlsx)
    csv = ",".join(header) + "\nDishoom,London,02079460958,@dishoom,1000,10\n"

    # WHEN both are parsed
    name, restaurants = "instagram_results_20260114_093000", get_dataset("restaurants")
    from_xlsx = parse_bytes(xlsx.getvalue(), name + ".xlsx", restaurants, limits=Limits()).table
    from_csv = parse_bytes(csv.encode(), name + ".csv", restaurants, limits=Limits()).table

    # THEN the workbook gives the CSV's phone, not the number without its zero (a valid US number elsewhere)
    assert from_xlsx.to_pylist() == from_csv.to_pylist()


@pytest.mark.parametrize(
    ("value", "number_format", "shown"),
    [
        pytest.param(123, "00000", "00123", id="zero-padded"),
        pytest.param(123.0, "00000", "00123", id="whole-double-zero-padded"),
        pytest.param(1234567, "00000", "1234567", id="longer-than-its-zeros"),
        pytest.param(42, '"ID-"000000', "ID-000042", id="quoted-prefix"),
        pytest.param(12345678, "000\\-00\\-0000", "012-34-5678", id="escaped-literals"),
        pytest.param(1.5, "00000", "1.5", id="fraction-kept"),
        pytest.param(1234, "#,##0", "1234", id="thousands-separator-kept"),
        pytest.param(1.5, "0.00", "1.5", id="decimals-kept"),
        pytest.param(5, "00000;-00000", "5", id="sections-kept"),
    ],
)
def test_xlsx_number_formats_honoured_are_exactly_the_zero_padded_ones(
    value: float, number_format: str, shown: str
) -> None:
    # GIVEN a cell holding a number in a number format
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["a", "b"])
    sheet.append([value, "x"])
    sheet.cell(2, 1).number_format = number_format
    xlsx = io.BytesIO()
    workbook.save(xlsx)

    # WHEN it is decoded  THEN a zero-padded integer format gives the text it shows; any other, the number
    assert decode_xlsx(xlsx.getvalue(), "x.xlsx", limits=Limits()).column("a").to_pylist() == [shown]
