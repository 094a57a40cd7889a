"""The ledger under concurrent loaders: separate ``icegate run`` processes on one lake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from icegate.lake import build_catalog
from icegate.settings import Settings
from tests.conftest import REPO
from tests.ledger_support import ledger_rows, posts_csv, write_posts


def test_concurrent_runs_record_each_outcome_once(tmp_path: Path, lake: Path, settings: Settings) -> None:
    # GIVEN four distinct posts files, the first of them delivered twice (a duplicate S3 event)
    files = [write_posts(tmp_path / f"in{n}", f"2026011{n}_100000", posts_csv(30, start=n * 100)) for n in range(4)]
    inputs = [*files, files[0]]
    lake.mkdir(parents=True)
    build_catalog(settings)  # the catalog exists before the race, as after any first run

    # WHEN one `icegate run` process per delivery runs at the same time
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    code = "from icegate.cli import main; main()"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, "run", str(path), "--lake", str(lake)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for path in inputs
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * len(inputs), outputs

    # THEN the table holds each file once, and the ledger one row per delivery: 4 loaded, 1 already loaded
    table = build_catalog(settings).load_table(("instagram_db", "posts")).scan().to_arrow()
    assert table.num_rows == 4 * 30
    rows = ledger_rows(settings)
    assert rows.group_by("outcome").len().sort("outcome").rows() == [("already_loaded", 1), ("loaded", 4)]
    assert rows.select("run_id", "outcome").is_duplicated().sum() == 0
    loaded = rows.filter(pl.col("outcome") == "loaded")
    assert loaded["source_sha256"].n_unique() == 4
    assert loaded["snapshot_id"].n_unique() == 4
    again = rows.filter(pl.col("outcome") == "already_loaded").row(0, named=True)
    first = loaded.filter(pl.col("source_sha256") == again["source_sha256"]).row(0, named=True)
    assert again["snapshot_id"] == first["snapshot_id"]
