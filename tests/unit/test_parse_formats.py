"""The format registry: one home for the suffixes icegate reads and the parser of each."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from icegate import constants
from icegate.datasets import get_dataset
from icegate.errors import FileTooLarge
from icegate.parse import COMPRESSED_SUFFIX, FORMATS, parse_bytes
from icegate.payloads import Job, SourceObject
from icegate.pipeline import run_parse
from icegate.settings import Limits, Settings
from icegate.storage import Storage

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


def _delimited(delimiter: str) -> bytes:
    lines = [delimiter.join(POSTS.column_names)]
    lines += [delimiter.join(json.dumps(row[c]) for c in POSTS.column_names) for row in ROWS]
    return ("\n".join(lines) + "\n").encode()


def _xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(list(POSTS.column_names))
    for row in ROWS:
        sheet.append([row[c] for c in POSTS.column_names])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


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
