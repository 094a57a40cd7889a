"""Validation: typed coercion of scraped strings, pandera checks, and the valid/rejected split.

Inputs are what the parser hands over: all-string Arrow tables with the contract's columns in
order and empty cells already turned into nulls.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from icegate.datasets import get_dataset
from icegate.errors import EmptyFile, SchemaMismatch
from icegate.validate import (
    FAILED_CHECKS,
    LOCATION_COLUMNS,
    ROW_NUMBER,
    ValidationResult,
    coerce_columns,
    count_expr,
    date_expr,
    validate_table,
)

POSTS = get_dataset("posts")
RESTAURANTS = get_dataset("restaurants")
FILE = "post_results_20260113_175319.csv"

URL_FORMAT_CHECK = r"post_url:str_matches('^https?://\S+$')"


def post(**changes: str | None) -> dict[str, str | None]:
    """One parsed posts row that passes every check, with the given cells replaced."""
    row: dict[str, str | None] = {
        "search_term": "pizza",
        "post_id": "C1abc",
        "creator": "alice",
        "posted_date": "2026-01-10",
        "likes": "10",
        "comments": "2",
        "hashtags": "#pizza",
        "caption": "lunch",
        "image_description": None,
        "post_url": "https://www.instagram.com/p/C1abc/",
        "status": "success",
    }
    row.update(changes)
    return row


def restaurant(**changes: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {
        "restaurant_name": "Luigi's",
        "city": "Rome",
        "phone": "+39061234567",
        "instagram_handle": "@luigis",
        "followers": "1200",
        "posts_count": "85",
        "bio": "Pizza since 1950",
        "website": "https://luigis.example",
        "status": "found",
    }
    row.update(changes)
    return row


def parsed(rows: list[dict[str, Any]], columns: tuple[str, ...] = POSTS.column_names) -> pa.Table:
    """The parser's output: every contract column, as strings, in contract order."""
    return pa.table(
        {name: pa.array([row[name] for row in rows], pa.string()) for name in columns},
    )


def validate_posts(*rows: dict[str, Any]) -> ValidationResult:
    return validate_table(parsed(list(rows)), POSTS, file=FILE)


def rejected_rows(result: ValidationResult) -> list[dict[str, Any]]:
    return result.rejected.to_pylist()


# --- counts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12.5K", 12_500),
        ("12.5k", 12_500),
        ("1,234", 1_234),
        ("1.2M", 1_200_000),
        ("3B", 3_000_000_000),
        (" 42 ", 42),
        ("12.0", 12),
        ("0", 0),
        ("1 234", 1_234),
        ("1.15M", 1_150_000),
        ("2.3K", 2_300),
        ("9007199254740993.0", 9_007_199_254_740_993),
        ("12,345,678", 12_345_678),
        ("1_234", 1_234),
        ("1,234.5K", 1_234_500),
    ],
    ids=[
        "thousands-suffix",
        "lower-case-suffix",
        "comma-grouping",
        "millions-suffix",
        "billions-suffix",
        "surrounding-blanks",
        "whole-decimal",
        "zero",
        "space-grouping",
        "suffix-product-inexact-in-binary-1",
        "suffix-product-inexact-in-binary-2",
        "whole-decimal-past-2**53-exactly",
        "comma-grouping-of-several-groups",
        "underscore-grouping",
        "comma-grouping-before-a-suffix",
    ],
)
def test_count_written_by_a_scraper_becomes_an_integer(raw: str, expected: int) -> None:
    # GIVEN a likes cell as scrapers write it WHEN the row is validated
    result = validate_posts(post(likes=raw))

    # THEN the row is valid and carries the integer value
    assert result.rejected.num_rows == 0
    assert result.valid.column("likes").to_pylist() == [expected]


