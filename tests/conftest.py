"""Fixtures shared by every test: an isolated environment and a throwaway local lake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from icegate.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "landing"
EVENTS = Path(__file__).parent / "events"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real AWS account, no ICEGATE_* leaking in from the developer's shell."""
    import os

    for name in list(os.environ):
        if name.startswith(("ICEGATE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "icegate")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def settings(lake: Path) -> Settings:
    """Local-mode settings on a fresh lake root; fast retries so conflict tests stay quick."""
    return Settings(lake_root=str(lake), commit_backoff_seconds=0.001)
