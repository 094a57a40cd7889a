"""Restaurant Instagram profiles: ``instagram_results_<yyyymmdd>_<hhmmss>.csv``.

Two rows are the same restaurant when name, city and phone are equal. Phones are compared in their
normal form (:func:`icegate.datasets._normalizers.phone`): a valid number as E.164, so
``(212) 555-0100`` and ``+1 212-555-0100`` are one phone (read in ``ICEGATE_PHONE_REGION`` when written
without ``+``); any other number by all its digits, vanity letters as the keypad digits they dial, so
``555-CALL-NOW`` and ``555-EAT-GOOD`` are two phones.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from icegate.datasets._contract import Column, Dataset, QualityRule
from icegate.datasets._normalizers import instagram_handle, phone

STATUSES = ("found", "not_found", "private", "error")
NON_NEGATIVE = pa.Check.ge(0)

DATASET = Dataset(
    name="restaurants",
    file_patterns=("instagram_results_*",),
    columns=(
        Column("restaurant_name", nullable=False, aliases=("name", "restaurant")),
        Column("city", nullable=False),
        Column("phone", normalizer=phone, aliases=("phone_number", "telephone")),
        Column("instagram_handle", normalizer=instagram_handle, aliases=("handle", "instagram", "username")),
        Column("followers", "long", aliases=("follower_count", "followers_count"), checks=(NON_NEGATIVE,)),
        Column("posts_count", "long", aliases=("posts", "post_count"), checks=(NON_NEGATIVE,)),
        Column("bio", required=False, aliases=("biography",)),
        Column("website", required=False, aliases=("url", "external_url")),
        Column("status", required=False),
    ),
    key=("restaurant_name", "city", "phone"),
    strategy="insert_new",
    # A few thousand profiles per scrape: one unpartitioned table keeps files few and large.
    partition=(),
    quality_threshold=70.0,
    quality_rules=(
        # These repeat schema checks on purpose: rules are scored over the rejected rows too, so accuracy
        # counts the negative counts the schema rejected instead of never seeing them.
        QualityRule("followers_not_negative", "accuracy", lambda ctx: pl.col("followers") >= 0),
        QualityRule("posts_count_not_negative", "accuracy", lambda ctx: pl.col("posts_count") >= 0),
        QualityRule(
            "phone_has_7_to_15_digits",
            "accuracy",
            lambda ctx: pl.col("phone").str.replace_all(r"\D", "").str.len_chars().is_between(7, 15),
        ),
        QualityRule("website_is_url", "accuracy", lambda ctx: pl.col("website").str.contains(r"^https?://\S+\.\S+")),
        QualityRule(
            "handle_format",
            "consistency",
            lambda ctx: pl.col("instagram_handle").str.contains(r"^@[a-z0-9._]{1,30}$"),
        ),
        QualityRule("status_in_vocabulary", "consistency", lambda ctx: pl.col("status").is_in(STATUSES)),
        QualityRule(
            "not_found_has_no_followers",
            "consistency",
            lambda ctx: (
                pl.when(pl.col("status") == "not_found").then(pl.col("followers").fill_null(0) == 0).otherwise(None)
            ),
        ),
    ),
)
