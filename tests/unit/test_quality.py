"""Quality scoring: six dimensions, weights, the 0–100 score and the gate decision.

Inputs are built by hand: ``valid`` rows are typed (as validation returns them), ``rejected``
rows hold the original strings plus ``row_number`` and ``failed_checks``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from icegate.datasets import Dataset, all_datasets, get_dataset
from icegate.dimensions import DEFAULT_FLOORS, DEFAULT_WEIGHTS, QUALITY_DIMENSIONS
from icegate.quality import (
    QualityReport,
    file_stamp,
    resolve_floors,
    resolve_weights,
    score_batch,
)
from icegate.validate import FAILED_CHECKS, ROW_NUMBER, validate_table
from tests.garbage import garbage_posts_rows

POSTS = get_dataset("posts")
RESTAURANTS = get_dataset("restaurants")
#: A file stamped 13 January, uploaded the next day.
POSTS_FILE = "post_results_20260113_175319.csv"
RESTAURANTS_FILE = "instagram_results_20260113_175319.csv"
UPLOAD = date(2026, 1, 14)
STAMP = date(2026, 1, 13)

_TYPES = {"string": pl.String, "long": pl.Int64, "date": pl.Date}


def post(**changes: Any) -> dict[str, Any]:
    """A typed posts row that passes every quality rule (its URL follows its post_id unless given)."""
    row: dict[str, Any] = {
        "search_term": "pizza",
        "post_id": "P1",
        "creator": "alice",
        "posted_date": date(2026, 1, 10),
        "likes": 10,
        "comments": 2,
        "hashtags": "#pizza #rome",
        "caption": "lunch",
        "image_description": "a pizza",
        "post_url": "https://www.instagram.com/p/P1/",
        "status": "success",
    }
    if changes.get("post_id") and "post_url" not in changes:
        row["post_url"] = f"https://www.instagram.com/p/{changes['post_id']}/"
    row.update(changes)
    return row


def restaurant(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "restaurant_name": "Luigi's",
        "city": "Rome",
        "phone": "+39 06 1234567",
        "instagram_handle": "@luigis",
        "followers": 1200,
        "posts_count": 85,
        "bio": "Pizza since 1950",
        "website": "https://luigis.example",
        "status": "found",
    }
    row.update(changes)
    return row


def valid_frame(dataset: Dataset, rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {c.name: _TYPES[c.type] for c in dataset.columns}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def rejected_frame(dataset: Dataset, rows: list[tuple[dict[str, Any], list[str]]]) -> pl.DataFrame:
    """Rejected rows as validation writes them: original strings, row number, failed checks."""
    schema = {ROW_NUMBER: pl.Int64, **dict.fromkeys(dataset.column_names, pl.String), FAILED_CHECKS: pl.List(pl.String)}
    records = [
        {ROW_NUMBER: i, **{k: None if v is None else str(v) for k, v in row.items()}, FAILED_CHECKS: checks}
        for i, (row, checks) in enumerate(rows, start=1)
    ]
    return pl.DataFrame(records, schema=schema) if records else pl.DataFrame(schema=schema)


def score_posts(
    valid: list[dict[str, Any]],
    rejected: list[tuple[dict[str, Any], list[str]]] | None = None,
    *,
    dataset: Dataset = POSTS,
    file: str = POSTS_FILE,
    upload_date: date = UPLOAD,
    weights: dict[str, float] | None = None,
    floors: dict[str, float] | None = None,
    threshold: float = 70.0,
) -> QualityReport:
    """Score as the pipeline does; floors default to the dataset's (the defaults under its own)."""
    return score_batch(
        valid_frame(dataset, valid),
        rejected_frame(dataset, rejected or []),
        dataset,
        file=file,
        upload_date=upload_date,
        weights=weights or dict(DEFAULT_WEIGHTS),
        floors=resolve_floors(dataset, {}) if floors is None else floors,
        threshold=threshold,
    )


def clean_posts(n: int = 4) -> list[dict[str, Any]]:
    return [post(post_id=f"P{i}", post_url=f"https://www.instagram.com/p/P{i}/") for i in range(1, n + 1)]


