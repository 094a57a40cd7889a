"""Publishing the HTML report in the cloud: cheap under a burst, never stale for long.

The stage Lambdas rebuild the page after a file only when it is older than
``report_min_interval_seconds``; the scheduled refresh rebuilds it only when the ledger moved since it was
drawn. Time is given explicitly (``now``), never waited for. Real SQLite catalog and ledger, local storage.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from icegate.lake import build_catalog
from icegate.lake.ledger import append_rows
from icegate.report import ledger_snapshot, publish_quietly, refresh, report_location
from icegate.settings import Settings
from icegate.storage import Storage


def outcome(run_id: str) -> dict[str, object]:
    """One ledger row: a dead-lettered file (the fewest columns a row needs)."""
    return {
        "run_id": run_id,
        "outcome": "dead_lettered",
        "dataset": "posts",
        "source_key": f"landing/post_results_{run_id}.csv",
        "error_type": "SchemaMismatch",
        "finished_at": datetime(2026, 1, 13, 17, 53, tzinfo=UTC),
    }


def written_at(settings: Settings) -> datetime:
    return Storage().stat(report_location(settings)).last_modified


def backdate(settings: Settings, seconds: int) -> datetime:
    """Make the published page look ``seconds`` old; returns its new modification time."""
    path = Path(report_location(settings))
    moment = datetime.now(UTC) - timedelta(seconds=seconds)
    os.utime(path, (moment.timestamp(), moment.timestamp()))
    return written_at(settings)


@pytest.fixture
def lake_settings(lake: Path, settings: Settings) -> Settings:
    lake.mkdir(parents=True)
    return settings


@pytest.fixture
def burst_settings(lake_settings: Settings) -> Settings:
    settings = lake_settings
    append_rows(build_catalog(settings), settings.namespace, [outcome("first")])
    return settings.with_overrides(report_min_interval_seconds=60)


def test_a_file_within_the_interval_does_not_rebuild_the_report(burst_settings: Settings) -> None:
    # GIVEN a report published just now, and another file's outcome in the ledger
    settings = burst_settings
    assert publish_quietly(settings, Storage()) == report_location(settings)
    page = Path(report_location(settings)).read_text()
    append_rows(build_catalog(settings), settings.namespace, [outcome("second")])
    # WHEN the next file's stage publishes 30 s after the page was written
    published = publish_quietly(settings, Storage(), now=written_at(settings) + timedelta(seconds=30))
    # THEN the ledger is not read again: the page stays as it was
    assert published is None
    assert Path(report_location(settings)).read_text() == page
    assert "post_results_second.csv" not in page


def test_a_file_after_the_interval_rebuilds_the_report_with_every_outcome(burst_settings: Settings) -> None:
    # GIVEN a report published over a minute ago, and outcomes recorded since
    settings = burst_settings
    publish_quietly(settings, Storage())
    written = backdate(settings, 61)
    append_rows(build_catalog(settings), settings.namespace, [outcome("second")])
    # WHEN the next file's stage publishes
    published = publish_quietly(settings, Storage(), now=written + timedelta(seconds=61))
    # THEN the page is rebuilt from the whole ledger, the outcomes it had skipped included
    assert published == report_location(settings)
    page = Path(report_location(settings)).read_text()
    assert "post_results_first.csv" in page
    assert "post_results_second.csv" in page


@pytest.mark.parametrize("interval", [pytest.param(0, id="interval-0-rebuilds-every-time")])
def test_interval_zero_rebuilds_after_every_file(burst_settings: Settings, interval: int) -> None:
    # GIVEN the interval switched off and a page written this instant
    settings = burst_settings.with_overrides(report_min_interval_seconds=interval)
    publish_quietly(settings, Storage())
    append_rows(build_catalog(settings), settings.namespace, [outcome("second")])
    # WHEN the next file's stage publishes in the same second
    published = publish_quietly(settings, Storage(), now=written_at(settings))
    # THEN it rebuilds anyway
    assert published == report_location(settings)
    assert "post_results_second.csv" in Path(report_location(settings)).read_text()


def test_the_scheduled_refresh_brings_in_what_the_burst_skipped_then_rests(burst_settings: Settings) -> None:
    # GIVEN the end of a burst: the last files' publications were skipped within the interval
    settings = burst_settings
    catalog = build_catalog(settings)
    publish_quietly(settings, Storage())
    append_rows(catalog, settings.namespace, [outcome("last")])
    assert publish_quietly(settings, Storage(), now=written_at(settings)) is None
    # WHEN the schedule refreshes the report
    refreshed = refresh(catalog, settings, Storage())
    # THEN the page now shows every outcome and names the ledger snapshot it was drawn from
    assert refreshed == report_location(settings)
    page = Path(report_location(settings)).read_text()
    assert "post_results_last.csv" in page
    assert f'<meta name="icegate-ledger-snapshot" content="{ledger_snapshot(catalog, settings.namespace)}">' in page
    # AND the next refresh, with nothing new in the ledger, leaves the page alone
    assert refresh(catalog, settings, Storage()) is None
    assert Path(report_location(settings)).read_text() == page


def test_the_scheduled_refresh_publishes_a_missing_report(lake_settings: Settings) -> None:
    # GIVEN a lake with no ledger and no report yet
    settings = lake_settings
    catalog = build_catalog(settings)
    # WHEN the schedule refreshes
    # THEN it publishes an (empty) report once, and rests after that
    assert refresh(catalog, settings, Storage()) == report_location(settings)
    assert '<meta name="icegate-ledger-snapshot" content="">' in Path(report_location(settings)).read_text()
    assert refresh(catalog, settings, Storage()) is None
