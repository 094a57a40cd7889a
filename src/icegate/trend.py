"""The trend gate: fail a file that is much worse than the dataset's recent loaded files.

A fixed threshold catches a broken file; it misses a scraper that slowly degrades or a file that
is fine on every rule but holds a tenth of the usual rows (a login wall, a truncated page). The
trend gate compares a file with the rolling median of the dataset's last K loaded files, read from
the ledger. It is off unless a dataset contract sets ``trend_gate``. Pure functions; the ledger
read happens in the pipeline.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrendGate:
    """Per-dataset settings of the trend gate (``Dataset.trend_gate``)."""

    #: Fail a file whose score is more than this many points below the baseline median score.
    max_score_drop: float = 10.0
    #: Fail a file with fewer rows read than this share of the baseline median rows (0 disables).
    min_rows_ratio: float = 0.2
    #: The baseline: this many most recently loaded files of the dataset.
    window: int = 10
    #: Below this many loaded files there is no baseline yet, and the gate passes every file.
    min_history: int = 3

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_history <= self.window:
            raise ValueError(f"trend gate needs 1 <= min_history <= window, got {self.min_history}, {self.window}")
        if self.max_score_drop < 0 or not 0 <= self.min_rows_ratio <= 1:
            raise ValueError("trend gate needs max_score_drop >= 0 and min_rows_ratio in 0–1")


@dataclass(frozen=True)
class TrendBaseline:
    files: int
    median_score: float | None
    median_rows: float | None


def baseline(scores: Sequence[float | None], rows: Sequence[int | None]) -> TrendBaseline:
    """Medians of the baseline files' scores and rows read (files missing a value are left out)."""
    known_scores = [s for s in scores if s is not None]
    known_rows = [r for r in rows if r is not None]
    return TrendBaseline(
        files=len(scores),
        median_score=statistics.median(known_scores) if known_scores else None,
        median_rows=statistics.median(known_rows) if known_rows else None,
    )


def trend_failures(gate: TrendGate, base: TrendBaseline, *, dataset: str, score: float, rows: int) -> list[str]:
    """Why this file fails the trend gate (empty when it passes); each reason names the baseline."""
    if base.files < gate.min_history:
        return []
    of_files = f"the median of the last {base.files} loaded {dataset} files"
    failures = []
    if base.median_score is not None and base.median_score - score > gate.max_score_drop:
        failures.append(
            f"score {score:.1f} is {base.median_score - score:.1f} points below {of_files} "
            f"({base.median_score:.1f}; the trend gate allows {gate.max_score_drop:g})"
        )
    if base.median_rows and gate.min_rows_ratio and rows < gate.min_rows_ratio * base.median_rows:
        failures.append(
            f"{rows} rows read is under {gate.min_rows_ratio:.0%} of {of_files} ({base.median_rows:g} rows)"
        )
    return failures
