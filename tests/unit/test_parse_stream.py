"""The streamed parse: a CSV/TSV file read a block at a time gives parse_bytes' rows, lines and errors.

Every equivalence is checked over many block sizes, down to a byte, so that records, quoted values with
line breaks and doubled quotes, CRLF line ends, blank lines, byte-order marks, multi-byte characters and
legacy encodings all straddle block boundaries. Tables are compared after casting ``large_string`` to
``string`` (the one difference allowed) and combining chunks.
"""

from __future__ import annotations

import codecs
import gzip
import io
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from benchmarks.generate import posts_frame
from icegate.datasets import Column, Dataset, get_dataset
from icegate.errors import EmptyFile, FileTooLarge, IcegateError, MalformedFile, UnsupportedFormat
from icegate.parse import ParsedTable, canonical_name, parse_bytes, stream_delimited
from icegate.parse.lines import LAST_LINE, LINE
from icegate.parse.text_stream import transcoded
from icegate.settings import Limits

LIMITS = Limits()
POSTS = get_dataset("posts")
RESTAURANTS = get_dataset("restaurants")
NAME = "post_results_20260113_175319.csv"
SAMPLES = Path(__file__).parents[2] / "samples" / "landing"
CORPUS = Path(__file__).parents[3] / "shared" / "corpus" / "csv-spectrum" / "csvs"
#: Block sizes from one byte up: every boundary falls inside something somewhere.
BLOCK_SIZES = (1, 2, 3, 5, 8, 13, 31, 64, 100, 257, 1000, 4096, 1 << 20)
#: Fewer sizes for the error cases: a byte, a record or two, several records, the whole file.
ERROR_BLOCK_SIZES = (1, 150, 700, 1 << 20)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def normalised(table: pa.Table) -> pa.Table:
    """The table with ``large_string`` columns cast to ``string`` and its chunks combined."""
    fields = [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type) for f in table.schema]
    return table.cast(pa.schema(fields)).combine_chunks()


def whole(data: bytes, name: str = NAME, dataset: Dataset = POSTS, **options: Any) -> ParsedTable:
    return parse_bytes(data, name, dataset, limits=options.pop("limits", LIMITS), **options)


def batches(source: Any, name: str = NAME, dataset: Dataset = POSTS, **options: Any) -> list[ParsedTable]:
    return list(stream_delimited(source, name, dataset, limits=options.pop("limits", LIMITS), **options))


def concatenated(parts: list[ParsedTable]) -> pa.Table:
    return pa.concat_tables([normalised(part.with_lines()) for part in parts]).combine_chunks()


class Trickle:
    """A source with only ``read(n)``, like an S3 body: short reads of at most ``most`` bytes; records requests."""

    def __init__(self, data: bytes, *, most: int | None = None) -> None:
        self._data = io.BytesIO(data)
        self._most = most
        self.largest_request = 0
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        self.largest_request = max(self.largest_request, size if size >= 0 else 1 << 62)
        if self._most is not None and size >= 0:
            size = min(size, self._most)
        chunk = self._data.read(size)
        self.bytes_read += len(chunk)
        return chunk


def posts_bytes(rows: int, *, line_end: str = "\n", separator: str = ",", seed: int = 7) -> bytes:
    """A realistic posts CSV (benchmarks.generate): quoted captions with commas, doubled quotes, line breaks, emoji."""
    out = io.BytesIO()
    posts_frame(rows, seed=seed).write_csv(out, separator=separator, line_terminator=line_end)
    return out.getvalue()


def any_columns(data: bytes) -> Dataset:
    """A dataset taking every column of ``data``'s header, none required (for files of any header)."""
    names = whole_header(data)
    columns = tuple(Column(name, required=False) for name in dict.fromkeys(canonical_name(n) or "x" for n in names))
    return Dataset(name="any", file_patterns=("*",), columns=columns, key=(columns[0].name,))


