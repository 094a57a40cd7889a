"""Instagram posts scraped by search term: ``post_results_<yyyymmdd>_<hhmmss>.csv``."""

from __future__ import annotations

from datetime import timedelta

import pandera.polars as pa
import polars as pl

from icegate.datasets._contract import Column, Dataset, QualityContext, QualityRule

STATUSES = ("success", "partial", "failed", "not_found", "private")
#: A post older than this (against the file's date) counts as stale for timeliness.
FRESH_DAYS = 365
NON_NEGATIVE = pa.Check.ge(0)


def _not_future(ctx: QualityContext) -> pl.Expr:
    return pl.col("posted_date") <= ctx.upload_date


def _fresh(ctx: QualityContext) -> pl.Expr:
    return pl.col("posted_date") >= ctx.reference_date - timedelta(days=FRESH_DAYS)


DATASET = Dataset(
    name="posts",
    file_patterns=("post_results_*",),
    columns=(
        Column("search_term", required=False, aliases=("query", "hashtag_searched")),
        Column("post_id", nullable=False, aliases=("shortcode", "id")),
        Column("creator", nullable=False, aliases=("username", "owner", "author")),
        Column("posted_date", "date", aliases=("date", "post_date", "posted_at")),
        Column("likes", "long", aliases=("like_count", "likes_count"), checks=(NON_NEGATIVE,)),
        Column("comments", "long", aliases=("comment_count", "comments_count"), checks=(NON_NEGATIVE,)),
        Column("hashtags", required=False),
        Column("caption", required=False),
        Column("image_description", required=False, aliases=("alt_text",)),
        Column("post_url", aliases=("url", "link"), checks=(pa.Check.str_matches(r"^https?://\S+$"),)),
        Column("status", required=False),
    ),
    key=("post_id", "creator"),
    strategy="insert_new",
    # Queries slice posts by time, so partitions are months. The merge key does not determine the
    # month, so the loader finds stored keys by column statistics instead: it writes each month's
    # rows sorted by post_id and cut into files of write.target-file-size-bytes, each a narrow key
    # range that a merge reads only when the range can hold a batch key. Not bucket(post_id): a
    # batch of thousands of keys touches every bucket anyway, buckets would multiply the files per
    # load, and time slicing would lose its partitions.
    partition=(("posted_date", "month"),),
    quality_threshold=70.0,
    quality_rules=(
        # These repeat schema checks on purpose: rules are scored over the rejected rows too, so accuracy
        # counts the negative counts the schema rejected instead of never seeing them.
        QualityRule("likes_not_negative", "accuracy", lambda ctx: pl.col("likes") >= 0),
        QualityRule("comments_not_negative", "accuracy", lambda ctx: pl.col("comments") >= 0),
        QualityRule(
            "post_url_on_instagram",
            "accuracy",
            lambda ctx: pl.col("post_url").str.contains(r"^https?://(www\.)?instagram\.com/"),
        ),
        QualityRule("posted_date_not_in_future", "accuracy", _not_future),
        QualityRule(
            "post_url_contains_post_id",
            "consistency",
            lambda ctx: pl.col("post_url").str.contains(pl.col("post_id"), literal=True),
        ),
        QualityRule("status_in_vocabulary", "consistency", lambda ctx: pl.col("status").is_in(STATUSES)),
        QualityRule(
            "hashtags_start_with_hash",
            "consistency",
            lambda ctx: pl.col("hashtags").str.contains(r"^(#\S+)([ ,]+#\S+)*$"),
        ),
        QualityRule(f"posted_within_{FRESH_DAYS}_days", "timeliness", _fresh),
    ),
)
