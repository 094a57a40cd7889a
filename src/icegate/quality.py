"""Quality scoring: six dimensions in 0–1, weighted into a 0–100 score, and the gate decision.

Pure functions over polars frames. Every dimension describes the whole file: it is measured over all
rows read, the rejected ones included (typed as validation types them), so a file whose rows the
schema rejected cannot score well on the dimensions validity does not cover. The report names, for
each dimension, the checks that cost points and how many rows they hit, so a failed gate tells the
user what to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import polars as pl

from icegate.datasets import Dataset, QualityContext
from icegate.dimensions import DEFAULT_FLOORS, DEFAULT_WEIGHTS, QUALITY_DIMENSIONS, RULE_DIMENSIONS
from icegate.validate import coerce_columns

_FILE_STAMP = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?:[_T-]?\d{6})?(?!\d)")


@dataclass(frozen=True)
class CheckResult:
    name: str
    rows_failed: int
    rows_checked: int


@dataclass(frozen=True)
class DimensionScore:
    name: str
    score: float
    weight: float
    #: Points of the 0–100 score this dimension lost.
    points_lost: float
    #: Under this score the dimension fails the gate on its own.
    floor: float = 0.0
    #: Only the checks that cost points, worst first.
    checks: list[CheckResult] = field(default_factory=list)


@dataclass(frozen=True)
class QualityReport:
    dataset: str
    file: str
    rows: int
    score: float
    threshold: float
    passed: bool
    reason: str
    dimensions: list[DimensionScore]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dimension_scores(self) -> dict[str, float]:
        return {d.name: d.score for d in self.dimensions}


def file_stamp(name: str) -> date | None:
    """The date a scraper stamped into the file name (``post_results_20260113_175319.csv``)."""
    match = _FILE_STAMP.search(name)
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def resolve_weights(dataset: Dataset, overrides: Mapping[str, float]) -> dict[str, float]:
    """Defaults, then the dataset's own weights, then operator overrides (environment)."""
    weights = {**DEFAULT_WEIGHTS, **dataset.quality_weights, **overrides}
    unknown = set(weights) - set(QUALITY_DIMENSIONS)
    if unknown or any(not math.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"quality weights must be non-negative, name {QUALITY_DIMENSIONS} and sum > 0: {weights}")
    return weights


def resolve_floors(dataset: Dataset, overrides: Mapping[str, float]) -> dict[str, float]:
    """Defaults, then the dataset's own floors, then operator overrides (environment); 0 disables one."""
    floors = {**DEFAULT_FLOORS, **dataset.quality_floors, **overrides}
    # NaN fails the range test too: a NaN floor would never fail anything.
    wrong = {name: f for name, f in floors.items() if name not in QUALITY_DIMENSIONS or not 0 <= f <= 1}
    if wrong:
        raise ValueError(f"quality floors must name {QUALITY_DIMENSIONS} and lie in 0–1: {wrong}")
    return floors


