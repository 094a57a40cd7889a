"""The PostgreSQL-backed SQL catalog (``ICEGATE_CATALOG_URI=postgresql+psycopg://...``), on a real server.

The server is a throwaway cluster the fixture starts from the machine's PostgreSQL binaries; the
tests are skipped, saying how to enable them, where those are not installed.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from pyiceberg.catalog.sql import SqlCatalog

from icegate.cli import main
from icegate.lake import build_catalog
from icegate.settings import Settings
from tests.conftest import SAMPLES
from tests.postgres import PostgresServer


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def postgres_env(postgres_server: PostgresServer, lake: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment of a loader pointed at a fresh PostgreSQL catalog database; returns the database."""
    database = postgres_server.create_database()
    monkeypatch.setenv("ICEGATE_CATALOG_URI", postgres_server.uri(database))
    monkeypatch.setenv("ICEGATE_LAKE_ROOT", str(lake))
    return database


def test_the_catalog_uri_setting_gives_a_postgresql_sql_catalog(postgres_env: str) -> None:
    catalog = build_catalog(Settings.from_env())
    assert isinstance(catalog, SqlCatalog)
    assert catalog.engine.dialect.name == "postgresql"


def test_icegate_run_loads_into_tables_registered_in_postgresql(
    postgres_env: str, postgres_server: PostgresServer, lake: Path
) -> None:
    # GIVEN the bundled samples and a loader whose catalog is PostgreSQL
    # WHEN they are ingested
    result = icegate("run", str(SAMPLES), "--expect", str(SAMPLES.parent / "expected.json"))

    # THEN every file ended as expected, and the tables are rows of PostgreSQL's iceberg_tables
    assert result.exit_code == 0, result.output
    with psycopg.connect(
        host=postgres_server.host, port=postgres_server.port, user=postgres_server.user, dbname=postgres_env
    ) as connection:
        registered = connection.execute("SELECT table_namespace, table_name FROM iceberg_tables").fetchall()
    assert sorted(registered) == [
        ("instagram_db", "icegate_loads"),  # the ledger
        ("instagram_db", "posts"),
        ("instagram_db", "restaurants"),
    ]
    assert not (lake / "catalog.db").exists()

    # AND a rerun finds the source markers through the PostgreSQL catalog
    rerun = icegate("run", str(SAMPLES), "--expect", str(SAMPLES.parent / "expected.json"))
    assert rerun.exit_code == 0, rerun.output
    assert rerun.output.count("already loaded") >= 3
