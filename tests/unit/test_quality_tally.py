"""Scoring a file from a stream of batches: ``QualityTally`` reports what ``score_batch`` reports on the whole.

Files are built as the pipeline builds them: raw string rows through the dataset's own validation
(``validate_table``), then cut into slices of the file, each batch holding the typed valid rows and
the rejected rows (original strings, ``row_number``, ``failed_checks``) of one slice. ``score_batch``
over the concatenated batches is the reference.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from benchmarks.generate import posts_frame
from icegate.datasets import Dataset, QualityContext, all_datasets, get_dataset
from icegate.dimensions import DEFAULT_WEIGHTS
from icegate.quality import QualityReport, QualityTally, resolve_floors, score_batch
from icegate.validate import ROW_NUMBER, coerce_columns, validate_table
from tests.unit.test_quality import DEFECTS, GOOD_RAW_ROWS, UPLOAD, post, rejected_frame, restaurant, valid_frame

POSTS = get_dataset("posts")
RESTAURANTS = get_dataset("restaurants")
STAMPED = {"posts": "post_results_20260113_175319.csv", "restaurants": "instagram_results_20260113_175319.csv"}
DATASETS = sorted(all_datasets().values(), key=lambda d: d.name)

RawRow = dict[str, str | None]
#: Rows a single-cell defect cannot make: a rule passing only on another cell's value (ghost profiles).
PASSING_ONLY_IN_COMBINATION: dict[str, list[RawRow]] = {
    "posts": [],
    "restaurants": [{"status": "not_found", "followers": "0"}],
}


@dataclass(frozen=True)
class Batch:
    valid: pl.DataFrame
    rejected: pl.DataFrame


# --- files and their batches ----------------------------------------------------------------------


def _keyed(dataset: Dataset, row: RawRow, i: int) -> RawRow:
    """The row under a key of its own (posts keep their URL following their post_id)."""
    if dataset.name == "posts":
        return {**row, "post_id": f"P{i}", "post_url": f"https://www.instagram.com/p/P{i}/"}
    return {**row, "restaurant_name": f"Trattoria {i}"}


def defect_file(dataset: Dataset) -> list[RawRow]:
    """Every single-cell defect scrapers write, one row each, then keys repeated far apart.

    The repeats: a clean row again at the end; a rejected row's key again as a valid row; two rows
    with an empty key part (posts: creator, rejected; restaurants: phone, valid and nullable).
    """
    good = GOOD_RAW_ROWS[dataset.name]
    rows = [_keyed(dataset, good | r, i) for i, r in enumerate([{}, *PASSING_ONLY_IN_COMBINATION[dataset.name]])]
    for column in dataset.columns:
        rows += [{**_keyed(dataset, good, len(rows)), column.name: d} for d in DEFECTS[column.type]]
    negative = next(r for r in rows if any(r[c.name] == "-5" for c in dataset.columns if c.type == "long"))
    negative_fixed = {**negative, **{c.name: "7" for c in dataset.columns if c.type == "long"}}
    no_key_part = {**_keyed(dataset, good, 9999), ("creator" if dataset.name == "posts" else "phone"): None}
    return [no_key_part, *rows, negative_fixed, rows[0], no_key_part]


def scraper_posts_file() -> list[RawRow]:
    """Posts as the benchmark scraper writes them ("231.4K" likes), with a few rows broken and repeated."""
    frame = posts_frame(300, seed=11)
    frame = frame.rename({c: c.lower().replace(" ", "_") for c in frame.columns}).select(pl.all().cast(pl.String))
    rows: list[RawRow] = frame.to_dicts()
    for i in range(0, 300, 37):
        rows[i] = {**rows[i], "likes": "lots"}  # rejected
    for i in range(5, 300, 53):
        rows[i] = {**rows[i], "post_url": "https://example.com/x", "status": "??"}  # costs rule points
    for i in range(8, 300, 61):
        rows[i] = {**rows[i], "comments": None, "posted_date": "2024-02-01"}  # incomplete, stale
    rows += [rows[3], rows[37], rows[150]]  # a valid, a rejected and a valid key again, far from the first copy
    return rows


FILES = {
    "posts-defects": (POSTS, defect_file(POSTS)),
    "restaurants-defects": (RESTAURANTS, defect_file(RESTAURANTS)),
    "posts-scraper": (POSTS, scraper_posts_file()),
}


def validated(dataset: Dataset, rows: list[RawRow]) -> Batch:
    """The rows through the dataset's own validation: typed valid rows, rejected rows as strings."""
    table = pa.table({name: pa.array([r[name] for r in rows], pa.string()) for name in dataset.column_names})
    result = validate_table(table, dataset, file="file.csv")
    valid, rejected = pl.from_arrow(result.valid), pl.from_arrow(result.rejected)
    assert isinstance(valid, pl.DataFrame)
    assert isinstance(rejected, pl.DataFrame)
    return Batch(valid, rejected)