def whole_header(data: bytes) -> list[str]:
    from icegate.parse import decode_csv

    return decode_csv(data, "x.csv", limits=LIMITS).column_names


# ------------------------------------------------------------------------------------------------
# 1. Equivalence: the batches, concatenated, are the whole-file parse
# ------------------------------------------------------------------------------------------------


def _cp1252_posts() -> bytes:
    text = posts_bytes(30).decode("utf-8").replace("🍕🔥", "café crème “déjà vu” – naïve")
    return text.encode("cp1252")


def _blank_lines() -> bytes:
    lines = posts_bytes(20).split(b"\n")
    lines[1:1] = [b"", b"   ", b"\t"]
    lines[8:8] = [b"", b""]
    return b"\n\n" + b"\n".join(lines) + b"\n\n  \n"


def _stray_quote() -> bytes:
    rows = posts_bytes(20).split(b"\n")
    rows[3] = rows[3].replace(b"#food #nyc", b'#food 5" tall', 1)
    rows[12] = rows[12].replace(b"Food on a table", b'a 12" pie', 1)
    return b"\n".join(rows)


def _long_quoted_value() -> bytes:
    caption = "\n".join(f"line {i}" for i in range(1100))  # more lines than the parity walk steps over
    return POSTS_HEADER + b"\n".join(_row(f"P{i}", caption if i == 3 else f"c{i}") for i in range(8)) + b"\n"


def _two_members(data: bytes, cut: int) -> bytes:
    return gzip.compress(data[:cut]) + gzip.compress(data[cut:])


POSTS_HEADER = ",".join(POSTS.column_names).encode() + b"\n"


def _row(post_id: str, caption: str) -> bytes:
    quoted = '"' + caption.replace('"', '""') + '"'
    return (
        f"food,{post_id},chef,2026-01-13,10,2,#pizza,{quoted},a pizza,https://www.instagram.com/p/{post_id}/,success"
    ).encode()


