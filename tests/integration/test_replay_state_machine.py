"""Replaying a DLQ object in the cloud, as the README documents it, under the executed state machine."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

import icegate.datasets as datasets_module
from icegate.datasets import all_datasets
from icegate.lake.ledger import LEDGER_TABLE
from tests.integration.sfn_support import LAKE, CloudPipeline, running_pipeline

POSTS_CSV = "post_results_20260113_175319.csv"


@pytest.fixture
def cloud_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudPipeline]:
    with running_pipeline(tmp_path, monkeypatch) as pipeline:
        yield pipeline


def set_posts_threshold(monkeypatch: pytest.MonkeyPatch, threshold: float) -> None:
    """The posts contract's threshold, as a deployed fix to its module would set it (the handlers run here)."""
    original = all_datasets()
    changed = dataclasses.replace(original["posts"], quality_threshold=threshold)
    monkeypatch.setattr(datasets_module, "all_datasets", lambda: {**original, "posts": changed})


def ledger(pipeline: CloudPipeline) -> pl.DataFrame:
    frame = pl.from_arrow(pipeline.catalog().load_table(("instagram_db", LEDGER_TABLE)).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("finished_at")


def test_a_dead_lettered_object_replays_by_new_execution_or_by_copying_it_back_to_landing(
    cloud_pipeline: CloudPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a posts file dead-lettered at the gate by a threshold no file passes
    set_posts_threshold(monkeypatch, 101.0)
    upload = cloud_pipeline.upload(POSTS_CSV)
    failed = cloud_pipeline.execute(upload)
    assert failed["status"] == "FAILED"
    (entry,) = cloud_pipeline.dlq_entries()
    assert entry["error_type"] == "QualityGateFailed"

    # WHEN the fix is deployed and the failed execution's input is started again (New execution)
    set_posts_threshold(monkeypatch, 70.0)
    replayed = cloud_pipeline.execute(upload)

    # THEN the same object version loads, and the ledger ties it to the failed run by content
    assert replayed["status"] == "SUCCEEDED"
    assert cloud_pipeline.table("posts").height == 23
    rows = ledger(cloud_pipeline)
    dead, loaded = rows.row(0, named=True), rows.row(1, named=True)
    assert (dead["run_id"], dead["outcome"]) == (failed["name"], "dead_lettered")
    assert (loaded["run_id"], loaded["outcome"]) == (replayed["name"], "loaded")
    assert loaded["source_sha256"] == dead["source_sha256"]

    # WHEN the DLQ copy is also copied back to its landing key (a new upload, a new version, an event)
    dlq_key = entry["dead_letter_uri"].removeprefix(f"s3://{LAKE}/")
    body = cloud_pipeline.s3.get_object(Bucket=LAKE, Key=dlq_key)["Body"].read()
    again = cloud_pipeline.execute(cloud_pipeline.upload(POSTS_CSV, upload["key"], body=body))

    # THEN it is "already loaded": nothing is added, the DLQ entry stays as the record
    assert again["status"] == "SUCCEEDED"
    assert ledger(cloud_pipeline)["outcome"].to_list() == ["dead_lettered", "loaded", "already_loaded"]
    assert cloud_pipeline.table("posts").height == 23
    assert [e["run_id"] for e in cloud_pipeline.dlq_entries()] == [failed["name"]]
