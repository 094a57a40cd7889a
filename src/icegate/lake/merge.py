"""The merge decision, pure polars: which incoming rows go in, which stored rows they replace.

The loader reads only the key columns (and the ordering column) of the files that can hold the
batch's keys; these functions compare them with the batch. Null key parts compare equal, so a
key with a missing part is still recognised on the next load.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from icegate.lake.files import FILE_INDEX

#: Column holding each incoming row's position in the deduplicated batch.
ROW_INDEX = "_icegate_row"


def dedupe_in_file(batch: pl.DataFrame, key: tuple[str, ...]) -> tuple[pl.DataFrame, int]:
    """One row per key; the last occurrence wins (a scraper appends, so later rows are newer)."""
    if batch.height < 2:
        return batch, 0
    # Hashing the key and counting distinct hashes is several times cheaper than a unique(); a
    # collision can only make it report duplicates that are not there, never hide one.
    hashes = pl.select(pl.struct([batch.get_column(k) for k in key]).hash()).to_series()
    if hashes.n_unique() == batch.height:
        return batch, 0
    unique = batch.filter(pl.struct(list(key)).is_last_distinct())
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
    #: Keys whose stored rows are replaced (the stored rows are dropped when their files are rewritten).
    replaced_keys: pl.DataFrame
    #: Indexes (as in ``FILE_INDEX``) of the files that hold a replaced key.
    files_to_rewrite: list[int]


def plan_upsert(
    batch: pl.DataFrame, stored: pl.DataFrame, key: tuple[str, ...], ordering: str | None = None
) -> UpsertPlan:
    """Latest wins: an incoming row replaces the stored row of its key, unless the stored one is newer.

    ``stored`` holds the key columns (plus ``ordering`` and ``FILE_INDEX``) of the candidate files.
    With an ordering column, an incoming row wins when its value is at least the stored one; a
    stored null loses to anything, an incoming null loses to a stored value.
    """
    keys = list(key)
    stored = stored.with_columns(pl.col(k).cast(batch.schema[k]) for k in keys)
    if ordering is not None:
        stored = stored.with_columns(pl.col(ordering).cast(batch.schema[ordering]))
    stored_per_key = stored.group_by(keys).agg(
        *([pl.col(ordering).max().alias("_stored_order")] if ordering else []),
    )
    matched = batch.join(stored_per_key, on=keys, how="inner", nulls_equal=True)
    if ordering is None:
        winners = matched
    else:
        incoming = pl.col(ordering)
        current = pl.col("_stored_order")
        winners = matched.filter(current.is_null() | (incoming.is_not_null() & (incoming >= current)))
    replaced_keys = winners.select(keys)
    new_rows = batch.join(stored_per_key.select(keys), on=keys, how="anti", nulls_equal=True)
    files = (
        stored.join(replaced_keys, on=keys, how="semi", nulls_equal=True).get_column(FILE_INDEX).unique().sort()
        if replaced_keys.height
        else pl.Series(FILE_INDEX, [], pl.Int32)
    )
    return UpsertPlan(
        rows=pl.concat([new_rows, winners.select(batch.columns)]),
        inserted=new_rows.height,
        updated=winners.height,
        skipped=matched.height - winners.height,
        replaced_keys=replaced_keys,
        files_to_rewrite=files.to_list(),
    )


def drop_replaced(stored_rows: pl.DataFrame, replaced_keys: pl.DataFrame, key: tuple[str, ...]) -> pl.DataFrame:
    """The rows of rewritten files that stay: every row whose key is not being replaced."""
    keys = list(key)
    replaced = replaced_keys.with_columns(pl.col(k).cast(stored_rows.schema[k]) for k in keys)
    return stored_rows.join(replaced, on=keys, how="anti", nulls_equal=True)