def dimension(report: QualityReport, name: str) -> Any:
    [found] = [d for d in report.dimensions if d.name == name]
    return found


def failed_rows(report: QualityReport, dimension_name: str) -> dict[str, int]:
    return {c.name: c.rows_failed for c in dimension(report, dimension_name).checks}


# --- a clean file ---------------------------------------------------------------------------------


def test_clean_file_scores_100_and_passes_with_no_costly_checks() -> None:
    report = score_posts(clean_posts())

    assert report.score == 100.0
    assert report.passed is True
    assert report.reason == ""
    assert report.rows == 4
    assert report.dimension_scores() == dict.fromkeys(QUALITY_DIMENSIONS, 1.0)
    assert all(d.checks == [] and d.points_lost == 0 for d in report.dimensions)


# --- each dimension moves when its input degrades -------------------------------------------------


def _with(index: int, **changes: Any) -> list[dict[str, Any]]:
    rows = clean_posts()
    rows[index] = {**rows[index], **changes}
    return rows


POSTS_DEGRADATIONS = [
    pytest.param(_with(0, comments=None), [], "completeness", "comments_present", 1, id="completeness-null-count"),
    pytest.param(_with(1, post_url=None), [], "completeness", "post_url_present", 1, id="completeness-null-url"),
    pytest.param(
        clean_posts(3),
        [(post(post_id="P9", likes="1.5"), ["likes:type(long)"])],
        "validity",
        "likes:type(long)",
        1,
        id="validity-rejected-row",
    ),
    pytest.param(
        _with(1, post_id="P1", post_url="https://www.instagram.com/p/P1/"),
        [],
        "uniqueness",
        "key_unique_in_file",
        1,
        id="uniqueness-duplicate-key",
    ),
    pytest.param(
        _with(2, post_url="https://example.com/p/P3/"), [], "accuracy", "post_url_on_instagram", 1, id="accuracy-host"
    ),
    pytest.param(
        _with(0, posted_date=UPLOAD + timedelta(days=1)),
        [],
        "accuracy",
        "posted_date_not_in_future",
        1,
        id="accuracy-posted-after-upload",
    ),
    pytest.param(
        _with(0, post_url="https://www.instagram.com/p/OTHER/"),
        [],
        "consistency",
        "post_url_contains_post_id",
        1,
        id="consistency-url-without-post-id",
    ),
    pytest.param(
        _with(3, status="done"), [], "consistency", "status_in_vocabulary", 1, id="consistency-status-vocabulary"
    ),
    pytest.param(
        _with(3, hashtags="pizza rome"), [], "consistency", "hashtags_start_with_hash", 1, id="consistency-hashtags"
    ),
    pytest.param(
        _with(0, posted_date=STAMP - timedelta(days=400)),
        [],
        "timeliness",
        "posted_within_365_days",
        1,
        id="timeliness-stale-post",
    ),
]


@pytest.mark.parametrize(("valid", "rejected", "degraded", "check", "rows"), POSTS_DEGRADATIONS)
def test_posts_dimension_drops_when_its_input_degrades(
    valid: list[dict[str, Any]], rejected: list[tuple[dict[str, Any], list[str]]], degraded: str, check: str, rows: int
) -> None:
    # GIVEN a clean file with one defect WHEN it is scored
    report = score_posts(valid, rejected)

    # THEN only the dimension the defect belongs to drops, and its report names the check and rows hit
    scores = report.dimension_scores()
    assert scores[degraded] < 1.0
    assert {name: s for name, s in scores.items() if name != degraded} == dict.fromkeys(
        set(QUALITY_DIMENSIONS) - {degraded}, 1.0
    )
    assert failed_rows(report, degraded) == {check: rows}, "the report names exactly the check that cost points"
    assert report.score < 100.0