@pytest.mark.parametrize(
    ("raw", "check"),
    [
        ("1.5", "likes:type(long)"),
        ("abc", "likes:type(long)"),
        ("1.2.3", "likes:type(long)"),
        ("K", "likes:type(long)"),
        ("1e3", "likes:type(long)"),
        ("-3", "likes:greater_than_or_equal_to(0)"),
        ("9007199254740.993K", "likes:type(long)"),
        ("9007199254740992.5", "likes:type(long)"),
        ("12,5K", "likes:type(long)"),
        ("1,5K", "likes:type(long)"),
        ("1,2345", "likes:type(long)"),
        ("1,2,3", "likes:type(long)"),
        ("1 2 3", "likes:type(long)"),
        ("0,500K", "likes:type(long)"),
        ("1,234 567", "likes:type(long)"),
    ],
    ids=[
        "fraction-without-suffix",
        "word",
        "two-decimal-points",
        "suffix-alone",
        "exponent",
        "negative",
        "suffix-product-past-2**53-no-float-holds-exactly",
        "fraction-past-2**53-rounded-whole-by-a-float",
        # A separator groups thousands only in threes after a first group of 1-3 digits (not 0): anything else is
        # a decimal comma or a typo, and reading it as grouping would store 10x-1000x the count.
        "decimal-comma-before-a-suffix-1",
        "decimal-comma-before-a-suffix-2",
        "group-of-four-digits",
        "groups-of-one-digit",
        "space-between-single-digits",
        "decimal-comma-with-a-leading-zero",
        "two-kinds-of-separator",
    ],
)
def test_count_that_is_not_a_non_negative_integer_rejects_the_row(raw: str, check: str) -> None:
    result = validate_posts(post(likes=raw))

    assert result.valid.num_rows == 0
    [row] = rejected_rows(result)
    assert row["failed_checks"] == [check]
    assert row["likes"] == raw, "a rejected row keeps the value as it was written"


def test_count_expr_is_null_for_null_input() -> None:
    """A missing count stays missing: it is not a coercion failure."""
    out = pl.DataFrame({"v": [None, "7"]}, schema={"v": pl.String}).select(count_expr(pl.col("v")))
    assert out.to_series().to_list() == [None, 7]


def test_count_beyond_int64_is_a_type_failure_not_an_overflow() -> None:
    result = validate_posts(post(comments="99999999999B"))

    assert [row["failed_checks"] for row in rejected_rows(result)] == [["comments:type(long)"]]


# --- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "2026-01-13",
        "2026-01-13T17:53:19Z",
        "2026-01-13T23:30:00+05:00",
        "2026-01-13T23:30:00.123-0800",
        "2026-01-13 08:15",
        "2026/01/13",
        "Jan 13, 2026",
        "January 13, 2026",
        "13 Jan 2026",
        "13 January 2026",
        " 2026-01-13 ",
    ],
    ids=[
        "iso-date",
        "iso-datetime-utc",
        "iso-datetime-offset",
        "iso-datetime-fraction-compact-offset",
        "iso-datetime-space-no-seconds",
        "slashes-year-first",
        "month-abbrev-first",
        "month-name-first",
        "day-first-abbrev",
        "day-first-month-name",
        "surrounding-blanks",
    ],
)
def test_date_in_an_unambiguous_format_becomes_a_date(raw: str) -> None:
    """Datetimes keep the date part as written (the scraper's local date), not a UTC conversion."""
    result = validate_posts(post(posted_date=raw))

    assert result.rejected.num_rows == 0
    assert result.valid.column("posted_date").to_pylist() == [date(2026, 1, 13)]


@pytest.mark.parametrize(
    "raw",
    ["01/02/2026", "13/01/2026", "garbage", "2026-02-30", "2026-13-01", "2026-01-13garbage", "20260113"],
    ids=[
        "ambiguous-day-month",
        "numeric-slashes-day-first",
        "garbage",
        "impossible-day",
        "impossible-month",
        "trailing-garbage",
        "compact-digits",
    ],
)
def test_date_that_is_ambiguous_or_invalid_rejects_the_row(raw: str) -> None:
    result = validate_posts(post(posted_date=raw))

    assert result.valid.num_rows == 0
    [row] = rejected_rows(result)
    assert row["failed_checks"] == ["posted_date:type(date)"]
    assert row["posted_date"] == raw