EQUIVALENT: dict[str, tuple[bytes, str, Dataset, dict[str, Any]]] = {
    "sample-posts": ((SAMPLES / "post_results_20260113_175319.csv").read_bytes(), NAME, POSTS, {}),
    "sample-restaurants": (
        (SAMPLES / "instagram_results_20260114_093000.csv").read_bytes(),
        "instagram_results_20260114_093000.csv",
        RESTAURANTS,
        {},
    ),
    "generated-lf": (posts_bytes(40), NAME, POSTS, {}),
    "generated-crlf": (posts_bytes(40, line_end="\r\n"), NAME, POSTS, {}),
    "generated-tsv": (posts_bytes(40, separator="\t"), NAME.replace(".csv", ".tsv"), POSTS, {}),
    "utf8-bom": (codecs.BOM_UTF8 + posts_bytes(30), NAME, POSTS, {}),
    "gzip-two-members-cut-mid-record": (_two_members(posts_bytes(40), 777), NAME + ".gz", POSTS, {}),
    "gzip-under-a-plain-name": (gzip.compress(posts_bytes(20)), NAME, POSTS, {}),
    "cp1252-configured": (_cp1252_posts(), NAME, POSTS, {"encoding": "cp1252"}),
    "utf8-while-cp1252-configured": (posts_bytes(30), NAME, POSTS, {"encoding": "cp1252"}),
    "utf16-le-bom": (codecs.BOM_UTF16_LE + posts_bytes(20).decode().encode("utf-16-le"), NAME, POSTS, {}),
    "utf16-be-configured": (posts_bytes(20).decode().encode("utf-16-be"), NAME, POSTS, {"encoding": "utf-16-be"}),
    "blank-and-whitespace-lines": (_blank_lines(), NAME, POSTS, {}),
    "no-final-line-break": (posts_bytes(20).rstrip(b"\n"), NAME, POSTS, {}),
    "stray-quote-in-unquoted-values": (_stray_quote(), NAME, POSTS, {}),
    "tsv-crlf-stray-quote": (
        posts_bytes(20, separator="\t", line_end="\r\n").replace(b"#food #nyc", b'#food 5" tall', 2),
        NAME.replace(".csv", ".tsv"),
        POSTS,
        {},
    ),
    "lone-cr-line-ends": (posts_bytes(20).replace(b"\n", b"\r"), NAME, POSTS, {}),
    "lone-cr-inside-quotes": (posts_bytes(20).replace(b"nonna made it.\n", b"nonna made it.\r"), NAME, POSTS, {}),
    "lone-cr-inside-quotes-and-a-stray-quote": (
        _stray_quote().replace(b"nonna made it.\n", b"nonna made it.\r"),
        NAME,
        POSTS,
        {},
    ),
    "quoted-value-of-1100-lines": (_long_quoted_value(), NAME, POSTS, {}),
}


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES, ids=lambda size: f"block-{size}")
@pytest.mark.parametrize("case", list(EQUIVALENT), ids=str)
def test_batches_concatenate_to_the_whole_file_parse(case: str, block_bytes: int) -> None:
    # GIVEN a file parse_bytes accepts
    data, name, dataset, options = EQUIVALENT[case]
    expected = whole(data, name, dataset, **options)

    # WHEN it is streamed a block at a time
    parts = batches(io.BytesIO(data), name, dataset, block_bytes=block_bytes, **options)

    # THEN the batches are the whole-file parse cut into pieces: rows, order, lines, format, ignored headers
    assert concatenated(parts).equals(normalised(expected.with_lines()))
    assert {part.format for part in parts} == {expected.format}
    assert all(part.ignored_columns == expected.ignored_columns for part in parts)
    assert all(part.table.num_rows for part in parts)


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES, ids=lambda size: f"block-{size}")
@pytest.mark.parametrize("case", sorted(p.stem for p in CORPUS.glob("*.csv")), ids=str)
def test_csv_spectrum_cases_stream_as_they_parse_whole(case: str, block_bytes: int) -> None:
    # GIVEN a conformance-corpus file (quotes, line breaks in values, CRLF, UTF-8) and a dataset of its columns
    data = (CORPUS / f"{case}.csv").read_bytes()
    if case.endswith("_crlf") and b"\r\n" not in data:
        data = data.replace(b"\n", b"\r\n")
    dataset = any_columns(data)
    try:
        expected = normalised(whole(data, "x.csv", dataset).with_lines())
    except EmptyFile:
        pytest.skip("parse_bytes refuses this case (the errors are compared elsewhere)")

    # WHEN it is streamed  THEN the rows and lines are the same
    assert concatenated(batches(io.BytesIO(data), "x.csv", dataset, block_bytes=block_bytes)).equals(expected)


@pytest.mark.parametrize("most", [1, 3, 1000], ids=lambda most: f"reads-of-{most}")
def test_short_reads_of_a_body_like_source_change_nothing(most: int) -> None:
    # GIVEN a source whose read(n) returns fewer bytes than asked, like a network body
    data = gzip.compress(codecs.BOM_UTF8 + posts_bytes(40, line_end="\r\n"))

    # WHEN it is streamed  THEN the result is the whole-file parse
    parts = batches(Trickle(data, most=most), NAME + ".gz", block_bytes=500)
    assert concatenated(parts).equals(normalised(whole(data, NAME + ".gz").with_lines()))


def test_a_utf8_file_under_a_legacy_setting_needs_no_second_look_from_a_source_that_cannot_seek() -> None:
    # GIVEN a UTF-8 file with characters beyond ASCII, a cp1252 setting, and a source without seek
    data = posts_bytes(30)

    # WHEN it is streamed  THEN it is read as UTF-8, as parse_bytes reads it
    parts = batches(Trickle(data), block_bytes=64, encoding="cp1252")
    assert concatenated(parts).equals(normalised(whole(data, encoding="cp1252").with_lines()))