RESTAURANT_DEGRADATIONS = [
    pytest.param(restaurant(instagram_handle="luigis"), "consistency", "handle_format", id="handle-without-at"),
    pytest.param(restaurant(instagram_handle="@" + "x" * 31), "consistency", "handle_format", id="handle-too-long"),
    pytest.param(restaurant(status="gone"), "consistency", "status_in_vocabulary", id="status-vocabulary"),
    pytest.param(
        restaurant(status="not_found", followers=50), "consistency", "not_found_has_no_followers", id="ghost-followers"
    ),
    pytest.param(restaurant(phone="12-34"), "accuracy", "phone_has_7_to_15_digits", id="phone-too-short"),
    pytest.param(restaurant(website="luigis"), "accuracy", "website_is_url", id="website-not-url"),
    pytest.param(restaurant(followers=-5), "accuracy", "followers_not_negative", id="negative-followers"),
    pytest.param(restaurant(city=None), "completeness", "city_present", id="missing-city"),
]


@pytest.mark.parametrize(("bad_row", "degraded", "check"), RESTAURANT_DEGRADATIONS)
def test_restaurants_dimension_drops_when_a_rule_fails(bad_row: dict[str, Any], degraded: str, check: str) -> None:
    good = [restaurant(city=f"City {i}") for i in range(3)]

    report = score_posts([*good, bad_row], dataset=RESTAURANTS, file=RESTAURANTS_FILE)

    scores = report.dimension_scores()
    assert scores[degraded] < 1.0
    assert all(s == 1.0 for name, s in scores.items() if name != degraded), scores
    assert failed_rows(report, degraded) == {check: 1}


def test_completeness_counts_nulls_in_required_columns_only() -> None:
    """Optional columns (caption, hashtags, ...) may be empty without costing completeness."""
    rows = [post(post_id=f"P{i}", post_url=f"https://www.instagram.com/p/P{i}/") for i in range(1, 5)]
    rows[0].update(caption=None, search_term=None, image_description=None, hashtags=None, status=None)
    rows[1].update(likes=None)

    report = score_posts(rows)

    # 6 required columns (post_id, creator, posted_date, likes, comments, post_url) x 4 rows, 1 missing
    assert dimension(report, "completeness").score == round(1 - 1 / 24, 4)
    assert failed_rows(report, "completeness") == {"likes_present": 1}


def test_completeness_also_counts_nulls_in_rejected_rows() -> None:
    report = score_posts(clean_posts(1), [(post(post_id=None), ["post_id:not_nullable"])])

    assert failed_rows(report, "completeness") == {"post_id_present": 1}
    assert dimension(report, "completeness").score == round(1 - 1 / 12, 4)


def test_validity_is_the_share_of_rows_that_passed_the_schema() -> None:
    rejected = [
        (post(post_id="R1", likes="-1"), ["likes:greater_than_or_equal_to(0)"]),
        (post(post_id="R2", likes="-1", comments="x"), ["comments:type(long)", "likes:greater_than_or_equal_to(0)"]),
    ]

    report = score_posts(clean_posts(6), rejected)

    validity = dimension(report, "validity")
    assert validity.score == 0.75  # 6 of 8 rows passed
    # worst check first, each with the rows it hit out of the file's rows
    assert [(c.name, c.rows_failed, c.rows_checked) for c in validity.checks] == [
        ("likes:greater_than_or_equal_to(0)", 2, 8),
        ("comments:type(long)", 1, 8),
    ]


def test_uniqueness_counts_duplicate_keys_across_valid_and_rejected_rows() -> None:
    # GIVEN P1/alice twice among valid rows and once more as a rejected row; P2 by two creators (distinct keys)
    valid = [post(), post(), post(post_id="P2"), post(post_id="P2", creator="bob")]
    rejected = [(post(likes="x"), ["likes:type(long)"])]

    report = score_posts(valid, rejected)

    # THEN 5 rows hold 3 distinct keys: 2 duplicates
    assert failed_rows(report, "uniqueness") == {"key_unique_in_file": 2}
    assert dimension(report, "uniqueness").score == round(1 - 2 / 5, 4)


