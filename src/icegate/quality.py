"""Quality scoring: six dimensions in 0–1, weighted into a 0–100 score, and the gate decision.

Every dimension describes the whole file: it is measured over all rows read, the rejected ones
included (typed as validation types them), so a file whose rows the schema rejected cannot score
well on the dimensions validity does not cover. A file is scored whole (:func:`score_batch`) or
from a stream of batches in bounded memory (:class:`QualityTally`, which ``score_batch`` wraps). The
report names, for each dimension, the checks that cost points and how many rows they hit, so a
failed gate tells the user what to fix.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import polars as pl

from icegate.datasets import Dataset, QualityContext
from icegate.dimensions import DEFAULT_FLOORS, DEFAULT_WEIGHTS, QUALITY_DIMENSIONS, RULE_DIMENSIONS
from icegate.validate import FAILED_CHECKS, coerce_columns

_FILE_STAMP = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?:[_T-]?\d{6})?(?!\d)")
#: Seed of the hash that fingerprints a key.
_KEY_SEED = 0x1CE6A7E1
#: Short batches' key hashes wait, and are concatenated into one array once they reach this many rows or
#: batches: an array kept per batch costs a header of a few hundred bytes, far more than a one-row batch's 8.
_GATHER_ROWS = 1 << 16
_GATHER_BATCHES = 256


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
    """Score one file held whole in memory: a :class:`QualityTally` of a single batch.

    One implementation for both ways of reading a file, so a file scored in batches and the same
    file scored at once cannot drift apart.
    """
    tally = QualityTally(dataset, file=file, upload_date=upload_date)
    tally.add(valid, rejected)
    return tally.report(weights=weights, floors=floors, threshold=threshold)


class QualityTally:
    """Running aggregates of every dimension; add a file's batches (in any order), then report.

    A batch is a slice of the file: its valid rows (typed) and its rejected rows (as validation
    writes them: original strings, ``failed_checks``, ...), either of which may be empty. The tally
    keeps counters only, plus 8 bytes a row for uniqueness, so a file of any length is scored in
    bounded memory, and the report equals :func:`score_batch` over the whole file however it was cut
    into batches and in whatever order they came (a streamed scorer may send every valid slice
    before the rejected ones).

    That holds because every measure is a sum over rows: null counts (completeness), rejected rows
    and their failed checks (validity), and the quality rules, which must be row-wise — each row's
    outcome depends on that row alone (``tests/unit/test_quality_tally.py`` checks every rule of
    every dataset). A rule comparing rows with the whole file (``likes > likes.mean()``) cannot be
    streamed exactly in one pass: its first row needs the last row's value.

    Uniqueness is rows minus distinct keys over the whole file, whatever batch each copy of a key
    arrived in. The keys themselves are not kept: each row keeps a 64-bit fingerprint of its key, a
    polars row hash of the key parts cast to strings (so a valid row's typed key and a rejected
    row's original strings hash alike, as they compare alike), and distinct keys are counted as
    distinct fingerprints, by sorting them (a hash table of tens of millions of fingerprints would
    cost several times their size). Equal keys always give equal fingerprints, so a duplicate is
    never missed; the one possible error is two different keys sharing a fingerprint, which would
    report one duplicate too many, a few hundred-millionths off the uniqueness score of a file that
    size. Modelling the hash as a uniform 64-bit function, a file with ``d`` distinct keys has such a
    collision with probability at most ``d(d-1)/2 * 2**-64``: under 3e-6 for 10 million keys. The
    loader, which must never drop a row, checks rows sharing a fingerprint on their real keys
    (``lake.stream``); a score can afford the estimate.
    """

    def __init__(self, dataset: Dataset, *, file: str, upload_date: date) -> None:
        self._dataset = dataset
        self._file = file
        self._stamp = file_stamp(file)
        self._upload_date = upload_date
        context = QualityContext(reference_date=self._stamp or upload_date, upload_date=upload_date)
        self._rule_exprs = [rule.expression(context).alias(str(i)) for i, rule in enumerate(dataset.quality_rules)]
        self._rows = 0
        self._rejected = 0
        #: Required column -> rows where it is empty.
        self._missing = {c.name: 0 for c in dataset.columns if c.required or not c.nullable}
        #: Per quality rule, in contract order: rows it applied to (non-null outcome), rows it passed.
        self._rule_checked = [0] * len(self._rule_exprs)
        self._rule_passed = [0] * len(self._rule_exprs)
        #: Schema check -> rejected rows that failed it (bounded by the contract's checks).
        self._schema_failures: Counter[str] = Counter()
        #: Each row's key fingerprint as two hash arrays, 8 bytes a row each: kept, and pending (short batches).
        self._key_hashes = pl.Series(dtype=pl.UInt64)
        self._pending_hashes: list[pl.Series] = []
        self._pending_rows = 0

    @property
    def dataset(self) -> Dataset:
        return self._dataset

    def add(self, valid: pl.DataFrame, rejected: pl.DataFrame) -> None:
        """Count one slice of the file; neither frame is kept."""
        height = valid.height + rejected.height
        if not height:
            return
        self._rows += height
        self._rejected += rejected.height
        for name in self._missing:
            self._missing[name] += valid.get_column(name).null_count() + rejected.get_column(name).null_count()
        # Valid and rejected rows apart: summing is all a row-wise rule needs, and it spares a copy.
        if valid.height:
            self._count_rules(valid)
        if rejected.height:
            failed = rejected.get_column(FAILED_CHECKS).explode().value_counts()
            self._schema_failures.update({str(name): int(n) for name, n in failed.iter_rows()})
            # Typed as validation types them: a value that does not parse is null, so its rules do not apply.
            self._count_rules(coerce_columns(rejected, self._dataset))
        self._hash_keys(valid, rejected)

    def _count_rules(self, rows: pl.DataFrame) -> None:
        """Every rule in one pass over the rows: polars evaluates the expressions side by side."""
        if not self._rule_exprs:
            return
        outcomes = rows.select(self._rule_exprs)
        passed, nulls = outcomes.sum().row(0), outcomes.null_count().row(0)
        for i, (p, n) in enumerate(zip(passed, nulls, strict=True)):
            self._rule_checked[i] += rows.height - n
            self._rule_passed[i] += int(p or 0)

    def _hash_keys(self, valid: pl.DataFrame, rejected: pl.DataFrame) -> None:
        """Each row's key fingerprint; typed and original key parts alike as strings."""
        keys = pl.concat(
            [frame.select(pl.col(k).cast(pl.String) for k in self._dataset.key) for frame in (valid, rejected)],
            how="vertical",
        )
        self._pending_hashes.append(keys.hash_rows(_KEY_SEED))
        self._pending_rows += keys.height
        if self._pending_rows >= _GATHER_ROWS or len(self._pending_hashes) >= _GATHER_BATCHES:
            self._gather_hashes()

    def _gather_hashes(self) -> None:
        """Keep the pending hash arrays as one chunk each.

        ``append`` adds the chunk without copying what is kept (``extend`` grows one buffer, and its
        spare capacity made the tally hold twice its 8 bytes a row); a batch's own arrays, when it
        is long enough to be kept alone, are not copied either.
        """
        if not self._pending_hashes:
            return
        self._key_hashes.append(pl.concat(self._pending_hashes, rechunk=True))
        self._pending_hashes.clear()
        self._pending_rows = 0

    def report(self, *, weights: Mapping[str, float], floors: Mapping[str, float], threshold: float) -> QualityReport:
        """The file's report from what was added so far; more batches may be added after."""
        rows = self._rows
        rule_checks: dict[str, list[CheckResult]] = {name: [] for name in RULE_DIMENSIONS}
        per_rule = zip(self._dataset.quality_rules, self._rule_checked, self._rule_passed, strict=True)
        for rule, checked, passed in per_rule:
            rule_checks[rule.dimension].append(CheckResult(rule.name, checked - passed, checked))
        if self._stamp is not None:
            stamped_late = int(self._stamp > self._upload_date)
            rule_checks["timeliness"].append(CheckResult("file_stamp_not_after_upload", stamped_late, 1))
        # Worst first, ties by name: the order cannot depend on how the file was cut into batches.
        schema_failures = sorted(self._schema_failures.items(), key=lambda item: (-item[1], item[0]))
        validity_checks = [CheckResult(name, n, rows) for name, n in schema_failures]
        uniqueness = CheckResult("key_unique_in_file", rows - self._distinct_keys(), rows)

        measured: dict[str, tuple[float, list[CheckResult]]] = {
            "completeness": _share_passing([CheckResult(f"{n}_present", m, rows) for n, m in self._missing.items()]),
            "validity": (1.0 - self._rejected / rows if rows else 1.0, validity_checks),
            "uniqueness": _share_passing([uniqueness]),
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
                f"{d.name} -{d.points_lost}"
                for d in sorted(dimensions, key=lambda d: -d.points_lost)[:2]
                if d.points_lost
            )
            reasons.append(f"score {total} < threshold {threshold} (most points lost on {worst})")
        reasons += [f"{d.name} {d.score} < floor {d.floor}" for d in dimensions if d.score < d.floor]
        return QualityReport(
            dataset=self._dataset.name,
            file=self._file,
            rows=rows,
            score=total,
            threshold=threshold,
            passed=not reasons,
            reason="; ".join(reasons),
            dimensions=dimensions,
        )

    def _distinct_keys(self) -> int:
        """Distinct fingerprints, counted on them sorted: no hash table, one sorted array."""
        self._gather_hashes()
        self._key_hashes = self._key_hashes.rechunk()
        self._key_hashes.sort(in_place=True)  # their order means nothing; a later batch is appended
        return self._key_hashes.n_unique()


def _share_passing(checks: list[CheckResult]) -> tuple[float, list[CheckResult]]:
    """Score of rule-like dimensions: passing evaluations over applicable ones (1.0 if none apply)."""
    checked = sum(c.rows_checked for c in checks)
    failed = sum(c.rows_failed for c in checks)
    return (1.0 - failed / checked if checked else 1.0), checks
