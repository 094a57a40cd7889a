"""The shape of a dataset contract. One file per dataset in this package fills it in."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Literal

import polars as pl

from icegate.dimensions import QUALITY_DIMENSIONS, RuleDimension
from icegate.trend import TrendGate

if TYPE_CHECKING:
    import pandera.polars as pa
    import pyarrow

#: Value types a contract column can have (Iceberg: string, long, date).
ColumnType = Literal["string", "long", "date"]
#: How each column type is held in polars, from validation to the loader.
POLARS_TYPES: Mapping[ColumnType, pl.DataType] = {"string": pl.String(), "long": pl.Int64(), "date": pl.Date()}
#: How a load merges into the table: skip stored keys, replace them (latest wins), or add every row.
MergeStrategy = Literal["insert_new", "upsert", "append"]
#: Partition transforms a contract may use (pyiceberg writes all of these without extras).
Transform = Literal["identity", "year", "month", "day"]


@dataclass(frozen=True)
class NormalizeContext:
    """What a normaliser may depend on besides the values (from the settings)."""

    #: Region (ISO 3166 code) a phone number written without ``+`` is read in (``ICEGATE_PHONE_REGION``).
    phone_region: str = "US"


#: Canonicalises a string column's values (trimmed, empty as null) before validation.
Normalizer = Callable[["pyarrow.ChunkedArray", NormalizeContext], "pyarrow.ChunkedArray"]


@dataclass(frozen=True)
class Column:
    """One column of a dataset as the table stores it."""

    name: str
    type: ColumnType = "string"
    #: Other header spellings that mean this column (compared after header canonicalisation).
    aliases: tuple[str, ...] = ()
    #: The header must contain this column; optional columns are filled with nulls when absent.
    required: bool = True
    #: A row may leave the value empty.
    nullable: bool = True
    normalizer: Normalizer | None = None
    #: Validity checks (pandera); a row failing any of them is rejected.
    checks: tuple[pa.Check, ...] = ()


@dataclass(frozen=True)
class QualityContext:
    """What a quality rule may compare rows with."""

    #: The date the file claims to be from (name stamp), else its upload date.
    reference_date: date
    #: When the file arrived (S3 LastModified, local mtime).
    upload_date: date


@dataclass(frozen=True)
class QualityRule:
    """A soft check that costs quality points but rejects no row.

    ``expression`` evaluates per row to True (pass), False (fail) or null (not applicable).
    """

    name: str
    dimension: RuleDimension
    expression: Callable[[QualityContext], pl.Expr]


@dataclass(frozen=True, eq=False)  # identity hash: contracts are singletons and cache keys
class Dataset:
    """A dataset contract: how to recognise, read, check, score and merge one kind of file."""

    name: str
    #: Glob patterns matched against the file's base name (case-insensitive).
    file_patterns: tuple[str, ...]
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    strategy: MergeStrategy = "insert_new"
    #: ``upsert`` only: a row replaces the stored row of its key only when this column is not older
    #: (e.g. a scrape timestamp), so that a late-arriving older file never overwrites newer rows.
    ordering_column: str | None = None
    partition: tuple[tuple[str, Transform], ...] = ()
    quality_threshold: float = 70.0
    #: Per-dimension weights replacing the defaults (0–100 scale, any subset).
    quality_weights: Mapping[str, float] = field(default_factory=dict)
    #: Per-dimension minimum scores (0–1) replacing ``icegate.dimensions.DEFAULT_FLOORS`` (any subset; 0
    #: disables one); any dimension under its floor fails the gate whatever the score.
    quality_floors: Mapping[str, float] = field(default_factory=dict)
    quality_rules: tuple[QualityRule, ...] = ()
    #: Iceberg table name; defaults to the dataset name.
    table_name: str | None = None
    #: Fail files far below the dataset's recent loaded files (score drop, row collapse); off when None.
    trend_gate: TrendGate | None = None

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name!r} declares a column twice: {names}")
        unknown = [k for k in (*self.key, *(p for p, _ in self.partition)) if k not in names]
        if unknown:
            raise ValueError(f"dataset {self.name!r} names columns it does not declare: {unknown}")
        if not self.key:
            raise ValueError(f"dataset {self.name!r} declares no key columns")
        # A misspelt dimension would silently weigh or guard nothing.
        misspelt = sorted((set(self.quality_weights) | set(self.quality_floors)) - set(QUALITY_DIMENSIONS))
        if misspelt:
            raise ValueError(
                f"dataset {self.name!r}: no such quality dimension {misspelt}; known: {QUALITY_DIMENSIONS}"
            )
        if self.ordering_column is not None:
            if self.strategy != "upsert":
                raise ValueError(
                    f"dataset {self.name!r}: ordering_column applies to the 'upsert' strategy, not {self.strategy!r}"
                )
            if self.ordering_column not in names:
                raise ValueError(f"dataset {self.name!r}: ordering_column {self.ordering_column!r} is not a column")
            if self.ordering_column in self.key:
                raise ValueError(
                    f"dataset {self.name!r}: ordering_column {self.ordering_column!r} is part of the key, "
                    "so it is always equal for the rows it would order"
                )

    @property
    def table(self) -> str:
        return self.table_name or self.name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def matches(self, file_name: str) -> bool:
        lowered = file_name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in self.file_patterns)