def _utf8_at_first_cp1252_later() -> bytes:
    """cp1252 whose first accented text ("Ã©", bytes C3 A9) is valid UTF-8; "é" (E9) 60 rows later is not."""
    rows = [_row("A", "Ã© first"), *(_row(f"P{i}", f"caption {i}") for i in range(60)), _row("Z", "café")]
    return POSTS_HEADER + "\n".join(row.decode() for row in rows).encode("cp1252") + b"\n"


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_legacy_file_that_looks_like_utf8_at_first_is_read_in_its_encoding_from_a_seekable_source(
    compressed: bool,
) -> None:
    # GIVEN a cp1252 file whose first accented text happens to be valid UTF-8, and is invalid UTF-8 only later
    data = _utf8_at_first_cp1252_later()
    data = gzip.compress(data) if compressed else data
    expected = whole(data, encoding="cp1252")
    assert expected.table.column("caption")[0].as_py() == "Ã© first"

    # WHEN it is streamed from a seekable source  THEN the whole file is read as cp1252, as parse_bytes reads it
    parts = batches(io.BytesIO(data), block_bytes=64, encoding="cp1252")
    assert concatenated(parts).equals(normalised(expected.with_lines()))


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES, ids=lambda size: f"block-{size}")
def test_a_header_ended_by_a_lone_carriage_return_and_a_block_that_starts_with_a_blank_line(block_bytes: int) -> None:
    # GIVEN a header ended by a lone carriage return, and line feeds (blank lines) later in the file
    data = b'a,b,c\r,"""",385\r1,7,\n\n,,\n' + b"".join(b"%d,x,y\n\n" % i for i in range(20))
    expected = whole(data, "x.csv", ABC)

    # WHEN it is streamed  THEN a block that starts with a line feed counts it as a line of its own
    parts = batches(io.BytesIO(data), "x.csv", ABC, block_bytes=block_bytes)
    assert concatenated(parts).equals(normalised(expected.with_lines()))


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES, ids=lambda size: f"block-{size}")
def test_records_whose_last_value_is_a_quoted_line_break_stream_as_they_parse_whole(block_bytes: int) -> None:
    # GIVEN records whose last value is a quoted line break, the file's last record among them (a block that
    # ends after one ends with a quote and a line feed, as a quote opened there and never closed would)
    data = b"a,b,c\n" + b"".join(b'%d,x,"\n"\n' % i if i % 3 == 0 else b"%d,y,z\n" % i for i in range(31))
    expected = whole(data, "x.csv", ABC)
    assert expected.table.num_rows == 31

    # WHEN it is streamed  THEN every block reads as the whole file does
    parts = batches(io.BytesIO(data), "x.csv", ABC, block_bytes=block_bytes)
    assert concatenated(parts).equals(normalised(expected.with_lines()))


# ------------------------------------------------------------------------------------------------
# 2. The same errors, at the same places
# ------------------------------------------------------------------------------------------------


def _good_rows(count: int) -> bytes:
    return b"".join(_row(f"P{i}", f"caption {i}") + b"\n" for i in range(count))


def _plain_rows(count: int) -> bytes:
    """Rows without any quote (a quote opened before them is never closed)."""
    return b"".join(
        f"food,P{i},chef,2026-01-13,10,2,#pizza,caption {i},a pizza,https://www.instagram.com/p/P{i}/,success\n".encode()
        for i in range(count)
    )


def error_of(parse: Callable[[], object]) -> tuple[type[IcegateError], str | None, str]:
    with pytest.raises(IcegateError) as caught:
        parse()
    return type(caught.value), caught.value.location, str(caught.value)


