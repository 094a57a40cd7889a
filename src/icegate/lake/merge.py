"""The merge decision, pure polars: which incoming rows go in, which stored rows they replace.

The loader reads only the key columns (and the ordering column) of the files that can hold the
batch's keys; these functions compare them with the batch. Null key parts compare equal, so a
key with a missing part is still recognised on the next load.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from icegate.lake.files import FILE_INDEX, ROW_POSITION

#: Column holding each incoming row's position in the deduplicated batch.
ROW_INDEX = "_icegate_row"


def dedupe_in_file(batch: pl.DataFrame, key: tuple[str, ...], ordering: str | None = None) -> tuple[pl.DataFrame, int]:
    """One row per key: the one with the greatest ``ordering`` value, else (and on ties) the last.

    A scraper appends, so a later row is newer, unless the contract names an ordering column:
    then that column says which row is newest, as it does against stored rows (a null is oldest).
    """
    if batch.height < 2:
        return batch, 0
    # Hashing the key and counting distinct hashes is several times cheaper than a unique(); a
    # collision can only make it report duplicates that are not there, never hide one.
    hashes = pl.select(pl.struct([batch.get_column(k) for k in key]).hash()).to_series()
    if hashes.n_unique() == batch.height:
        return batch, 0
    if ordering is None:
        unique = batch.filter(pl.struct(list(key)).is_last_distinct())
    else:
        # A stable sort by the ordering column (nulls first) puts each key's newest row last,
        # keeping file order among equals; the winners then go back to file order.
        position = "_icegate_file_row"
        unique = (
            batch.with_row_index(position)
            .sort(ordering, nulls_last=False, maintain_order=True)
            .filter(pl.struct(list(key)).is_last_distinct())
            .sort(position)
            .drop(position)
        )
    return unique, batch.height - unique.height


def plan_insert_new(batch: pl.DataFrame, stored_keys: pl.DataFrame, key: tuple[str, ...]) -> tuple[pl.DataFrame, int]:
    """Rows whose key the table does not hold yet, and how many were skipped."""
    if stored_keys.height == 0:
        return batch, 0
    stored = stored_keys.select(pl.col(k).cast(batch.schema[k]) for k in key)
    new_rows = batch.join(stored, on=list(key), how="anti", nulls_equal=True)
    return new_rows, batch.height - new_rows.height


@dataclass(frozen=True)
class UpsertPlan:
    #: Incoming rows to write: keys the table lacks, and keys whose stored row they replace.
    rows: pl.DataFrame
    inserted: int
    updated: int
    #: Incoming rows dropped because the stored row is newer by the ordering column.
    skipped: int
    #: The stored rows being replaced, as (``FILE_INDEX``, ``ROW_POSITION``) pairs.
    replaced_rows: pl.DataFrame
    #: Indexes (as in ``FILE_INDEX``) of the files that hold a replaced row: they get rewritten.
    files_to_rewrite: list[int]


def plan_upsert(
    batch: pl.DataFrame, stored: pl.DataFrame, key: tuple[str, ...], ordering: str | None = None
) -> UpsertPlan:
    """Latest wins: an incoming row replaces the stored row of its key, unless the stored one is newer.

    ``stored`` holds the key columns (plus ``ordering``, ``FILE_INDEX`` and ``ROW_POSITION``) of the
    candidate files. With an ordering column, an incoming row wins when its value is at least the
    stored one; a stored null loses to anything, an incoming null loses to a stored value.
    """
    keys = list(key)
    casts = [pl.col(c).cast(batch.schema[c]) for c in (*keys, *([ordering] if ordering else []))]
    # The candidate files hold many keys the batch does not: narrow to the batch's first.
    matched_stored = stored.with_columns(casts).join(batch.select(keys), on=keys, how="semi", nulls_equal=True)
    per_key = (
        matched_stored.group_by(keys).agg(pl.col(ordering).max().alias("_stored_order"))
        if ordering
        else matched_stored.select(keys).unique()
    )
    matched = batch.join(per_key, on=keys, how="inner", nulls_equal=True)
    if ordering is None:
        winners = matched
    else:
        incoming, current = pl.col(ordering), pl.col("_stored_order")
        winners = matched.filter(current.is_null() | (incoming.is_not_null() & (incoming >= current)))
    replaced_rows = matched_stored.join(winners.select(keys), on=keys, how="semi", nulls_equal=True).select(
        FILE_INDEX, ROW_POSITION
    )
    new_rows = batch.join(per_key.select(keys), on=keys, how="anti", nulls_equal=True)
    return UpsertPlan(
        rows=pl.concat([new_rows, winners.select(batch.columns)]),
        inserted=new_rows.height,
        updated=winners.height,
        skipped=matched.height - winners.height,
        replaced_rows=replaced_rows,
        files_to_rewrite=replaced_rows.get_column(FILE_INDEX).unique().sort().to_list(),
    )


def drop_replaced(stored_rows: pl.DataFrame, replaced_rows: pl.DataFrame) -> pl.DataFrame:
    """The rows of rewritten files that stay: all but the replaced ones (matched by file and position)."""

    row_id = (pl.col(FILE_INDEX).cast(pl.Int64) * 2**32) + pl.col(ROW_POSITION).cast(pl.Int64)
    replaced = replaced_rows.select(row_id).to_series()
    return stored_rows.filter(~row_id.is_in(replaced.implode())).drop(FILE_INDEX, ROW_POSITION)
