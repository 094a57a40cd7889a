"""Validation: typed coercion, then the dataset's pandera schema (polars backend, lazy).

Rows are split, never dropped: valid rows go on typed; rejected rows keep their original string
values, the file they came from, their 1-based record number (``row_number``), the physical lines
they span in a CSV/TSV file (``line``, ``last_line``; null for other formats) and the names of every
check they failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pandera.polars as pa
import polars as pl
import pyarrow

from icegate.constants import FLOAT_EXACT, SOURCE_FILE
from icegate.datasets import POLARS_TYPES, Column, Dataset
from icegate.errors import EmptyFile, SchemaMismatch
from icegate.parse.lines import LAST_LINE, LINE

ROW_NUMBER = "row_number"
FAILED_CHECKS = "failed_checks"
#: Where a rejected row is: the file, its record number, and (CSV/TSV) its first and last physical line.
LOCATION_COLUMNS = (ROW_NUMBER, SOURCE_FILE, LINE, LAST_LINE)

_SUFFIX_FACTORS = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9}
#: The shapes a count may take once trimmed. A separator (one kind per value) only groups the integer part in
#: threes after a first group of 1-3 digits: "12,5K" is a decimal comma and "1,2345" a typo, not 125000 / 12345.
_COUNT_SHAPE = r"(?i)^[+-]?(?:\d+|[1-9]\d{0,2}(?:(?:,\d{3})+|(?:\s\d{3})+|(?:_\d{3})+))(?:\.\d*)?\s*[KMB]?$"
_ISO_DATETIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
_DATE_FORMATS = ("%Y/%m/%d", "%b %d, %Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y")


@dataclass(frozen=True)
class ValidationResult:
    #: Typed rows that passed every check, in contract column order.
    valid: pyarrow.Table
    #: Original (string) values of the rejected rows + ``row_number`` + ``failed_checks``.
    rejected: pyarrow.Table
    #: Check name -> number of rows that failed it.
    failed_checks: dict[str, int]


def count_expr(raw: pl.Expr) -> pl.Expr:
    """Counts as scrapers write them: ``1234``, ``1,234``, ``1 234``, ``12.5K``, ``1.2M`` -> integers."""
    trimmed = raw.str.strip_chars()
    # Separators go only once the value has the shape where they group thousands; any other value is null.
    text = pl.when(trimmed.str.contains(_COUNT_SHAPE)).then(trimmed.str.replace_all(r"[,\s_]", "").str.to_uppercase())
    plain = text.str.replace(r"^(-?\d+)\.0*$", "${1}").str.to_integer(strict=False)  # "12.0" exactly, however big
    parts = text.str.extract_groups(r"^(\d+(?:\.\d+)?)([KMB]?)$")
    number = parts.struct.field("1").cast(pl.Float64, strict=False)
    factor = parts.struct.field("2").replace_strict(_SUFFIX_FACTORS, default=None, return_dtype=pl.Float64)
    scaled = number * factor
    # Without a suffix a count must be whole: "1.5" likes is an error, not 2. Past 2**53 a float is no longer
    # every whole number: such a value is refused, not rounded to a neighbour.
    exact = scaled.abs() < FLOAT_EXACT
    whole = pl.when(((factor > 1) | (scaled == scaled.floor())) & exact).then(scaled.round(0)).otherwise(None)
    return pl.coalesce(plain, whole.cast(pl.Int64, strict=False))


def date_expr(raw: pl.Expr) -> pl.Expr:
    """ISO dates and datetimes (the date part) plus unambiguous spelled-out formats."""
    # Surrounding blanks are as common in dates as in counts (which strip them too).
    raw = raw.str.strip_chars()
    iso = pl.when(raw.str.contains(_ISO_DATETIME)).then(raw.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
    return pl.coalesce(iso, *(raw.str.to_date(fmt, strict=False) for fmt in _DATE_FORMATS))


def coerce_columns(raw: pl.DataFrame, dataset: Dataset) -> pl.DataFrame:
    """The contract's columns typed as validation types them; a value that does not parse becomes null."""
    return pl.DataFrame([_coerce(raw.get_column(c.name), c).alias(c.name) for c in dataset.columns])


#: The plain form nearly every value of a type takes, parsed directly; the full grammar
#: (``count_expr``, ``date_expr``) runs only on the values that are not in it.
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _coerce(values: pl.Series, column: Column) -> pl.Series:
    value = pl.col(values.name)
    if column.type == "long":
        quick, full = value.str.to_integer(strict=False), count_expr
    elif column.type == "date":
        # Only exact ISO dates: chrono's %Y/%m would also take forms date_expr refuses ("2026-1-5").
        quick = pl.when(value.str.contains(_ISO_DATE)).then(value.str.to_date("%Y-%m-%d", strict=False))
        full = date_expr
    else:
        return values
    typed = values.to_frame().select(quick).to_series()
    rest = typed.is_null() & values.is_not_null()
    if not rest.any():
        return typed
    slow = values.filter(rest).to_frame().select(full(value)).to_series()
    return typed.scatter(rest.arg_true(), slow)


@cache
def pandera_schema(dataset: Dataset) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            c.name: pa.Column(POLARS_TYPES[c.type], nullable=c.nullable, checks=list(c.checks), coerce=False)
            for c in dataset.columns
        },
        strict=False,
        name=dataset.name,
    )


