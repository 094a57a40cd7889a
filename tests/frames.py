"""Small posts batches for loader tests: a row per id, the contract's columns, nulls where not given."""

from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl

from icegate.datasets import get_dataset

POSTS = get_dataset("posts")


def posts_frame(
    *ids: str,
    creator: str = "alice",
    likes: int | None = 1,
    posted: date = date(2026, 1, 10),
    with_urls: bool = False,
    **same_in_every_row: Any,
) -> pl.DataFrame:
    """Posts ``ids`` by ``creator``; ``with_urls`` gives each its post URL; other columns by keyword, one value."""
    values: dict[str, list[Any]] = {name: [None] * len(ids) for name in POSTS.column_names}
    values.update(post_id=list(ids), creator=[creator] * len(ids), posted_date=[posted] * len(ids))
    values["likes"] = [likes] * len(ids)
    if with_urls:
        values["post_url"] = [f"https://www.instagram.com/p/{i}/" for i in ids]
    values.update({name: [value] * len(ids) for name, value in same_in_every_row.items()})
    return pl.DataFrame(
        values, schema_overrides={"posted_date": pl.Date, "likes": pl.Int64, "comments": pl.Int64}
    ).select(POSTS.column_names)


#: The posts scraper's header, as its CSV files start.
SCRAPER_HEADER = (
    "Search Term,Post ID,Creator,Posted Date,Likes,Comments,Hashtags,Caption,Image Description,Post URL,Status"
)


def scraper_posts_csv(ids: range) -> bytes:
    """A posts file as the scraper writes it, holding posts ``P<id>`` (the same post always has the same row)."""
    rows = [
        f"pizza nyc,P{i:06d},creator_{i % 7},2026-01-0{1 + i % 9},{i},{i % 50},#food,Caption {i},A pizza,"
        f"https://www.instagram.com/p/P{i:06d}/,success"
        for i in ids
    ]
    return ("\n".join([SCRAPER_HEADER, *rows]) + "\n").encode()


def observe_commits(catalog: Any) -> list[str]:
    """The catalog's commits that land from now on, by table name (observed, not replaced)."""
    landed: list[str] = []
    real = catalog.commit_table

    def counted(table: Any, *args: Any, **kwargs: Any) -> Any:
        response = real(table, *args, **kwargs)
        landed.append(table.name()[-1])
        return response

    catalog.commit_table = counted
    return landed