def test_date_expr_leaves_null_dates_null() -> None:
    out = pl.DataFrame({"d": [None, "2026-01-13"]}, schema={"d": pl.String}).select(date_expr(pl.col("d")))
    assert out.to_series().to_list() == [None, date(2026, 1, 13)]


# --- schema checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["post_id", "creator"], ids=["post_id", "creator"])
def test_null_key_column_rejects_the_row(column: str) -> None:
    result = validate_posts(post(**{column: None}))

    [row] = rejected_rows(result)
    assert row["failed_checks"] == [f"{column}:not_nullable"]
    assert result.failed_checks == {f"{column}:not_nullable": 1}


def test_null_in_a_nullable_column_is_valid() -> None:
    """Nullable columns (counts, dates, url) may be empty; their format checks ignore nulls."""
    result = validate_posts(post(likes=None, posted_date=None, post_url=None, status=None))

    assert result.rejected.num_rows == 0
    [row] = result.valid.to_pylist()
    assert (row["likes"], row["posted_date"], row["post_url"]) == (None, None, None)


@pytest.mark.parametrize(
    "url",
    ["not a url", "www.instagram.com/p/C1abc/", "ftp://instagram.com/p/C1abc", "https://instagram.com/p/C1 abc"],
    ids=["words", "no-scheme", "other-scheme", "blank-inside"],
)
def test_post_url_that_is_not_an_http_url_rejects_the_row(url: str) -> None:
    result = validate_posts(post(post_url=url))

    [row] = rejected_rows(result)
    assert row["failed_checks"] == [URL_FORMAT_CHECK]


def test_restaurant_counts_are_normalised_and_checked() -> None:
    # GIVEN profiles with abbreviated follower counts and one negative posts count
    table = parsed(
        [restaurant(followers="12.5K", posts_count="1,234"), restaurant(city="Milan", posts_count="-1")],
        RESTAURANTS.column_names,
    )

    # WHEN validated
    result = validate_table(table, RESTAURANTS, file="instagram_results_20260113.csv")

    # THEN the good profile is typed, the negative one is rejected on posts_count
    assert result.valid.select(["followers", "posts_count"]).to_pylist() == [
        {"followers": 12_500, "posts_count": 1_234}
    ]
    assert [r["failed_checks"] for r in rejected_rows(result)] == [["posts_count:greater_than_or_equal_to(0)"]]


# --- the split ------------------------------------------------------------------------------------


def test_rejected_rows_keep_original_values_row_number_and_sorted_checks() -> None:
    # GIVEN a file whose 2nd and 4th rows are bad, the 4th in three ways
    rows = [
        post(post_id="P1"),
        post(post_id="P2", likes="1.5"),
        post(post_id="P3"),
        post(post_id=None, likes="-3", posted_date="01/02/2026"),
    ]

    # WHEN validated
    result = validate_posts(*rows)

    # THEN rejected rows carry a 1-based row number, every contract column as written, and their checks sorted
    assert result.rejected.column_names == [*LOCATION_COLUMNS, *POSTS.column_names, FAILED_CHECKS]
    # (and the file they came from; no line numbers: this input came without the parser's line columns)
    where = {"source_file": "post_results_20260113_175319.csv", "line": None, "last_line": None}
    assert rejected_rows(result) == [
        {ROW_NUMBER: 2, **where, **rows[1], FAILED_CHECKS: ["likes:type(long)"]},
        {
            ROW_NUMBER: 4,
            **where,
            **rows[3],
            FAILED_CHECKS: sorted(
                ["post_id:not_nullable", "likes:greater_than_or_equal_to(0)", "posted_date:type(date)"]
            ),
        },
    ]
    original_columns = [result.rejected.schema.field(name) for name in POSTS.column_names]
    assert all(pa.types.is_string(f.type) or pa.types.is_large_string(f.type) for f in original_columns)