def test_rules_not_applicable_to_a_row_do_not_count() -> None:
    """A null cell makes a rule not applicable: it neither passes nor fails, and leaves the share alone."""
    # GIVEN one row breaking the status rule and one row with no status at all
    rows = [
        post(post_id="P1", post_url="https://www.instagram.com/p/P1/", status="weird"),
        post(post_id="P2", post_url="https://www.instagram.com/p/P2/", status=None, hashtags=None),
    ]

    report = score_posts(rows)

    # THEN status was checked on 1 row only, hashtags on 1 row only
    checks = {c.name: (c.rows_failed, c.rows_checked) for c in dimension(report, "consistency").checks}
    assert checks == {"status_in_vocabulary": (1, 1)}
    # url-has-id 2 of 2, status 0 of 1, hashtags 1 of 1: 3 of 4 applicable evaluations passed
    # (counting the nulls as failures would give 3/6, as passes 5/6)
    assert dimension(report, "consistency").score == 0.75


def test_not_found_rule_applies_only_to_not_found_profiles() -> None:
    rows = [restaurant(status="found", followers=100), restaurant(city="Milan", status="not_found", followers=None)]

    report = score_posts(rows, dataset=RESTAURANTS, file=RESTAURANTS_FILE)

    assert dimension(report, "consistency").score == 1.0


# --- timeliness boundaries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_before_stamp", "fresh"),
    [(0, True), (365, True), (366, False)],
    ids=["same-day", "exactly-365-days", "366-days"],
)
def test_posted_date_freshness_is_measured_against_the_file_stamp(days_before_stamp: int, fresh: bool) -> None:
    report = score_posts([post(posted_date=STAMP - timedelta(days=days_before_stamp))])

    assert ("posted_within_365_days" in failed_rows(report, "timeliness")) is not fresh


def test_without_a_file_stamp_freshness_is_measured_against_the_upload_date() -> None:
    # GIVEN a file with no date in its name, and posts 365 and 366 days older than the upload
    rows = [
        post(posted_date=UPLOAD - timedelta(days=365)),
        post(post_id="P2", posted_date=UPLOAD - timedelta(days=366)),
    ]

    report = score_posts(rows, file="posts_export.csv")

    # THEN only the older one is stale, and there is no file-stamp check to make
    timeliness = dimension(report, "timeliness")
    assert [(c.name, c.rows_failed, c.rows_checked) for c in timeliness.checks] == [("posted_within_365_days", 1, 2)]


@pytest.mark.parametrize(
    ("posted", "in_future"),
    [(UPLOAD, False), (UPLOAD + timedelta(days=1), True)],
    ids=["posted-on-upload-day", "posted-day-after-upload"],
)
def test_posted_date_in_the_future_is_relative_to_the_upload_date(posted: date, in_future: bool) -> None:
    report = score_posts([post(posted_date=posted)])

    assert ("posted_date_not_in_future" in failed_rows(report, "accuracy")) is in_future


def test_file_stamped_after_its_upload_costs_timeliness() -> None:
    report = score_posts(clean_posts(), file="post_results_20260120_000000.csv", upload_date=UPLOAD)

    timeliness = dimension(report, "timeliness")
    assert failed_rows(report, "timeliness") == {"file_stamp_not_after_upload": 1}
    # 4 fresh posts + 1 failed file check = 4 of 5 evaluations passed
    assert timeliness.score == 0.8


# --- the score and the gate -----------------------------------------------------------------------


