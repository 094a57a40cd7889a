"""``icegate report``: a self-contained HTML file whose charts render in a real headless Chromium."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from icegate import ledger
from icegate.cli import main
from icegate.lake import build_catalog
from icegate.lake.ledger import append_rows
from icegate.report import report_data
from icegate.settings import Settings
from tests.browser import ENABLE_HINT, dump_dom, find_chromium, png_pixels, screenshot
from tests.conftest import SAMPLES

HOSTILE = "</script><script>document.title='pwned'</script>"


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def earlier_days(settings: Settings) -> None:
    """Ledger rows from two earlier days: two posts loads and a gate failure whose message is hostile HTML."""
    rows = [
        {
            "run_id": f"earlier-{day}",
            "outcome": "loaded",
            "dataset": "posts",
            "table_name": "instagram_db.posts",
            "source_key": f"landing/post_results_2026010{day}_080000.csv",
            "rows_read": 100,
            "rows_inserted": 90 + day,
            "quality_score": 80.0 + day,
            "quality_checks": {"accuracy/likes_not_negative": 3},
            **{f"score_{d}": 0.9 for d in ("completeness", "accuracy", "consistency", "timeliness", "uniqueness")},
            "score_validity": 0.8,
            "snapshot_id": 1000 + day,
            "finished_at": datetime(2026, 1, day, 8, tzinfo=UTC),
        }
        for day in (1, 2)
    ]
    rows.append(
        {
            "run_id": "earlier-gate",
            "outcome": "dead_lettered",
            "dataset": "posts",
            "source_key": "landing/post_results_20260102_090000.csv",
            "stage": "gate",
            "error_type": "QualityGateFailed",
            "error_message": HOSTILE,
            "error_uri": "s3://lake/dlq/posts/earlier-gate/error.json",
            "finished_at": datetime(2026, 1, 2, 9, tzinfo=UTC),
        }
    )
    append_rows(build_catalog(settings), settings.namespace, rows)


@pytest.fixture
def report_page(tmp_path: Path, lake: Path, settings: Settings) -> Path:
    """The report of a lake where the samples ran twice, after two earlier days of history."""
    lake.mkdir(parents=True)
    earlier_days(settings)
    icegate("run", str(SAMPLES), "--lake", str(lake))
    icegate("run", str(SAMPLES), "--lake", str(lake))
    out = tmp_path / "report.html"
    result = icegate("report", "--lake", str(lake), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    return out


def svg(dom: str, svg_id: str) -> str:
    match = re.search(rf'<svg id="{svg_id}".*?</svg>', dom, re.S)
    assert match, f"no <svg id={svg_id!r}> in the rendered page"
    return match.group(0)


def test_the_report_needs_nothing_from_the_network(report_page: Path) -> None:
    # GIVEN the written report
    page = report_page.read_text()

    # THEN every script and style is inline: no external script, stylesheet, image or font
    assert "<script src" not in page
    assert "<link" not in page
    assert not re.search(r"""(src|href)=["']https?:""", page)
    assert "@import" not in page
    # AND hostile text from the ledger stays data: it cannot close the script element
    assert HOSTILE not in page


def test_the_report_renders_its_charts_in_headless_chromium(tmp_path: Path, report_page: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(ENABLE_HINT)

    # WHEN Chromium loads the page and runs its script
    dom = dump_dom(chromium, report_page, tmp_path / "profile")

    # THEN the script drew everything, without an error
    assert 'data-rendered="true"' in dom
    assert re.search(r'<p id="error">\s*</p>', dom)
    # AND each dataset's score chart has one point per loaded file with a score (posts: 2 earlier + CSV + XLSX)
    assert svg(dom, "score-posts").count('class="pt"') == 4
    assert svg(dom, "score-restaurants").count('class="pt"') == 1
    # AND its dimension chart one line per dimension
    assert svg(dom, "dims-posts").count('class="dim"') == 6
    # AND one bar per day with loads (Jan 1, Jan 2, today), per dead-letter reason, per top check
    assert svg(dom, "rows-per-day").count('class="bar "') == 3
    reasons = svg(dom, "dlq-reasons")
    assert reasons.count('class="bar dlq"') == 2
    assert "SchemaMismatch" in reasons
    assert "QualityGateFailed" in reasons
    assert 0 < svg(dom, "top-checks").count('class="bar check"') <= 12
    # AND the file table lists every ledger row (3 earlier + 8 from the two runs), newest first
    assert dom.count("<tr data-outcome=") == 11
    # AND each local DLQ entry links to its error.json, which exists
    links = re.findall(r'<a href="(file://[^"]+)" class="dlq-link"', dom)
    assert len(links) == 2
    assert all(Path(link.removeprefix("file://")).is_file() for link in links)
    assert "s3.console.aws.amazon.com/s3/object/lake?prefix=dlq/posts/earlier-gate/error.json" in dom
    # AND the hostile message was shown as text, never run
    assert "<title>icegate quality report</title>" in dom
    assert "pwned" not in dom.split("<body", 1)[0]


def test_a_screenshot_of_the_report_shows_the_charts(tmp_path: Path, report_page: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(ENABLE_HINT)

    # WHEN Chromium takes a screenshot of the page
    shot = screenshot(chromium, report_page, tmp_path / "report.png", tmp_path / "profile")

    # THEN the picture is not blank: many colours, and the charts' own colours cover real areas
    pixels = png_pixels(shot)
    assert len(pixels) > 50
    accent = sum(n for (r, g, b), n in pixels.items() if abs(r - 0x25) < 24 and abs(g - 0x63) < 24 and b > 200)
    dead_letter_red = sum(n for (r, g, b), n in pixels.items() if r > 150 and g < 60 and b < 60)
    assert accent > 500, "the score lines and the rows-per-day bars (#2563eb) are missing"
    assert dead_letter_red > 50, "the dead-letter bars (#b91c1c) are missing"


def test_a_replay_that_fails_again_counts_once_as_icegate_dlq_lists_it(lake: Path, settings: Settings) -> None:
    # GIVEN the samples run (one is dead-lettered, SchemaMismatch), then every DLQ entry replayed: it fails the
    # same way, so its first entry notes the rerun and the ledger has a second dead_lettered row for it
    icegate("run", str(SAMPLES), "--lake", str(lake))
    assert icegate("replay", "--all", "--lake", str(lake)).exit_code == 1
    dlq = json.loads(icegate("dlq", "--lake", str(lake), "--json").stdout)
    entries = [e for e in dlq if e["kind"] == "dead_lettered"]
    rows = ledger.history(build_catalog(settings), settings.namespace)
    assert (len(entries), rows.filter(pl.col("outcome") == "dead_lettered").height) == (1, 2)

    # WHEN the report's data is drawn from the ledger
    data = report_data(rows, title="t")

    # THEN it counts the DLQ entry once, as `icegate dlq` lists it, and its reason once
    assert data["totals"]["dead_lettered"] == len(entries) == 1
    assert data["dead_letter_reasons"] == [{"label": "SchemaMismatch", "value": 1}]
    # AND four files (the samples), of five outcomes; the file table shows every outcome
    assert (data["totals"]["files"], data["totals"]["outcomes"], data["files_shown"]) == (4, 5, 5)
