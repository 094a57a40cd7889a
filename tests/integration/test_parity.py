"""Parity: the local runner and the executed state machine reach the same tables and the same DLQ.

The same bundled samples, in the same order, go through ``LocalRunner`` (a local lake) and through the
synthesised state machine in moto (``sfn_support``). Lineage differs by design — a local path versus
``s3://landing/<key>``, a local run id versus the execution name — so ``source_file`` is compared by file
name and the other lineage columns are dropped; everything else must be equal.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from icegate.payloads import SourceObject
from icegate.pipeline import FileOutcome, LocalRunner
from icegate.settings import Settings
from tests.conftest import SAMPLES
from tests.integration.sfn_support import (
    LAKE,
    CloudPipeline,
    running_pipeline,
    sql_catalog,
    table_frame,
)

TABLES = ("posts", "restaurants")
SAMPLE_FILES = sorted(p.name for p in SAMPLES.iterdir() if p.is_file() and not p.name.startswith("."))


@pytest.fixture
def cloud_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudPipeline]:
    with running_pipeline(tmp_path, monkeypatch) as pipeline:
        yield pipeline


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows without run-specific lineage, ``source_file`` reduced to the file name, in a stable order."""
    frame = frame.drop("ingested_at", "run_id", "source_version").with_columns(
        pl.col("source_file").map_elements(lambda uri: PurePosixPath(uri).name, return_dtype=pl.String)
    )
    return frame.sort(frame.columns)


def dlq_summary(entry: dict[str, Any]) -> tuple[str, str, str, str]:
    return (entry["dataset"], PurePosixPath(entry["source"]["key"]).name, entry["stage"], entry["error_type"])


def rejected_by_dataset(files: list[tuple[str, pl.DataFrame]]) -> dict[str, pl.DataFrame]:
    """Every rejected row of each dataset, ``source_file`` reduced to the file name (a local path or an
    s3:// URI), in a stable order (``failed_checks`` is a list: not sortable)."""
    datasets = sorted({dataset for dataset, _ in files})
    merged = {
        d: pl.concat([frame for dataset, frame in files if dataset == d]).with_columns(
            pl.col("source_file").map_elements(lambda uri: PurePosixPath(uri).name, return_dtype=pl.String)
        )
        for d in datasets
    }
    return {d: frame.sort(pl.all().exclude("failed_checks"), nulls_last=True) for d, frame in merged.items()}


def run_locally(settings: Settings) -> dict[str, FileOutcome]:
    runner = LocalRunner(settings)
    return {name: runner.run(SourceObject(bucket="", key=str(SAMPLES / name))) for name in SAMPLE_FILES}


def run_in_the_cloud(pipeline: CloudPipeline) -> dict[str, dict[str, Any]]:
    """File name -> ``describe_execution`` of its execution."""
    return {name: pipeline.execute(pipeline.upload(name)) for name in SAMPLE_FILES}


def test_the_samples_reach_the_same_tables_and_dlq_locally_and_in_the_state_machine(
    cloud_pipeline: CloudPipeline, settings: Settings, lake: Path
) -> None:
    # GIVEN the bundled samples and their expected outcomes (at least one loads, one is dead-lettered)
    expected = json.loads((SAMPLES.parent / "expected.json").read_text())
    assert sorted(expected) == SAMPLE_FILES
    assert {"loaded", "dlq"} <= set(expected.values())

    # WHEN they run through the local runner and, in the same order, through the executed state machine
    local = run_locally(settings)
    cloud = run_in_the_cloud(cloud_pipeline)

    # THEN each file ends the same way in both: loaded (SUCCEEDED) or dead-lettered (FAILED)
    as_expected = {"SUCCEEDED": "loaded", "FAILED": "dlq", "loaded": "loaded", "dead_lettered": "dlq"}
    assert {name: as_expected[file.outcome] for name, file in local.items()} == expected
    assert {name: as_expected[execution["status"]] for name, execution in cloud.items()} == expected

    # AND the loaded files scored the same
    local_scores = {
        name: file.state.to_dict()["quality"]["score"] for name, file in local.items() if file.outcome == "loaded"
    }
    cloud_scores = {
        name: json.loads(execution["output"])["quality"]["score"]
        for name, execution in cloud.items()
        if execution["status"] == "SUCCEEDED"
    }
    assert local_scores == cloud_scores

    # AND both tables hold the same rows
    local_catalog = sql_catalog(settings.resolved_catalog_uri(), settings.resolved_warehouse())
    heights = {}
    for table in TABLES:
        local_rows = comparable(table_frame(local_catalog, table))
        cloud_rows = comparable(cloud_pipeline.table(table))
        assert_frame_equal(local_rows, cloud_rows, check_exact=True)
        heights[table] = cloud_rows.height
    # (the counts tests/integration/test_local_pipeline.py asserts: 23 posts from the CSV + 5 new from the XLSX)
    assert heights["posts"] == 23 + 5
    assert heights["restaurants"] > 0

    # AND the DLQ holds the same entries: dataset, file, stage and error type per file
    local_entries = [json.loads(p.read_text()) for p in (lake / "dlq").rglob("error.json")]
    cloud_entries = cloud_pipeline.dlq_entries()
    assert sorted(map(dlq_summary, local_entries)) == sorted(map(dlq_summary, cloud_entries))
    assert local_entries, "the samples include a file that must be dead-lettered"

    # AND the same rows were rejected, for the same checks, in each dataset
    local_rejected = [(p.parents[1].name, pl.read_parquet(p)) for p in (lake / "dlq").rglob("rejected.parquet")]
    cloud_rejected = [
        (
            key.split("/")[1],
            pl.read_parquet(io.BytesIO(cloud_pipeline.s3.get_object(Bucket=LAKE, Key=key)["Body"].read())),
        )
        for key in cloud_pipeline.keys("dlq/")
        if key.endswith("/rejected.parquet")
    ]
    assert local_rejected, "the samples include rows that must be rejected"
    assert rejected_by_dataset(local_rejected).keys() == rejected_by_dataset(cloud_rejected).keys()
    for dataset, rejected in rejected_by_dataset(local_rejected).items():
        assert_frame_equal(rejected, rejected_by_dataset(cloud_rejected)[dataset], check_exact=True)
