"""The ledger and the report in the cloud path: the executed state machine records every outcome."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from icegate.constants import REFRESH_REPORT, REPORTS_PREFIX
from icegate.lake.ledger import LEDGER_TABLE
from icegate.report import REPORT_NAME
from stages import maintainer
from tests.integration.sfn_support import LAKE, CloudPipeline, FakeLambdaContext, running_pipeline

POSTS_CSV = "post_results_20260113_175319.csv"
MISSING_COLUMNS = "post_results_20260116_120000.csv"
#: The scheduled maintainer, invoked by the report schedule.
REFRESH_CONTEXT = FakeLambdaContext(
    function_name="maintainer", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:maintainer"
)


@pytest.fixture
def cloud_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudPipeline]:
    with running_pipeline(tmp_path, monkeypatch) as pipeline:
        yield pipeline


def ledger(pipeline: CloudPipeline) -> pl.DataFrame:
    frame = pl.from_arrow(pipeline.catalog().load_table(("instagram_db", LEDGER_TABLE)).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("finished_at")


def test_executions_record_loaded_already_loaded_and_dead_lettered(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a good file executed twice (a duplicate S3 event) and a file missing columns
    good = cloud_pipeline.upload(POSTS_CSV)
    first = cloud_pipeline.execute(good)
    cloud_pipeline.dispatcher.invocations.clear()
    second = cloud_pipeline.execute(good)
    bad = cloud_pipeline.execute(cloud_pipeline.upload(MISSING_COLUMNS))
    assert [first["status"], second["status"], bad["status"]] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]

    # THEN the ledger has one row per execution, named after it, with the S3 identity of the source
    rows = ledger(cloud_pipeline)
    assert rows.select("run_id", "outcome").rows() == [
        (first["name"], "loaded"),
        (second["name"], "already_loaded"),
        (bad["name"], "dead_lettered"),
    ]
    loaded = rows.row(0, named=True)
    assert (loaded["source_bucket"], loaded["source_key"]) == (good["bucket"], good["key"])
    assert loaded["source_version"] == good["version_id"]
    assert loaded["source_size"] == good["size"]
    assert loaded["rows_inserted"] == 23
    assert loaded["snapshot_id"] == json.loads(first["output"])["load"]["snapshot_id"]
    assert set(dict(loaded["stage_seconds"])) == {"parse", "validate", "score", "load"}
    # AND the rerun was answered before parsing: no rows read, the first load's snapshot
    again = rows.row(1, named=True)
    assert again["snapshot_id"] == loaded["snapshot_id"]
    assert again["rows_read"] is None
    assert cloud_pipeline.dispatcher.invocations[:4] == ["parse", "validate", "score", "load"]
    dead = rows.row(2, named=True)
    assert dead["error_uri"] == f"s3://{LAKE}/dlq/posts/{bad['name']}/error.json"

    # AND the report sits in s3://<lake>/reports/; the stages rebuild it at most once per
    # ICEGATE_REPORT_MIN_INTERVAL_SECONDS, and the report schedule's run brings it up to date: all three outcomes
    report_key = f"{REPORTS_PREFIX}/{REPORT_NAME}"
    assert cloud_pipeline.keys(report_key) == [report_key]
    maintainer.handler({REFRESH_REPORT: True}, REFRESH_CONTEXT)
    page = cloud_pipeline.s3.get_object(Bucket=LAKE, Key=report_key)["Body"].read().decode()
    for row in rows.iter_rows(named=True):
        assert row["run_id"] in page
    assert '"dead_lettered": 1' in page