def sliced(dataset: Dataset, rows: list[RawRow], cuts: list[int]) -> list[Batch]:
    """The validated file cut before each row index in ``cuts`` (a repeated cut gives an empty batch).

    Validation judges each row alone, so this is what validating slice by slice (as the streamed
    validator does) gives, without one validation per slice.
    """
    whole = validated(dataset, rows)
    rejected_at = set(whole.rejected.get_column(ROW_NUMBER).to_list())
    valid_at = pl.Series(ROW_NUMBER, [n for n in range(1, len(rows) + 1) if n not in rejected_at])
    valid = whole.valid.with_columns(valid_at)
    bounds = [0, *sorted(cuts), len(rows)]
    return [
        Batch(
            valid.filter(pl.col(ROW_NUMBER).is_between(start + 1, end)).drop(ROW_NUMBER),
            whole.rejected.filter(pl.col(ROW_NUMBER).is_between(start + 1, end)),
        )
        for start, end in itertools.pairwise(bounds)
    ]


def concatenated(batches: list[Batch]) -> Batch:
    return Batch(pl.concat([b.valid for b in batches]), pl.concat([b.rejected for b in batches]))


#: How a file can be cut and sent: gets the rows, returns the batches in the order they are added.
Split = Callable[[Dataset, list[RawRow]], list[Batch]]


def _one_batch(d: Dataset, rows: list[RawRow]) -> list[Batch]:
    return sliced(d, rows, [])


def _row_by_row(d: Dataset, rows: list[RawRow]) -> list[Batch]:
    # every batch holds one row: only-valid and only-rejected batches, each repeated key in another batch
    return sliced(d, rows, list(range(1, len(rows))))