#: For the small files whose header is a, b(, c).
ABC = Dataset(name="abc", file_patterns=("*",), columns=tuple(Column(n, required=False) for n in "abc"), key=("a",))
#: 60 rows (6 KB): an error after them is in a late block at all but the largest block size.
LATE = POSTS_HEADER + _good_rows(60)
GZIPPED = gzip.compress(LATE)
ERRORS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "sample-missing-required-columns": ((SAMPLES / "post_results_20260116_120000.csv").read_bytes(), {}),
    "empty": (b"", {}),
    "blank-lines": (b"\n\n", {}),
    "whitespace": (b"  \r\n \n", {}),
    "bom-only": (codecs.BOM_UTF8, {}),
    "header-only": (POSTS_HEADER, {}),
    "header-only-no-line-break": (POSTS_HEADER.rstrip(), {}),
    "header-and-blank-lines": (POSTS_HEADER + b"\n\n  \n", {}),
    "too-many-fields-late": (LATE + b"a,b,c,d,e,f,g,h,i,j,k,l\n" + _good_rows(5), {}),
    "too-few-fields-late": (LATE + b"a,b\n" + _good_rows(5), {}),
    "too-few-fields-crlf": ((LATE + b"a,b\n" + _good_rows(5)).replace(b"\n", b"\r\n"), {}),
    "too-few-fields-lone-cr-line-ends": ((LATE + b"a,b\n" + _good_rows(5)).replace(b"\n", b"\r"), {}),
    "ragged-after-multiline-value": (b'a,b,c\n1,"x\ny\nz",3\n\n4,5,6,7\n8,9\n', {"name": "x.csv", "dataset": ABC}),
    "ragged-row-after-quotes-inside-unquoted-values": (
        b'a,b,c\n1,2,5" tall\n4,5\n6,7,3" wide\n8,9\n',
        {"name": "x.csv", "dataset": ABC},
    ),
    "ragged-row-whose-text-is-a-line-of-an-earlier-value": (
        b'a,b,c\n1,"x\n4,5\ny",3\n4,5\n',
        {"name": "x.csv", "dataset": ABC},
    ),
    "unclosed-quote-last-column": (LATE + b'x,y,z,2026-01-01,1,1,h,c,d,u,"never closed\n' + _good_rows(5), {}),
    "unclosed-quote-no-line-break": (LATE + b'x,y,z,2026-01-01,1,1,h,c,d,u,"never closed', {}),
    "unclosed-quote-after-multiline": (b'a,b\n1,"two\nlines"\n3,"never closed\n', {"name": "x.csv", "dataset": ABC}),
    "unclosed-quote-inner-column": (LATE + b'x,y,z,2026-01-01,1,1,h,"oops,d,u,s\n' + _plain_rows(5), {}),
    "ragged-rows-in-several-blocks": (LATE + b"a,b\n" + _good_rows(20) + b"a,b,c\n" + _good_rows(5), {}),
    "over-100-ragged-rows": (LATE + b"a,b\n" * 120 + _good_rows(5), {}),
    "unclosed-quote-in-header": (b'"a,b\n1,2\n', {"name": "x.csv", "dataset": ABC}),
    "latin1-byte-late": (LATE + _row("Q", "caf\u00e9").decode().encode("latin-1") + b"\n", {}),
    "cp1252-undefined-byte-late": (LATE + b"a,b,c,d,e,f,g,\x81,i,j,k\n", {"encoding": "cp1252"}),
    "cp1252-undefined-byte-late-lone-cr-line-ends": (
        (LATE + b"a,b,c,d,e,f,g,\x81,i,j,k\n").replace(b"\n", b"\r"),
        {"encoding": "cp1252"},
    ),
    "nul-byte-late": (LATE + _row("Q", "x\x00y") + b"\n", {}),
    "utf16-lone-surrogate-late": (codecs.BOM_UTF16_LE + LATE.decode().encode("utf-16-le") + b"\x00\xd8a\x00", {}),
    "too-many-columns": (posts_bytes(5), {"limits": Limits(max_columns=10)}),
    "field-over-the-limit-late": (LATE + _row("Q", "é" * 50 + "x") + b"\n", {"limits": Limits(max_field_bytes=100)}),
    "workbook-named-csv": (b"PK\x03\x04" + bytes(100), {}),
    "unknown-encoding": (b"a\n\xe9\n", {"encoding": "klingon"}),
    "gzip-truncated": (GZIPPED[: len(GZIPPED) // 2], {"name": NAME + ".gz"}),
    "gzip-corrupt": (GZIPPED[:12] + b"\xff" * 40 + GZIPPED[52:], {"name": NAME + ".gz"}),
    "gzip-then-garbage": (GZIPPED + b"trailing junk", {"name": NAME + ".gz"}),
    "gzip-past-the-uncompressed-limit": (GZIPPED, {"limits": Limits(max_uncompressed_bytes=2_000)}),
    "gzip-bomb": (gzip.compress(bytes(8 << 20)), {"limits": Limits(max_uncompressed_bytes=1 << 20)}),
}


@pytest.mark.parametrize("block_bytes", ERROR_BLOCK_SIZES, ids=lambda size: f"block-{size}")
@pytest.mark.parametrize("case", list(ERRORS), ids=str)
def test_a_bad_file_gets_the_same_error_at_the_same_place(case: str, block_bytes: int) -> None:
    # GIVEN a file with one thing wrong in it (often late: in a block after many others)
    data, options = ERRORS[case]
    options = dict(options)
    name, dataset = options.pop("name", NAME), options.pop("dataset", POSTS)

    # WHEN it is parsed whole and streamed
    expected = error_of(lambda: whole(data, name, dataset, **options))
    got = error_of(lambda: batches(io.BytesIO(data), name, dataset, block_bytes=block_bytes, **options))

    # THEN the error class, its location (lines counted in the whole file) and its message are the same
    assert got == expected


def test_the_error_names_lines_and_offsets_in_the_file_not_in_the_block() -> None:
    # GIVEN a latin-1 byte on line 63, past many blocks
    data = LATE + _good_rows(1) + _row("Q", "caf\u00e9").decode().encode("latin-1") + b"\n"
    offset = data.index(b"\xe9")

    # WHEN it is streamed in small blocks  THEN the line and byte offset are the file's
    with pytest.raises(MalformedFile) as caught:
        batches(io.BytesIO(data), block_bytes=100)
    assert caught.value.location == "line 63"
    assert f"byte offset {offset:,}" in str(caught.value)


@pytest.mark.parametrize("block_bytes", [150, 1000, 1 << 20], ids=lambda size: f"block-{size}")
def test_rows_over_max_rows_are_counted_over_the_whole_stream(block_bytes: int) -> None:
    # GIVEN 60 rows and a limit of 50: no block holds more than 50 rows at the small sizes
    limits = Limits(max_rows=50)
    assert error_of(lambda: whole(LATE, limits=limits))[0] is FileTooLarge

    # WHEN it is streamed  THEN FileTooLarge; the stream stops at the limit, so it says "more than"
    with pytest.raises(FileTooLarge, match=r"more than 50 data rows; the limit is 50 \(ICEGATE_MAX_ROWS\)"):
        batches(io.BytesIO(LATE), limits=limits, block_bytes=block_bytes)


def test_exactly_max_rows_is_accepted() -> None:
    parts = batches(io.BytesIO(LATE), limits=Limits(max_rows=60), block_bytes=1000)
    assert sum(part.table.num_rows for part in parts) == 60


def test_bytes_over_max_bytes_are_counted_as_they_stream(tmp_path: Path) -> None:
    # GIVEN a file one byte over the limit
    limits = Limits(max_bytes=len(LATE) - 1)
    expected = error_of(lambda: whole(LATE, limits=limits))

    # WHEN it is streamed from a local file (size known)  THEN exactly parse_bytes' error, before any read
    path = tmp_path / NAME
    path.write_bytes(LATE)
    with path.open("rb") as source:
        assert error_of(lambda: batches(source, limits=limits, block_bytes=100)) == expected
        assert source.tell() == 0

    # WHEN from a body of unknown size  THEN FileTooLarge once the limit is passed, saying "more than"
    with pytest.raises(FileTooLarge, match=f"more than {len(LATE) - 1:,} bytes"):
        batches(Trickle(LATE), limits=limits, block_bytes=100)


def test_a_legacy_file_that_looks_like_utf8_at_first_is_refused_from_a_source_that_cannot_seek() -> None:
    # GIVEN the file above, valid UTF-8 beyond ASCII at first, from a source that can be read only once
    data = _utf8_at_first_cp1252_later()

    # WHEN it is streamed  THEN it is refused as mixed encodings, with the line: never read half one way
    with pytest.raises(MalformedFile, match="one encoding") as caught:
        batches(Trickle(data), block_bytes=64, encoding="cp1252")
    assert caught.value.location == "line 63"
    # AND with classic Mac line ends (lone carriage returns), the same line
    with pytest.raises(MalformedFile, match="one encoding") as caught:
        batches(Trickle(data.replace(b"\n", b"\r")), block_bytes=64, encoding="cp1252")
    assert caught.value.location == "line 63"


def test_a_crlf_cut_between_two_chunks_is_one_line_break_in_an_error_line() -> None:
    # GIVEN cp1252 text whose CRLF line ends fall between the chunks it arrives in, then a byte cp1252 lacks
    chunks = [b"a,b\r", b"\n1,2\r", b"\n3,\x81\r\n"]

    # WHEN it is transcoded  THEN the error is on line 3, as the whole text's would be
    with pytest.raises(MalformedFile, match="cp1252") as caught:
        list(transcoded(iter(chunks), "cp1252", "x.csv"))
    assert caught.value.location == "line 3"


@pytest.mark.parametrize("name", ["post_results_1.json", "post_results_1.xlsx", "post_results_1.parquet.gz"], ids=str)
def test_formats_without_lines_cannot_be_streamed(name: str) -> None:
    with pytest.raises(UnsupportedFormat, match="only csv, tsv"):
        stream_delimited(io.BytesIO(b"{}"), name, POSTS, limits=LIMITS)


# ------------------------------------------------------------------------------------------------
# Records too long to hold: scanned, never held, and refused as the whole-file parse refuses them
# ------------------------------------------------------------------------------------------------

#: A field limit that makes the longest acceptable posts record a little over 1.4 KB.
SMALL_FIELDS = Limits(max_field_bytes=64)
#: Rows without any quote: a quote opened before them is never closed.
PLAIN = _plain_rows(20_000)
OVERSIZED: dict[str, bytes] = {
    "quote-never-closed-in-the-last-column": b'x,y,z,2026-01-01,1,1,h,c,d,u,"never closed\n' + PLAIN,
    "quote-never-closed-in-an-inner-column": b'x,y,z,2026-01-01,1,1,h,"oops,d,u,s\n' + PLAIN,
    "value-far-over-the-field-limit": _row("Q", "x" * 50_000) + b"\n" + PLAIN,
    "row-of-far-too-many-fields": b"a," * 30_000 + b"a\n" + PLAIN,
    "ragged-row-of-2000-lines-then-invalid-utf8": b'x,y,"'
    + b"line\n" * 2000
    + b'",a,b,c,d,e,f,g,h,i,j,k,l\n'
    + PLAIN[:50_001]
    + b"\xe9"
    + PLAIN[50_001:],
    "invalid-utf8-inside-a-quote-never-closed": b'x,y,z,2026-01-01,1,1,h,c,d,u,"never closed\n'
    + PLAIN[:700_003]
    + b"\xe9"
    + PLAIN[700_003:],
}


@pytest.mark.parametrize("line_end", [b"\n", b"\r"], ids=["lf", "lone-cr"])
@pytest.mark.parametrize("case", list(OVERSIZED), ids=str)
def test_a_record_longer_than_any_the_limits_accept_is_refused_without_being_held(case: str, line_end: bytes) -> None:
    # GIVEN 200 good rows, then a record that runs far past the longest any row within the limits can be
    data = (POSTS_HEADER + _good_rows(200) + OVERSIZED[case]).replace(b"\n", line_end)
    expected = error_of(lambda: whole(data, limits=SMALL_FIELDS))

    # WHEN it is streamed, with allocations traced (after a first stream: imports and caches are not the file's)
    batches(io.BytesIO(LATE), limits=SMALL_FIELDS, block_bytes=16384)
    tracemalloc.start()
    try:
        got = error_of(lambda: batches(Trickle(data), limits=SMALL_FIELDS, block_bytes=16384))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # THEN the same error at the same line, and memory stayed a small fraction of the 1.5 MB file
    assert got == expected
    assert peak < 256 * 1024 < len(data) // 4


def test_a_line_of_whitespace_longer_than_any_record_is_skipped_as_the_reader_skips_it() -> None:
    # GIVEN a 100 KB line of spaces between rows, with records limited to about 1.4 KB
    data = POSTS_HEADER + _good_rows(50) + b" " * 100_000 + b"\n" + _good_rows(50)

    # WHEN it is streamed  THEN the rows and lines are the whole-file parse's
    parts = batches(Trickle(data), limits=SMALL_FIELDS, block_bytes=4096)
    assert concatenated(parts).equals(normalised(whole(data, limits=SMALL_FIELDS).with_lines()))


def test_a_header_whose_quote_never_closes_is_refused_without_being_held() -> None:
    # GIVEN a header that opens a quote the rest of a 1.5 MB file never closes
    data = b'search_term,"post_id,creator\n' + PLAIN
    limits = Limits(max_field_bytes=64, max_columns=16)
    expected = error_of(lambda: whole(data, limits=limits))

    # WHEN it is streamed  THEN the same error, "no complete header row", at the quote's line
    assert error_of(lambda: batches(Trickle(data), limits=limits, block_bytes=4096)) == expected


# ------------------------------------------------------------------------------------------------
# 3. Bounded memory
# ------------------------------------------------------------------------------------------------


def test_memory_follows_the_block_not_the_file() -> None:
    # GIVEN a 2.6 MB posts file, 40 times the block size, behind a source that records every request
    block_bytes = 64 * 1024
    data = posts_bytes(15_000)
    assert len(data) > 40 * block_bytes
    source = Trickle(data)
    rows_per_block = block_bytes * 15_000 // len(data)

    # WHEN it is streamed and each batch is dropped once looked at, with Python and Arrow memory watched
    batches(io.BytesIO(LATE), block_bytes=block_bytes)  # imports and caches are not the file's
    arrow_before, arrow_peak, rows, sizes = pa.total_allocated_bytes(), 0, 0, []
    tracemalloc.start()
    try:
        for part in stream_delimited(source, NAME, POSTS, limits=LIMITS, block_bytes=block_bytes):
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_before)
            rows += part.table.num_rows
            sizes.append(part.table.num_rows)
            del part
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # THEN the file was read in requests no bigger than a block, each batch is about a block of rows,
    # and neither Python nor Arrow ever held more than a few blocks' worth
    assert source.bytes_read == len(data)
    assert rows == 15_000
    assert source.largest_request <= block_bytes
    assert len(sizes) >= 30
    assert max(sizes) <= 2 * rows_per_block
    assert python_peak < 8 * block_bytes
    assert arrow_peak < 16 * block_bytes


def test_nothing_is_read_before_the_first_batch_is_asked_for() -> None:
    source = Trickle(posts_bytes(10))
    stream = stream_delimited(source, NAME, POSTS, limits=LIMITS)
    assert source.bytes_read == 0
    assert next(stream).table.num_rows == 10


def test_lines_are_absolute_in_the_file() -> None:
    # GIVEN 60 rows after a header, streamed in blocks of about seven rows
    parts = batches(io.BytesIO(LATE), block_bytes=700)

    # THEN each batch's lines continue where the previous batch's stopped
    lines = concatenated(parts).column(LINE).to_pylist()
    assert len(parts) > 5
    assert lines == list(range(2, 62))
    assert concatenated(parts).column(LAST_LINE).to_pylist() == lines