def test_score_is_the_weighted_mean_of_the_dimensions() -> None:
    """A small file with one defect of each kind, scored by hand."""
    # GIVEN three valid rows and one rejected row
    valid = [
        post(post_id="A", creator="alice", post_url="https://www.instagram.com/p/A/"),
        # likes missing (completeness; likes rule not applicable), posted after upload, hashtag without '#'
        post(
            post_id="B",
            creator="bob",
            post_url="https://www.instagram.com/p/B/",
            likes=None,
            posted_date=date(2026, 2, 1),
            hashtags="food",
        ),
        # duplicate key of the first row, off-instagram URL without the id, stale, no status/hashtags
        post(
            post_id="A",
            creator="alice",
            post_url="https://example.com/p/Z/",
            posted_date=date(2024, 6, 1),
            status=None,
            hashtags=None,
        ),
    ]
    # rejected for its negative likes, which accuracy counts too: every dimension covers every row read
    rejected = [
        (
            post(post_id="C", creator="carol", post_url="https://www.instagram.com/p/C/", likes="-3"),
            ["likes:greater_than_or_equal_to(0)"],
        )
    ]

    report = score_posts(valid, rejected, threshold=0, floors={})

    # THEN each dimension is the share worked out by hand ...
    expected = {
        "completeness": Fraction(23, 24),  # 6 required columns x 4 rows, one null
        "accuracy": Fraction(12, 15),  # likes 2/3 (one null, one negative), comments 4/4, host 3/4, future 3/4
        "consistency": Fraction(8, 10),  # url-has-id 3/4, status 3/3 (one null), hashtags 2/3 (one null)
        "timeliness": Fraction(4, 5),  # fresh 3/4, stamp not after upload 1/1
        "uniqueness": Fraction(3, 4),  # 4 rows, 3 distinct keys
        "validity": Fraction(3, 4),  # 1 of 4 rejected
    }
    assert report.dimension_scores() == pytest.approx({k: float(v) for k, v in expected.items()}, abs=1e-4)
    # ... and the score is their weighted mean on 0–100
    weighted = sum(DEFAULT_WEIGHTS[k] * v for k, v in expected.items()) * 100 / sum(DEFAULT_WEIGHTS.values())
    assert report.score == pytest.approx(float(weighted), abs=0.01)
    # ... and the points lost add up to what the score misses
    assert sum(d.points_lost for d in report.dimensions) == pytest.approx(100 - report.score, abs=0.05)


def test_weights_decide_how_much_a_dimension_counts() -> None:
    # GIVEN a file where only validity is degraded (1 of 4 rows rejected)
    valid, rejected = clean_posts(3), [(post(post_id="R", likes="x"), ["likes:type(long)"])]
    only_validity = dict.fromkeys(QUALITY_DIMENSIONS, 0.0) | {"validity": 1.0}
    no_validity = dict(DEFAULT_WEIGHTS) | {"validity": 0.0}

    # THEN the score follows validity alone, or ignores it
    assert score_posts(valid, rejected, weights=only_validity).score == 75.0
    assert score_posts(valid, rejected, weights=no_validity).score == 100.0


def test_score_below_threshold_fails_naming_the_dimensions_that_lost_most() -> None:
    # GIVEN half the rows duplicate keys (uniqueness, weight 15) and one URL off instagram (accuracy, small)
    rows = [
        post(),
        post(),
        post(post_id="P2", post_url="https://www.instagram.com/p/P2/"),
        post(post_id="P2", post_url="https://www.instagram.com/p/P2/"),
        post(post_id="P3", post_url="https://example.com/P3"),
    ]

    report = score_posts(rows, threshold=99)

    assert report.passed is False
    assert report.score < 99
    assert f"score {report.score} < threshold 99" in report.reason
    worst_two = sorted(report.dimensions, key=lambda d: -d.points_lost)[:2]
    assert {d.name for d in worst_two} == {"uniqueness", "accuracy"}
    assert "uniqueness" in report.reason
    assert "accuracy" in report.reason
    assert "validity" not in report.reason
    assert report.reason.index("uniqueness") < report.reason.index("accuracy"), "worst first"


def test_score_at_the_threshold_passes() -> None:
    valid, rejected = clean_posts(3), [(post(post_id="R", likes="x"), ["likes:type(long)"])]
    only_validity = dict.fromkeys(QUALITY_DIMENSIONS, 0.0) | {"validity": 1.0}

    assert score_posts(valid, rejected, weights=only_validity, threshold=75).passed is True
    assert score_posts(valid, rejected, weights=only_validity, threshold=75.01).passed is False


def test_dimension_under_its_floor_fails_the_gate_even_with_a_good_score() -> None:
    # GIVEN a contract that requires uniqueness >= 0.9 and a file with 1 duplicate in 4 rows
    strict = replace(POSTS, quality_floors={"uniqueness": 0.9})
    rows = _with(1, post_id="P1", post_url="https://www.instagram.com/p/P1/")

    report = score_posts(rows, dataset=strict, threshold=50)

    # THEN the score alone would pass, but the floor fails it, and says so
    assert report.score >= 50
    assert report.passed is False
    assert report.reason == "uniqueness 0.75 < floor 0.9"


