"""The ledger as the memory of expired loads: expiry records markers there, not in table properties;
markers older versions kept as table properties are migrated once; a recreated table starts afresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result
from pyiceberg.table.update.snapshot import ExpireSnapshots

from icegate.cli import main
from icegate.errors import StorageUnavailable
from icegate.lake import build_catalog, find_loaded
from icegate.lake.markers import LEDGER_PREFIX
from icegate.payloads import SourceObject
from icegate.pipeline import LocalRunner
from icegate.settings import Settings
from tests.ledger_support import ledger_rows, posts_csv, write_posts


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run(settings: Settings, path: Path) -> str:
    return LocalRunner(settings).run(SourceObject(bucket="", key=str(path))).outcome


def posts_table(settings: Settings) -> Any:
    return build_catalog(settings).load_table(("instagram_db", "posts"))


def expire_all_but_newest(lake: Path) -> None:
    result = icegate("maintain", "posts", "--lake", str(lake), "--expire-older-than", "0m", "--retain-last", "1")
    assert result.exit_code == 0, result.output


def test_expired_loads_are_remembered_by_the_ledger_not_by_table_properties(
    tmp_path: Path, lake: Path, settings: Settings
) -> None:
    # GIVEN two files loaded, each in its own snapshot
    first = write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))
    second = write_posts(tmp_path / "in", "20260111_100000", posts_csv(10, start=100))
    assert [run(settings, first), run(settings, second)] == ["loaded", "loaded"]

    # WHEN every snapshot but the newest expires
    expire_all_but_newest(lake)

    # THEN the table keeps no per-file property, and the first file's load is found through the ledger
    table = posts_table(settings)
    assert len(table.metadata.snapshots) == 1
    assert [k for k in table.properties if k.startswith(LEDGER_PREFIX)] == []
    assert find_loaded(table, ledger_rows(settings)["source_sha256"][0]) is not None
    # AND rerunning both adds nothing
    rows = table.scan().to_arrow().num_rows
    assert [run(settings, first), run(settings, second)] == ["already_loaded", "already_loaded"]
    assert posts_table(settings).scan().to_arrow().num_rows == rows


def test_markers_kept_as_table_properties_by_older_versions_move_to_the_ledger_once(
    tmp_path: Path, lake: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a lake as an older version left it: a load with no ledger row, whose snapshot expired
    # with its marker copied into a table property
    with monkeypatch.context() as patch:
        patch.setattr("icegate.ledger.append_rows", lambda *a, **k: 0)
        path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))
        assert run(settings, path) == "loaded"
        assert run(settings, write_posts(tmp_path / "in", "20260111_100000", posts_csv(5, start=50))) == "loaded"
    table = posts_table(settings)
    oldest = min(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    sha = oldest.summary.additional_properties["icegate.source-sha256"]
    pending = table.transaction()
    ExpireSnapshots(pending).by_ids([oldest.snapshot_id]).commit()
    pending.set_properties({LEDGER_PREFIX + sha: str(oldest.snapshot_id)})
    pending.commit_transaction()
    assert run(settings, path) == "already_loaded"  # the legacy property still counts

    # WHEN `icegate maintain` runs (no expiry due)
    assert icegate("maintain", "posts", "--lake", str(lake)).exit_code == 0

    # THEN the property is gone, the ledger holds the marker, and the file still counts as loaded
    assert [k for k in posts_table(settings).properties if k.startswith(LEDGER_PREFIX)] == []
    migrated = ledger_rows(settings).filter(pl.col("run_id") == f"migrated-marker-{sha}")
    assert migrated.select("outcome", "snapshot_id", "recorded_by").rows() == [
        ("loaded", oldest.snapshot_id, "maintain")
    ]
    assert run(settings, path) == "already_loaded"
    # AND a second maintain migrates nothing more
    assert icegate("maintain", "posts", "--lake", str(lake)).exit_code == 0
    assert ledger_rows(settings).filter(pl.col("run_id").str.starts_with("migrated-")).height == 1


def test_a_dropped_and_recreated_table_loads_the_file_again(tmp_path: Path, lake: Path, settings: Settings) -> None:
    # GIVEN a loaded file whose snapshot expired (so only the ledger remembers it)
    path = write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))
    assert run(settings, path) == "loaded"
    assert run(settings, write_posts(tmp_path / "in", "20260111_100000", posts_csv(5, start=50))) == "loaded"
    expire_all_but_newest(lake)

    # WHEN the table is dropped (its data is gone) and the file arrives again
    build_catalog(settings).drop_table(("instagram_db", "posts"))
    outcome = run(settings, path)

    # THEN it loads into the new table: the ledger's rows were about another table (UUID)
    assert outcome == "loaded"
    assert posts_table(settings).scan().to_arrow().num_rows == 10


def test_an_unreadable_ledger_is_a_transient_error_never_a_second_load(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a table whose older snapshots expired, and a ledger that cannot be read
    assert run(settings, write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))) == "loaded"
    assert run(settings, write_posts(tmp_path / "in", "20260111_100000", posts_csv(5, start=50))) == "loaded"
    expire_all_but_newest(settings.lake_root)

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("ledger unreachable")

    monkeypatch.setattr("icegate.lake.ledger.scan", unreadable)

    # WHEN the loader asks whether content not in the table's history was loaded
    # THEN it is told to retry, rather than "no"
    with pytest.raises(StorageUnavailable, match="could not read the ledger"):
        find_loaded(posts_table(settings), "0" * 64)


def test_a_table_whose_history_is_complete_answers_from_its_markers_alone(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a loaded table none of whose snapshots expired, and a ledger that cannot be read
    assert run(settings, write_posts(tmp_path / "in", "20260110_100000", posts_csv(10))) == "loaded"

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("ledger unreachable")

    monkeypatch.setattr("icegate.lake.ledger.scan", unreadable)

    # WHEN the loader asks whether content not in the history was loaded
    # THEN the history answers "no" without the ledger: no snapshot, hence no marker, was ever expired
    assert find_loaded(posts_table(settings), "0" * 64) is None