def score_batch(
    valid: pl.DataFrame,
    rejected: pl.DataFrame,
    dataset: Dataset,
    *,
    file: str,
    upload_date: date,
    weights: Mapping[str, float],
    floors: Mapping[str, float],
    threshold: float,
) -> QualityReport:
    """Score one file from its validated rows (typed) and rejected rows (original strings)."""
    rows = valid.height + rejected.height
    stamp = file_stamp(file)
    context = QualityContext(reference_date=stamp or upload_date, upload_date=upload_date)

    rule_checks: dict[str, list[CheckResult]] = {name: [] for name in RULE_DIMENSIONS}
    # Every rule in one pass over every row read: polars evaluates the expressions side by side.
    outcomes = _rows_read(valid, rejected, dataset).select(
        rule.expression(context).alias(str(i)) for i, rule in enumerate(dataset.quality_rules)
    )
    for i, rule in enumerate(dataset.quality_rules):
        outcome = outcomes.get_column(str(i))
        checked = outcome.len() - outcome.null_count()
        rule_checks[rule.dimension].append(CheckResult(rule.name, checked - int(outcome.sum() or 0), checked))
    if stamp is not None:
        rule_checks["timeliness"].append(CheckResult("file_stamp_not_after_upload", int(stamp > upload_date), 1))

    measured: dict[str, tuple[float, list[CheckResult]]] = {
        "completeness": _share_passing(_completeness(valid, rejected, dataset)),
        "validity": (1.0 - rejected.height / rows if rows else 1.0, _validity_checks(rejected, rows)),
        "uniqueness": _share_passing([_uniqueness(valid, rejected, dataset, rows)]),
        **{name: _share_passing(checks) for name, checks in rule_checks.items()},
    }
    total_weight = sum(weights.values())
    dimensions = []
    for name in QUALITY_DIMENSIONS:
        score, checks = measured[name]
        lost = weights[name] * (1.0 - score) * 100 / total_weight
        costly = sorted((c for c in checks if c.rows_failed), key=lambda c: -c.rows_failed)
        dimensions.append(
            DimensionScore(
                name=name,
                score=round(score, 4),
                weight=weights[name],
                points_lost=round(lost, 2),
                floor=floors.get(name, 0.0),
                checks=costly,
            )
        )

    total = round(sum(d.score * d.weight for d in dimensions) * 100 / total_weight, 2)
    reasons = []
    if total < threshold:
        worst = ", ".join(
            f"{d.name} -{d.points_lost}" for d in sorted(dimensions, key=lambda d: -d.points_lost)[:2] if d.points_lost
        )
        reasons.append(f"score {total} < threshold {threshold} (most points lost on {worst})")
    reasons += [f"{d.name} {d.score} < floor {d.floor}" for d in dimensions if d.score < d.floor]
    return QualityReport(
        dataset=dataset.name,
        file=file,
        rows=rows,
        score=total,
        threshold=threshold,
        passed=not reasons,
        reason="; ".join(reasons),
        dimensions=dimensions,
    )


def _rows_read(valid: pl.DataFrame, rejected: pl.DataFrame, dataset: Dataset) -> pl.DataFrame:
    """Every row of the file, typed; a rejected row's value that does not parse is null (rule not applicable)."""
    return pl.concat([valid.select(dataset.column_names), coerce_columns(rejected, dataset)], how="vertical")


def _completeness(valid: pl.DataFrame, rejected: pl.DataFrame, dataset: Dataset) -> list[CheckResult]:
    rows = valid.height + rejected.height
    required = [c.name for c in dataset.columns if c.required or not c.nullable]
    nulls = [valid.get_column(n).null_count() + rejected.get_column(n).null_count() for n in required]
    return [CheckResult(f"{n}_present", missing, rows) for n, missing in zip(required, nulls, strict=True)]


def _share_passing(checks: list[CheckResult]) -> tuple[float, list[CheckResult]]:
    """Score of rule-like dimensions: passing evaluations over applicable ones (1.0 if none apply)."""
    checked = sum(c.rows_checked for c in checks)
    failed = sum(c.rows_failed for c in checks)
    return (1.0 - failed / checked if checked else 1.0), checks


def _validity_checks(rejected: pl.DataFrame, rows: int) -> list[CheckResult]:
    """The schema checks that rejected rows, with how many of the file's rows each hit."""
    if not rejected.height:
        return []
    counts = rejected.get_column("failed_checks").explode().value_counts(sort=True)
    return [CheckResult(str(name), int(n), rows) for name, n in counts.iter_rows()]


def _uniqueness(valid: pl.DataFrame, rejected: pl.DataFrame, dataset: Dataset, rows: int) -> CheckResult:
    keys = pl.concat(
        [frame.select(pl.col(k).cast(pl.String) for k in dataset.key) for frame in (valid, rejected)],
        how="vertical",
    )
    return CheckResult("key_unique_in_file", rows - _distinct_rows(keys), rows)


def _distinct_rows(frame: pl.DataFrame) -> int:
    """``frame.n_unique()``, from one hash per row when the hashes already say every row differs.

    Hashing is several times cheaper than comparing the values; a collision can only make hashes
    look like duplicates, so distinct hashes are exact, and anything else is counted exactly.
    """
    if frame.height == 0:
        return 0
    if frame.hash_rows().n_unique() == frame.height:
        return frame.height
    return frame.n_unique()