def test_floor_that_is_met_does_not_fail_the_gate() -> None:
    lenient = replace(POSTS, quality_floors={"uniqueness": 0.75, "validity": 1.0})
    rows = _with(1, post_id="P1", post_url="https://www.instagram.com/p/P1/")

    assert score_posts(rows, dataset=lenient).passed is True


# --- every dimension describes the whole file -----------------------------------------------------


def test_a_file_whose_every_row_was_rejected_scores_badly_on_every_dimension_it_fails() -> None:
    """Issue 8: measured over the valid rows only (none), this file scored 90 and passed."""
    # GIVEN 20 rows with negative likes, ftp:// URLs, 2099 dates and status '??' — all rejected by the schema
    rejected = [(row, ["likes:greater_than_or_equal_to(0)", "post_url:str_matches"]) for row in garbage_posts_rows()]

    # WHEN the file is scored
    report = score_posts([], rejected)

    # THEN accuracy and consistency count the rejected rows' defects instead of scoring 1.0 on no rows
    assert failed_rows(report, "accuracy") == {
        "likes_not_negative": 20,
        "post_url_on_instagram": 20,
        "posted_date_not_in_future": 20,
    }
    assert failed_rows(report, "consistency") == {"post_url_contains_post_id": 20, "status_in_vocabulary": 20}
    assert dimension(report, "validity").score == 0.0
    # AND the gate fails on the score and on the collapsed dimensions' floors
    assert report.passed is False
    assert report.score < 70
    assert f"score {report.score} < threshold 70.0" in report.reason
    for collapsed in ("validity", "accuracy", "consistency"):
        assert f"{collapsed} {dimension(report, collapsed).score} < floor 0.5" in report.reason


def test_a_rejected_value_that_does_not_parse_makes_a_rule_not_applicable() -> None:
    # GIVEN a rejected row whose likes are not a number and whose date is not a date
    rejected = [(post(post_id="R", likes="lots", posted_date="someday"), ["likes:type(long)"])]

    report = score_posts(clean_posts(3), rejected)

    # THEN the rules on those values skip the row (validity already counts it), the others still check it
    accuracy = {c.name: c for c in dimension(report, "accuracy").checks}
    assert accuracy == {}
    assert dimension(report, "accuracy").score == 1.0
    assert dimension(report, "validity").score == 0.75


# --- floors: one collapsed dimension fails the gate whatever the weights --------------------------


def _collapsed(dimension_name: str) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], list[str]]]]:
    """One clean row and five rows bad in the one given dimension only."""
    good, bad_ids = clean_posts(1), [f"X{i}" for i in range(5)]
    if dimension_name == "validity":
        return good, [(post(post_id=i, likes="x"), ["likes:type(long)"]) for i in bad_ids]
    bad = {
        "completeness": [post(post_id=i, likes=None, comments=None, posted_date=None, post_url=None) for i in bad_ids],
        # likes and comments left empty: a negative count would be rejected, and this file is to be valid
        "accuracy": [
            post(post_id=i, post_url=f"https://example.com/p/{i}/", posted_date=UPLOAD + timedelta(days=9), likes=None)
            for i in bad_ids
        ],
        "consistency": [
            post(post_id=i, post_url="https://www.instagram.com/p/OTHER/", status="??", hashtags="pizza")
            for i in bad_ids
        ],
        "uniqueness": [post(post_id="P1", creator="alice") for _ in bad_ids],
    }
    return good + bad[dimension_name], []


@pytest.mark.parametrize("collapsed", ["completeness", "accuracy", "consistency", "uniqueness", "validity"])
def test_a_dimension_under_its_default_floor_fails_the_gate_even_when_it_weighs_nothing(collapsed: str) -> None:
    # GIVEN a file bad in one dimension only, and weights that ignore that dimension entirely
    valid, rejected = _collapsed(collapsed)
    ignoring = dict(DEFAULT_WEIGHTS) | {collapsed: 0.0}

    # WHEN it is scored with the default floors
    report = score_posts(valid, rejected, weights=ignoring)

    # THEN the score would pass, but the collapsed dimension fails the gate on its own, and says so
    assert report.score >= 70, report.dimension_scores()
    assert report.passed is False
    assert report.reason == f"{collapsed} {dimension(report, collapsed).score} < floor {DEFAULT_FLOORS[collapsed]}"