def test_valid_rows_are_typed_in_contract_order_and_keep_file_order() -> None:
    result = validate_posts(post(post_id="P1", likes="5"), post(post_id="P2", likes="x"), post(post_id="P3"))

    assert result.valid.column_names == list(POSTS.column_names)
    frame = pl.from_arrow(result.valid)
    assert isinstance(frame, pl.DataFrame)
    assert frame.schema["likes"] == pl.Int64
    assert frame.schema["comments"] == pl.Int64
    assert frame.schema["posted_date"] == pl.Date
    assert frame.schema["post_id"] == pl.String
    assert frame.get_column("post_id").to_list() == ["P1", "P3"]


def test_failed_checks_counts_rows_per_check() -> None:
    """A row failing two checks counts once under each; the totals match the rejected rows."""
    result = validate_posts(
        post(likes="-1"),
        post(likes="-2", comments="x"),
        post(comments="y"),
        post(post_id=None),
        post(),
    )

    assert result.failed_checks == {
        "comments:type(long)": 2,
        "likes:greater_than_or_equal_to(0)": 2,
        "post_id:not_nullable": 1,
    }
    assert result.rejected.num_rows == 4
    exploded = [check for row in rejected_rows(result) for check in row["failed_checks"]]
    assert sum(result.failed_checks.values()) == len(exploded)


def test_all_rows_valid_gives_an_empty_rejected_table_with_the_same_columns() -> None:
    result = validate_posts(post(), post(post_id="P2"))

    assert result.valid.num_rows == 2
    assert result.rejected.num_rows == 0
    assert result.rejected.column_names == [*LOCATION_COLUMNS, *POSTS.column_names, FAILED_CHECKS]
    assert result.failed_checks == {}


def test_extra_and_reordered_columns_are_tolerated() -> None:
    """Only contract columns are checked and returned, in contract order, whatever the input order."""
    table = parsed([post()])
    table = table.select(list(reversed(table.column_names))).append_column("extra", pa.array(["x"]))

    result = validate_table(table, POSTS, file=FILE)

    assert result.valid.column_names == list(POSTS.column_names)
    assert result.rejected.column_names == [*LOCATION_COLUMNS, *POSTS.column_names, FAILED_CHECKS]


def test_non_string_input_columns_are_read_as_their_text() -> None:
    """A Parquet source may hand over typed columns; they are validated as their string form."""
    table = parsed([post(), post(post_id="P2")])
    index = table.column_names.index("likes")
    table = table.set_column(index, "likes", pa.array([7, -1], pa.int64()))

    result = validate_table(table, POSTS, file=FILE)

    assert result.valid.column("likes").to_pylist() == [7]
    [row] = rejected_rows(result)
    assert (row["likes"], row["failed_checks"]) == ("-1", ["likes:greater_than_or_equal_to(0)"])


@pytest.mark.parametrize("seed", [1, 2, 3], ids=["seed-1", "seed-2", "seed-3"])
def test_no_row_is_lost_or_invented(seed: int) -> None:
    """Property: every input row ends in exactly one of valid / rejected, in file order.

    (Seeded random rows instead of hypothesis, which the project does not depend on.)
    """
    # GIVEN rows drawn from pools of good and bad cells
    rng = random.Random(seed)
    pools: dict[str, list[str | None]] = {
        "post_id": ["A", "B", None],
        "likes": ["1", "12.5K", "-3", "1.5", None, "x"],
        "comments": ["0", "1,234", "abc", None],
        "posted_date": ["2026-01-13", "Jan 13, 2026", "01/02/2026", None, "nope"],
        "post_url": ["https://instagram.com/p/A/", "bad url", None],
    }
    rows = [post(**{col: rng.choice(pool) for col, pool in pools.items()}) for _ in range(60)]
    table = parsed(rows)

    # WHEN validated
    result = validate_table(table, POSTS, file=FILE)

    # THEN valid + rejected = input, row numbers are distinct and in range, and original values survive
    assert result.valid.num_rows + result.rejected.num_rows == len(rows)
    rejected = rejected_rows(result)
    numbers = [r[ROW_NUMBER] for r in rejected]
    assert numbers == sorted(set(numbers))
    assert all(1 <= n <= len(rows) for n in numbers)
    for r in rejected:
        assert {c: r[c] for c in POSTS.column_names} == rows[r[ROW_NUMBER] - 1]
        assert r[FAILED_CHECKS], "a rejected row names at least one check"
    kept = [rows[i]["post_id"] for i in range(len(rows)) if i + 1 not in set(numbers)]
    assert result.valid.column("post_id").to_pylist() == kept
    assert sum(result.failed_checks.values()) == sum(len(r[FAILED_CHECKS]) for r in rejected)