def validate_table(table: pyarrow.Table, dataset: Dataset, *, file: str, first_row: int = 1) -> ValidationResult:
    """Split a parsed (all-string) table into typed valid rows and annotated rejected rows.

    ``first_row`` is the record number of the table's first row: a big file is validated a slice at a time.
    """
    raw = pl.from_arrow(table)
    assert isinstance(raw, pl.DataFrame)
    if raw.height == 0:
        raise EmptyFile("the file holds no data rows", file=file)
    missing = [name for name in dataset.column_names if name not in raw.columns]
    if missing:
        raise SchemaMismatch(f"the parsed file lacks the columns {missing} of dataset {dataset.name!r}", file=file)
    # The parser's line columns (CSV/TSV) travel beside the contract's, never validated or loaded.
    lines = raw.with_columns(
        pl.col(name).cast(pl.Int64) if name in raw.columns else pl.lit(None, pl.Int64).alias(name)
        for name in (LINE, LAST_LINE)
    ).select(LINE, LAST_LINE)
    raw = raw.select(pl.col(name).cast(pl.String) for name in dataset.column_names)

    typed = coerce_columns(raw, dataset)
    failures = [_coercion_failures(raw, typed, c) for c in dataset.columns if c.type != "string"]
    failures.append(_schema_failures(typed, dataset, file))
    by_row = (
        pl.concat([f for f in failures if f.height], how="vertical")
        if any(f.height for f in failures)
        else _empty_failures()
    ).unique()

    counts = dict(by_row.group_by("check").len().sort("check").iter_rows())
    per_row = by_row.group_by("index").agg(pl.col("check").sort().alias(FAILED_CHECKS))
    rejected_index = per_row.get_column("index")
    numbered = pl.concat([raw, lines], how="horizontal").with_row_index("index")
    is_rejected = numbered.get_column("index").is_in(rejected_index.implode())

    valid = _valid_rows(table, typed, None if rejected_index.is_empty() else ~is_rejected, dataset)
    rejected = (
        numbered.filter(is_rejected)
        .join(per_row, on="index", how="left")
        .with_columns((pl.col("index").cast(pl.Int64) + first_row).alias(ROW_NUMBER), pl.lit(file).alias(SOURCE_FILE))
        .select(*LOCATION_COLUMNS, *dataset.column_names, FAILED_CHECKS)
        .sort(ROW_NUMBER)
    )
    return ValidationResult(valid=valid, rejected=rejected.to_arrow(), failed_checks=counts)


def no_rejected_rows(dataset: Dataset) -> pl.DataFrame:
    """The rejected rows of a file that has none, in the shape the scorer reads."""
    return pl.DataFrame(
        schema={
            ROW_NUMBER: pl.Int64,
            **dict.fromkeys(dataset.column_names, pl.String),
            FAILED_CHECKS: pl.List(pl.String),
        }
    )


def _valid_rows(source: pyarrow.Table, typed: pl.DataFrame, keep: pl.Series | None, dataset: Dataset) -> pyarrow.Table:
    """The typed valid rows as Arrow; text columns are the source's own buffers, not a copy back from polars.

    For a big file that copy would be the validator's peak: the source, polars' copy and this one at once.
    """
    mask = None if keep is None else keep.to_arrow()
    converted = typed.select(c.name for c in dataset.columns if not _reusable(source, c))
    if keep is not None:
        converted = converted.filter(keep)
    columns = []
    for column in dataset.columns:
        if _reusable(source, column):
            text = source.column(column.name).cast(pyarrow.large_string())  # offsets widened, text shared
            columns.append(text if mask is None else text.filter(mask))
        else:
            columns.append(converted.get_column(column.name).to_arrow())
    return pyarrow.table(columns, names=list(dataset.column_names))


def _reusable(source: pyarrow.Table, column: Column) -> bool:
    kind = source.schema.field(column.name).type
    return column.type == "string" and (pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind))


def _empty_failures() -> pl.DataFrame:
    return pl.DataFrame(schema={"index": pl.UInt32, "check": pl.String})


def _coercion_failures(raw: pl.DataFrame, typed: pl.DataFrame, column: Column) -> pl.DataFrame:
    failed = raw.get_column(column.name).is_not_null() & typed.get_column(column.name).is_null()
    return (
        pl.DataFrame({"failed": failed})
        .with_row_index("index")
        .filter(pl.col("failed"))
        .select("index", pl.lit(f"{column.name}:type({column.type})").alias("check"))
    )


def _schema_failures(typed: pl.DataFrame, dataset: Dataset, file: str) -> pl.DataFrame:
    try:
        pandera_schema(dataset).validate(typed, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        whole_frame = cases.filter(pl.col("index").is_null())
        if whole_frame.height:
            problems = "; ".join(f"{r['column']}: {r['check']}" for r in whole_frame.iter_rows(named=True))
            raise SchemaMismatch(f"the file does not fit dataset {dataset.name!r}: {problems}", file=file) from None
        located: pl.DataFrame = cases.select(
            pl.col("index").cast(pl.UInt32),
            pl.concat_str(pl.col("column"), pl.lit(":"), pl.col("check")).alias("check"),
        )
        return located
    return _empty_failures()
