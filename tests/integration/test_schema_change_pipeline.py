"""``icegate run`` against a table another tool changed: an added column is taken in stride; a renamed
key column dead-letters the file with ``UnsafeSchemaChange`` naming the column, and commits nothing."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from pyiceberg.types import StringType

from icegate.cli import main
from icegate.lake import build_catalog
from icegate.settings import Settings
from tests.conftest import SAMPLES

POSTS_CSV = "post_results_20260113_175319.csv"
POSTS_XLSX = "post_results_20260115_081500.xlsx"


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_column_added_by_another_tool_does_not_stop_the_next_file(lake: Path, settings: Settings) -> None:
    # GIVEN a posts table loaded once, to which another tool (Athena, Spark, pyiceberg) added a column
    assert icegate("run", str(SAMPLES / POSTS_XLSX), "--lake", str(lake)).exit_code == 0
    with build_catalog(settings).load_table(("instagram_db", "posts")).update_schema() as update:
        update.add_column("reviewed_by", StringType())

    # WHEN the next file arrives
    result = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))

    # THEN it is loaded (not dead-lettered), its rows with no value in the new column
    assert result.exit_code == 0, result.output
    assert not list(lake.rglob("error.json"))
    rows = build_catalog(settings).load_table(("instagram_db", "posts")).scan().to_arrow()
    assert rows.column("reviewed_by").null_count == rows.num_rows


def test_a_renamed_key_column_dead_letters_the_file_naming_the_column(lake: Path, settings: Settings) -> None:
    # GIVEN a posts table whose key column creator another tool renamed
    assert icegate("run", str(SAMPLES / POSTS_XLSX), "--lake", str(lake)).exit_code == 0
    table = build_catalog(settings).load_table(("instagram_db", "posts"))
    with table.update_schema() as update:
        update.rename_column("creator", "author")
    snapshots = len(build_catalog(settings).load_table(("instagram_db", "posts")).metadata.snapshots)

    # WHEN the next file arrives
    result = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake))

    # THEN it is dead-lettered at load with a terminal UnsafeSchemaChange naming the file and column
    assert result.exit_code == 1
    [error_json] = (lake / "dlq").rglob("error.json")
    entry = json.loads(error_json.read_text())
    assert (entry["error_type"], entry["stage"]) == ("UnsafeSchemaChange", "load")
    assert "key column 'creator' was renamed to 'author'" in entry["message"]
    assert POSTS_CSV in entry["message"]
    # AND nothing was committed
    assert len(build_catalog(settings).load_table(("instagram_db", "posts")).metadata.snapshots) == snapshots
    assert "Traceback" not in result.output