# --- files that cannot be validated ---------------------------------------------------------------


def test_zero_rows_raise_empty_file_naming_the_file() -> None:
    with pytest.raises(EmptyFile) as caught:
        validate_table(parsed([]), POSTS, file=FILE)

    assert caught.value.file == FILE
    assert FILE in str(caught.value)


def test_missing_contract_column_raises_schema_mismatch_naming_it() -> None:
    table = parsed([post()]).drop_columns(["creator", "likes"])

    with pytest.raises(SchemaMismatch) as caught:
        validate_table(table, POSTS, file=FILE)

    message = str(caught.value)
    assert "creator" in message
    assert "likes" in message
    assert caught.value.file == FILE


#: Values in and out of the plain forms the quick path parses, including look-alikes it must leave to the grammar.
_COUNTS = [
    "12", "-3", "+7", "0012", "1,234", "12,5K", "1,2345", " 7 ", "12.5K", "1.2m", "1.5", "1e3", "", "x", "9" * 20, None,
]  # fmt: skip
_DATES = [
    "2026-01-13", "2026-1-5", "+202-01-01", " 2026-01-13", "2026-01-13T10:00:00Z", "2026-02-30",
    "Jan 13, 2026", "2026/01/13", "13 January 2026", "20260113", "", None,
]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_coercion_gives_exactly_what_the_full_grammar_gives(seed: int) -> None:
    # GIVEN a column mixing plain values with every other form, in random order
    rng = random.Random(seed)
    counts = [rng.choice(_COUNTS) for _ in range(500)]
    dates = [rng.choice(_DATES) for _ in range(500)]
    dataset = get_dataset("posts")
    raw = pl.DataFrame(
        {c.name: counts if c.type == "long" else dates if c.type == "date" else ["s"] * 500 for c in dataset.columns},
        schema=dict.fromkeys(dataset.column_names, pl.String),
    )
    # WHEN it is coerced (plain forms parsed directly, the rest by the grammar)
    typed = coerce_columns(raw, dataset)
    # THEN every value is what count_expr / date_expr alone make of it
    expected = raw.select(count_expr(pl.col("likes")), date_expr(pl.col("posted_date")))
    assert typed.get_column("likes").to_list() == expected.get_column("likes").to_list()
    assert typed.get_column("posted_date").to_list() == expected.get_column("posted_date").to_list()
    assert typed.columns == list(dataset.column_names)


def test_valid_text_columns_share_the_parsed_tables_text_instead_of_copying_it() -> None:
    # GIVEN a parsed table whose rows are all valid
    dataset = get_dataset("posts")
    rows = {c.name: [f"{c.name}-{i}" for i in range(3)] for c in dataset.columns}
    rows.update(likes=["1", "2,000", "3"], comments=["0", "0", "0"], posted_date=["2026-01-13"] * 3)
    rows["post_url"] = [f"https://www.instagram.com/p/{i}" for i in range(3)]
    source = pa.table(rows)
    # WHEN it is validated
    result = validate_table(source, dataset, file="f")
    # THEN the rows are typed, and their text lives in the parsed table's buffer (a big file is not copied)
    assert result.valid.column("caption").to_pylist() == ["caption-0", "caption-1", "caption-2"]
    assert result.valid.column("likes").to_pylist() == [1, 2000, 3]
    shared = result.valid.column("caption").chunk(0).buffers()[2]
    assert shared is not None
    assert shared.address == source.column("caption").chunk(0).buffers()[2].address
