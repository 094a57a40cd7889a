"""Catalog fixtures: the embedded SQLite catalog, and a real PostgreSQL-backed SQL catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from icegate.settings import Settings
from tests.postgres import ENABLE_HINT, PostgresServer, find_bin_dir, running_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (each test gets its own database)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(ENABLE_HINT)
    with running_server(bin_dir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_settings(request: pytest.FixtureRequest, lake: Path) -> Settings:
    """Local-mode settings whose catalog is SQLite under the lake, or a fresh PostgreSQL database."""
    lake.mkdir(parents=True, exist_ok=True)
    settings = Settings(lake_root=str(lake), commit_backoff_seconds=0.01)
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        settings = settings.with_overrides(catalog_uri=server.uri(server.create_database()))
    return settings