def test_timeliness_has_no_default_floor_so_a_backfill_of_old_posts_loads() -> None:
    # GIVEN a file of posts all older than a year (a history backfill)
    rows = [{**r, "posted_date": STAMP - timedelta(days=800)} for r in clean_posts()]

    report = score_posts(rows)

    assert dimension(report, "timeliness").score < 0.5
    assert report.passed is True


def test_default_floors_cover_every_dimension_within_0_and_1() -> None:
    assert set(DEFAULT_FLOORS) == set(QUALITY_DIMENSIONS)
    assert all(0 <= f <= 1 for f in DEFAULT_FLOORS.values())


def test_resolve_floors_layers_defaults_dataset_and_overrides() -> None:
    dataset = replace(POSTS, quality_floors={"uniqueness": 0.9, "validity": 0.0})

    floors = resolve_floors(dataset, {"uniqueness": 0.95})

    assert floors == {**DEFAULT_FLOORS, "uniqueness": 0.95, "validity": 0.0}


@pytest.mark.parametrize(
    ("dataset_floors", "overrides"),
    [({"validity": 1.5}, {}), ({}, {"accuracy": -0.1}), ({}, {"accuracy": float("nan")}), ({}, {"freshness": 0.5})],
    ids=["above-one", "negative", "nan", "unknown-dimension"],
)
def test_invalid_floors_raise(dataset_floors: dict[str, float], overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="quality floors"):
        resolve_floors(replace(POSTS, quality_floors=dataset_floors), overrides)


def test_the_gate_reason_states_each_failure_once() -> None:
    # GIVEN a file under the threshold and under two floors
    rejected = [(row, ["likes:greater_than_or_equal_to(0)"]) for row in garbage_posts_rows(4)]

    report = score_posts(clean_posts(1), rejected)

    # THEN the reason names the score and threshold once, then each floor that failed once
    assert report.reason.count("threshold") == 1
    assert report.reason.count(str(report.score)) == 1
    assert report.reason.count("< floor") == len([d for d in report.dimensions if d.score < d.floor]) >= 2


# --- rules that can never fire --------------------------------------------------------------------

#: A raw row per dataset (strings, as parsed) that passes the schema and every quality rule.
GOOD_RAW_ROWS: dict[str, dict[str, str]] = {
    "posts": {
        "search_term": "pizza",
        "post_id": "P1",
        "creator": "alice",
        "posted_date": "2026-01-10",
        "likes": "10",
        "comments": "2",
        "hashtags": "#pizza #rome",
        "caption": "lunch",
        "image_description": "a pizza",
        "post_url": "https://www.instagram.com/p/P1/",
        "status": "success",
    },
    "restaurants": {
        "restaurant_name": "Luigi's",
        "city": "Rome",
        "phone": "0612345678",
        "instagram_handle": "@luigis",
        "followers": "1200",
        "posts_count": "85",
        "bio": "Pizza since 1950",
        "website": "https://luigis.example",
        "status": "found",
    },
}
#: What scrapers write into a cell, by column type: each replaces one cell of the good row.
DEFECTS: dict[str, list[str | None]] = {
    "string": [None, "", "??", "not_found", "ftp://example.com/p/X/", "https://example.com/x", "Bad Handle!", "12"],
    "long": [None, "-5", "0", "1000000"],
    "date": [None, "2099-01-01", "2001-01-01"],
}


