"""The trend gate's decision: a file against the median of the dataset's last loaded files."""

from __future__ import annotations

import pytest

from icegate.trend import TrendGate, baseline, trend_failures

GATE = TrendGate(max_score_drop=10, min_rows_ratio=0.2, window=5, min_history=3)


@pytest.mark.parametrize(
    ("scores", "rows", "score", "file_rows", "expected"),
    [
        pytest.param([95, 96, 97], [1000, 1000, 1000], 90.0, 1000, [], id="a small dip passes"),
        pytest.param([95, 96, 97], [1000, 1000, 1000], 85.9, 1000, ["score"], id="more than 10 points under fails"),
        pytest.param([95, 96, 97], [1000, 1000, 1000], 86.0, 1000, [], id="exactly the allowed drop passes"),
        pytest.param([95, 96, 97], [1000, 900, 1100], 96.0, 150, ["rows"], id="a row collapse fails"),
        pytest.param([95, 96, 97], [1000, 900, 1100], 96.0, 200, [], id="at the ratio passes"),
        pytest.param([95, 96, 97], [1000, 1000, 1000], 50.0, 10, ["score", "rows"], id="both fail together"),
        pytest.param([95, 96], [1000, 1000], 10.0, 1, [], id="too little history: no baseline yet"),
        pytest.param([40, 96, 97, 98, 99], [1, 1000, 1000, 1000, 1000], 90.0, 900, [], id="an outlier moves no median"),
    ],
)
def test_a_file_is_judged_against_the_median_of_the_recent_loaded_files(
    scores: list[float], rows: list[int], score: float, file_rows: int, expected: list[str]
) -> None:
    # GIVEN the scores and rows of the dataset's recent loaded files
    base = baseline(scores, rows)

    # WHEN a new file is judged
    failures = trend_failures(GATE, base, dataset="posts", score=score, rows=file_rows)

    # THEN it fails for exactly the expected reasons
    kinds = ["score" if f.startswith("score") else "rows" for f in failures]
    assert kinds == expected


def test_the_reason_names_the_baseline() -> None:
    # GIVEN a baseline of 4 posts files with a median score of 96 and 1000 rows
    base = baseline([95, 96, 96, 97], [1000, 1000, 1000, 1000])

    # WHEN a file scores 80 with 100 rows
    failures = trend_failures(GATE, base, dataset="posts", score=80.0, rows=100)

    # THEN each reason says which files, which median, and the allowance
    assert failures == [
        "score 80.0 is 16.0 points below the median of the last 4 loaded posts files (96.0; the trend gate allows 10)",
        "100 rows read is under 20% of the median of the last 4 loaded posts files (1000 rows)",
    ]


def test_files_without_a_score_are_left_out_of_the_median() -> None:
    # GIVEN a ledger row repaired from a snapshot marker (no score, no rows read)
    base = baseline([None, 90.0, 92.0, 94.0], [None, 10, 10, 10])

    # THEN the medians are of the files that have the values, and the file count is every file
    assert (base.files, base.median_score, base.median_rows) == (4, 92.0, 10)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"window": 0}, id="empty window"),
        pytest.param({"window": 3, "min_history": 4}, id="history beyond the window"),
        pytest.param({"max_score_drop": -1}, id="negative drop"),
        pytest.param({"min_rows_ratio": 1.5}, id="ratio over 1"),
    ],
)
def test_a_contract_with_an_impossible_trend_gate_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="trend gate"):
        TrendGate(**settings)  # type: ignore[arg-type]