def _empty_batches(d: Dataset, rows: list[RawRow]) -> list[Batch]:
    n = len(rows)
    return sliced(d, rows, [0, 0, n // 3, n // 3, n // 3, n, n])


def _uneven(d: Dataset, rows: list[RawRow]) -> list[Batch]:
    return sliced(d, rows, [1, 2, 13, 14, len(rows) - 1])


def _random_cuts(seed: int) -> Split:
    def cut(d: Dataset, rows: list[RawRow]) -> list[Batch]:
        chance = random.Random(seed)
        return sliced(d, rows, [chance.randint(0, len(rows)) for _ in range(chance.randint(2, 12))])

    return cut


def _valid_first_then_rejected(d: Dataset, rows: list[RawRow]) -> list[Batch]:
    """As ``streamed.score`` sends them: every valid slice, then every rejected slice (not file order)."""
    batches = sliced(d, rows, [7, 19, 20, 33])
    none_valid, none_rejected = batches[0].valid.clear(), batches[0].rejected.clear()
    return [Batch(b.valid, none_rejected) for b in batches] + [Batch(none_valid, b.rejected) for b in batches]


def _reversed(d: Dataset, rows: list[RawRow]) -> list[Batch]:
    return sliced(d, rows, [5, 11, 24])[::-1]


SPLITS = [
    pytest.param(_one_batch, id="one-batch"),
    pytest.param(_row_by_row, id="row-by-row"),
    pytest.param(_empty_batches, id="empty-batches-first-middle-last"),
    pytest.param(_uneven, id="uneven-slices"),
    *(pytest.param(_random_cuts(seed), id=f"random-cuts-{seed}") for seed in (1, 2, 3)),
    pytest.param(_valid_first_then_rejected, id="all-valid-slices-then-all-rejected-slices"),
    pytest.param(_reversed, id="slices-in-reverse-order"),
]


def tallied(dataset: Dataset, batches: list[Batch], *, file: str, threshold: float = 99.0) -> QualityReport:
    tally = QualityTally(dataset, file=file, upload_date=UPLOAD)
    for batch in batches:
        tally.add(batch.valid, batch.rejected)
    return tally.report(weights=dict(DEFAULT_WEIGHTS), floors=resolve_floors(dataset, {}), threshold=threshold)


def scored(dataset: Dataset, batch: Batch, *, file: str, threshold: float = 99.0) -> QualityReport:
    return score_batch(
        batch.valid,
        batch.rejected,
        dataset,
        file=file,
        upload_date=UPLOAD,
        weights=dict(DEFAULT_WEIGHTS),
        floors=resolve_floors(dataset, {}),
        threshold=threshold,
    )


def checks(report: QualityReport, dimension: str) -> list[tuple[str, int, int]]:
    [found] = [d for d in report.dimensions if d.name == dimension]
    return [(c.name, c.rows_failed, c.rows_checked) for c in found.checks]


# --- 1. the same report, however the file is cut ---------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("file_name", list(FILES))
def test_tally_over_any_split_reports_what_score_batch_reports_on_the_whole_file(file_name: str, split: Split) -> None:
    # GIVEN a file with defects in every dimension, repeated keys and empty key parts, cut into batches
    dataset, rows = FILES[file_name]
    batches = split(dataset, rows)
    file = STAMPED[dataset.name]
    expected = scored(dataset, concatenated(batches), file=file)
    assert sum(1 for d in expected.dimensions if d.checks) >= 5, "a file that costs points nearly everywhere"
    assert expected.reason, "the reason text is compared too"
    assert checks(expected, "uniqueness"), "and the duplicates"

    # WHEN the batches are added to a tally one by one
    report = tallied(dataset, batches, file=file)

    # THEN every score, check count, check order and the reason text are those of the whole file
    assert report == expected
    assert report.to_dict() == expected.to_dict()


@pytest.mark.parametrize("file_name", list(FILES))
def test_uniqueness_from_fingerprints_equals_counting_the_keys_themselves(file_name: str) -> None:
    # GIVEN a file cut row by row (every repeated key arrives in another batch than its first copy)
    dataset, rows = FILES[file_name]
    batches = _row_by_row(dataset, rows)
    whole = concatenated(batches)
    keys = pl.concat([f.select(pl.col(k).cast(pl.String) for k in dataset.key) for f in (whole.valid, whole.rejected)])

    # WHEN it is tallied
    report = tallied(dataset, batches, file=STAMPED[dataset.name])

    # THEN the duplicates are the rows minus the distinct keys, counted exactly on the values
    assert checks(report, "uniqueness") == [("key_unique_in_file", keys.height - keys.n_unique(), keys.height)]


def test_a_file_with_no_batches_reports_like_score_batch_on_empty_frames() -> None:
    # GIVEN no rows at all WHEN tallied from no batch, or from empty ones
    empty = Batch(valid_frame(POSTS, []), rejected_frame(POSTS, []))

    # THEN the report is score_batch's for empty frames, with no row counted
    assert tallied(POSTS, [], file=STAMPED["posts"]) == scored(POSTS, empty, file=STAMPED["posts"])
    assert tallied(POSTS, [empty, empty], file=STAMPED["posts"]).rows == 0


def test_report_can_be_repeated_and_later_batches_still_count() -> None:
    # GIVEN a tally of one batch, reported twice
    tally = QualityTally(POSTS, file=STAMPED["posts"], upload_date=UPLOAD)
    tally.add(valid_frame(POSTS, [post()]), rejected_frame(POSTS, []))
    gate = {"weights": dict(DEFAULT_WEIGHTS), "floors": {}, "threshold": 70.0}
    first = tally.report(**gate)
    assert tally.report(**gate) == first

    # WHEN the same key arrives in a later batch
    tally.add(valid_frame(POSTS, [post()]), rejected_frame(POSTS, []))

    # THEN the next report counts it
    assert first.rows == 1
    assert checks(tally.report(**gate), "uniqueness") == [("key_unique_in_file", 1, 2)]


# --- 2. uniqueness across batches -----------------------------------------------------------------


def _posts_batch(valid: list[dict[str, Any]] | None = None, rejected: list[dict[str, Any]] | None = None) -> Batch:
    """Posts rows, typed, and rejected rows (strings) failing on their likes."""
    failing = [(r, ["likes:type(long)"]) for r in rejected or []]
    return Batch(valid_frame(POSTS, valid or []), rejected_frame(POSTS, failing))


#: A contract keyed on a typed column too: a valid row's date and a rejected row's text must key alike.
DATED_KEY = replace(POSTS, key=("post_id", "posted_date"))


def _restaurants_batch(*rows: dict[str, Any]) -> Batch:
    return Batch(valid_frame(RESTAURANTS, [restaurant(**r) for r in rows]), rejected_frame(RESTAURANTS, []))


@pytest.mark.parametrize(
    ("dataset", "first", "second", "duplicates"),
    [
        pytest.param(POSTS, _posts_batch([post()]), _posts_batch([post()]), 1, id="valid-then-valid"),
        pytest.param(
            POSTS, _posts_batch([post()]), _posts_batch(rejected=[post(likes="x")]), 1, id="valid-then-rejected"
        ),
        pytest.param(
            POSTS,
            _posts_batch(rejected=[post(likes="x")]),
            _posts_batch(rejected=[post(likes="y")]),
            1,
            id="rejected-then-rejected",
        ),
        pytest.param(
            POSTS,
            _posts_batch(rejected=[post(creator=None)]),
            _posts_batch(rejected=[post(creator=None), post(creator=None)]),
            2,
            id="null-creator-three-times",
        ),
        pytest.param(
            POSTS,
            _posts_batch(rejected=[post(creator=None)]),
            _posts_batch(rejected=[post(creator="null"), post(creator="None"), post(creator="")]),
            0,
            id="null-creator-is-not-the-text-null-or-empty",
        ),
        pytest.param(
            RESTAURANTS, _restaurants_batch({"phone": None}), _restaurants_batch({"phone": None}), 1, id="null-phone"
        ),
        pytest.param(
            RESTAURANTS,
            _restaurants_batch({"restaurant_name": "ab", "city": "c"}),
            _restaurants_batch({"restaurant_name": "a", "city": "bc"}),
            0,
            id="key-parts-do-not-run-together",
        ),
        pytest.param(POSTS, _posts_batch([post()]), _posts_batch([post(creator="bob")]), 0, id="same-id-two-creators"),
        pytest.param(
            DATED_KEY,
            _posts_batch([post()]),
            _posts_batch(rejected=[post(likes="x")]),
            1,
            id="typed-date-key-part-matches-its-rejected-text",
        ),
    ],
)
def test_a_key_seen_in_an_earlier_batch_is_a_duplicate(
    dataset: Dataset, first: Batch, second: Batch, duplicates: int
) -> None:
    # GIVEN two batches WHEN tallied one after the other
    report = tallied(dataset, [first, second], file=STAMPED[dataset.name])

    # THEN a key seen before counts as a duplicate, whether valid or rejected, and null parts compare equal
    rows = first.valid.height + first.rejected.height + second.valid.height + second.rejected.height
    assert checks(report, "uniqueness") == ([("key_unique_in_file", duplicates, rows)] if duplicates else [])
    assert report == scored(dataset, concatenated([first, second]), file=STAMPED[dataset.name])


def test_schema_checks_hitting_as_many_rows_are_listed_by_name_however_the_file_was_cut() -> None:
    # GIVEN two schema checks that reject one row each, arriving in either order
    none_valid = valid_frame(POSTS, [])
    a = Batch(none_valid, rejected_frame(POSTS, [(post(post_id="R1", comments="x"), ["comments:type(long)"])]))
    b = Batch(
        none_valid, rejected_frame(POSTS, [(post(post_id="R2", likes="-1"), ["likes:greater_than_or_equal_to(0)"])])
    )

    # WHEN each order is tallied
    reports = [tallied(POSTS, batches, file=STAMPED["posts"]) for batches in ([a, b], [b, a])]

    # THEN both list the tied checks worst first, then by name
    assert [checks(r, "validity") for r in reports] == [
        [("comments:type(long)", 1, 2), ("likes:greater_than_or_equal_to(0)", 1, 2)]
    ] * 2


# --- 3. memory: counters and 8 bytes a row, never the batches --------------------------------------


def _leaves(value: Any) -> Iterator[Any]:
    """Everything a tally's state holds, through its containers."""
    if isinstance(value, dict):
        for item in value.items():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _state(tally: QualityTally) -> tuple[list[pl.Series], list[Any]]:
    leaves = list(_leaves(vars(tally)))
    return [v for v in leaves if isinstance(v, pl.Series)], [v for v in leaves if not isinstance(v, pl.Series)]


def test_the_tally_holds_counters_and_8_bytes_a_row_never_the_batches() -> None:
    # GIVEN a file in 31 batches, tallied once, and tallied ten times over (310 batches)
    dataset, rows = FILES["posts-scraper"]
    batches = sliced(dataset, rows, list(range(10, len(rows), 10)))
    small, big = (QualityTally(dataset, file=STAMPED["posts"], upload_date=UPLOAD) for _ in range(2))
    for batch in batches:
        small.add(batch.valid, batch.rejected)
    added = 0
    for _ in range(10):
        for batch in batches:
            big.add(batch.valid, batch.rejected)
            added += batch.valid.height + batch.rejected.height

    # WHEN their state is inspected
    series, others = _state(big)

    # THEN nothing of a batch is kept: no frame, no table, no text column
    kept = [type(v).__name__ for v in others if isinstance(v, pl.DataFrame | pl.LazyFrame | pa.Table | pa.Array)]
    assert kept == []
    # AND the only array is the key fingerprints, 8 bytes a row
    assert {s.dtype for s in series} == {pl.UInt64}
    assert sum(s.len() for s in series) == added
    assert sum(s.estimated_size() for s in series) <= 8 * added
    # AND short batches' arrays are gathered, not kept one a batch (each array has a header)
    assert sum(s.n_chunks() for s in series) < 310
    # AND everything else is counters whose number does not grow with the batches (31 batches vs 310)
    assert len(others) == len(_state(small)[1])
    assert all(isinstance(v, int | str | date | Dataset | pl.Expr | None) for v in others), {type(v) for v in others}


# --- the rule audit: every rule is row-wise, so per-batch sums add up ------------------------------


def _typed_rows(dataset: Dataset) -> pl.DataFrame:
    """Every row of the defect file, typed as the scorer reads them (valid typed, rejected coerced)."""
    whole = validated(dataset, defect_file(dataset))
    return pl.concat([whole.valid.select(dataset.column_names), coerce_columns(whole.rejected, dataset)])


def _is_row_wise(expression: pl.Expr, rows: pl.DataFrame) -> bool:
    """One value per row, and each row's value the same when the row is evaluated alone."""
    whole = rows.select(expression.alias("outcome")).get_column("outcome")
    alone = [rows.slice(i, 1).select(expression.alias("outcome")).get_column("outcome") for i in range(rows.height)]
    return (
        whole.len() == rows.height
        and all(a.len() == 1 for a in alone)
        and whole.to_list() == pl.concat(alone).to_list()
    )


CONTEXT = QualityContext(reference_date=date(2026, 1, 13), upload_date=UPLOAD)


@pytest.mark.parametrize(
    ("dataset", "rule_index"),
    [pytest.param(d, i, id=f"{d.name}-{r.name}") for d in DATASETS for i, r in enumerate(d.quality_rules)],
)
def test_every_quality_rule_is_row_wise(dataset: Dataset, rule_index: int) -> None:
    # GIVEN a rule of a real contract, and rows on which it passes, fails and does not apply
    expression = dataset.quality_rules[rule_index].expression(CONTEXT)
    rows = _typed_rows(dataset)
    outcomes = set(rows.select(expression).to_series().to_list())
    assert {True, False} <= outcomes, "the rows must exercise the rule both ways"

    # THEN polars classifies it as row-separable and length-preserving (not an aggregate, window or scan)
    assert expression.meta.is_row_separable()
    assert expression.meta.is_length_preserving()
    # AND each row's outcome is the one it gets alone, so the sums of any batches add up to the file's
    assert _is_row_wise(expression, rows)


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param(pl.col("likes") > pl.col("likes").mean(), id="compared-with-the-file-mean"),
        pytest.param(pl.col("post_id").is_duplicated().not_(), id="unique-within-the-frame"),
        pytest.param(pl.col("likes") >= pl.col("likes").shift(1), id="compared-with-the-previous-row"),
    ],
)
def test_the_audit_catches_a_rule_that_looks_beyond_its_row(expression: pl.Expr) -> None:
    # GIVEN a rule that compares a row with other rows WHEN audited THEN it is refused
    assert not _is_row_wise(expression, _typed_rows(POSTS))