def _probe(dataset: Dataset, rows: list[dict[str, str | None]]) -> QualityReport:
    """Validate raw rows with the dataset's own schema, then score them as the pipeline does."""
    table = pa.table({name: pa.array([r[name] for r in rows], pa.string()) for name in dataset.column_names})
    result = validate_table(table, dataset, file="probe.csv")
    valid, rejected = pl.from_arrow(result.valid), pl.from_arrow(result.rejected)
    assert isinstance(valid, pl.DataFrame)
    assert isinstance(rejected, pl.DataFrame)
    return score_batch(
        valid,
        rejected,
        dataset,
        file=f"{dataset.file_patterns[0].rstrip('*')}20260113_175319.csv",
        upload_date=UPLOAD,
        weights=dict(DEFAULT_WEIGHTS),
        floors={},
        threshold=0,
    )


@pytest.mark.parametrize("dataset", sorted(all_datasets().values(), key=lambda d: d.name), ids=lambda d: d.name)
def test_every_quality_rule_can_cost_points_given_the_schema(dataset: Dataset) -> None:
    """A rule the schema makes unreachable (likes >= 0 scored only on rows the schema let through) is dead weight."""
    good = GOOD_RAW_ROWS[dataset.name]
    assert _probe(dataset, [good]).score == 100.0, "the good row breaks no rule"

    # GIVEN the good row with every single-cell defect, each validated by the dataset's own schema
    probes: list[dict[str, str | None]] = [
        {**good, column.name: defect} for column in dataset.columns for defect in DEFECTS[column.type]
    ]

    # WHEN the probe file is scored
    report = _probe(dataset, probes)

    # THEN every quality rule cost points on some row
    fired = {check.name for d in report.dimensions for check in d.checks}
    assert {rule.name for rule in dataset.quality_rules} - fired == set(), "rules that can never fire"


def test_report_is_plain_json() -> None:
    report = score_posts(clean_posts(2), [(post(post_id="R", likes="x"), ["likes:type(long)"])])

    document = json.loads(json.dumps(report.to_dict()))

    assert document["dataset"] == "posts"
    assert document["file"] == POSTS_FILE
    assert [d["name"] for d in document["dimensions"]] == list(QUALITY_DIMENSIONS)
    [validity] = [d for d in document["dimensions"] if d["name"] == "validity"]
    assert validity["checks"] == [{"name": "likes:type(long)", "rows_failed": 1, "rows_checked": 3}]


# --- weights --------------------------------------------------------------------------------------


def test_default_weights_cover_every_dimension_and_sum_to_100() -> None:
    assert set(DEFAULT_WEIGHTS) == set(QUALITY_DIMENSIONS)
    assert sum(DEFAULT_WEIGHTS.values()) == 100


def test_resolve_weights_layers_defaults_dataset_and_overrides() -> None:
    dataset = replace(POSTS, quality_weights={"accuracy": 40, "timeliness": 0})

    weights = resolve_weights(dataset, {"accuracy": 30})

    assert weights == {**DEFAULT_WEIGHTS, "accuracy": 30, "timeliness": 0}


@pytest.mark.parametrize(
    ("dataset_weights", "overrides"),
    [
        ({"accuracy": -1}, {}),
        ({}, {"freshness": 10}),
        ({}, dict.fromkeys(QUALITY_DIMENSIONS, 0)),
        ({}, {"accuracy": float("nan")}),
        ({"validity": float("inf")}, {}),
    ],
    ids=["negative", "unknown-dimension", "all-zero", "nan", "infinite"],
)
def test_invalid_weights_raise(dataset_weights: dict[str, float], overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="quality weights"):
        resolve_weights(replace(POSTS, quality_weights=dataset_weights), overrides)


# --- file stamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("post_results_20260113_175319.csv", date(2026, 1, 13)),
        ("post_results_20260113.csv", date(2026, 1, 13)),
        ("instagram_results_20251231T235959.xlsx", date(2025, 12, 31)),
        ("post_results_2026011.csv", None),
        ("post_results.csv", None),
        ("post_results_20261332_000000.csv", None),
        ("post_results_20260230_000000.csv", None),
        ("post_results_120260113.csv", None),
    ],
    ids=[
        "date-and-time",
        "date-only",
        "t-separator",
        "seven-digits",
        "no-stamp",
        "invalid-month",
        "invalid-day",
        "longer-digit-run",
    ],
)
def test_file_stamp(name: str, expected: date | None) -> None:
    assert file_stamp(name) == expected
