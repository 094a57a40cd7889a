"""The Lambda handlers: a Step Functions state in, the next state out (S3 is moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from icegate.settings import QUALITY_DIMENSIONS, load_settings
from tests.conftest import EVENTS, SAMPLES

LANDING, LAKE = "landing", "lake"


@dataclass
class FakeLambdaContext:
    function_name: str = "icegate-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:icegate-test"
    aws_request_id: str = "5f0c0000-0000-0000-0000-000000000000"


def event(name: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    data.update(overrides)
    return data


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A versioned landing bucket and a lake bucket in moto; the Iceberg catalog on local SQLite."""
    monkeypatch.setenv("ICEGATE_LAKE_ROOT", f"s3://{LAKE}")
    monkeypatch.setenv("ICEGATE_WAREHOUSE", (tmp_path / "warehouse").as_uri())
    monkeypatch.setenv("ICEGATE_CATALOG_URI", f"sqlite:///{tmp_path / 'catalog.db'}")
    load_settings.cache_clear()
    from stages._powertools import storage

    storage.cache_clear()
    with mock_aws():
        s3 = boto3.client("s3")
        for bucket in (LANDING, LAKE):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=LANDING, VersioningConfiguration={"Status": "Enabled"})
        yield s3
    storage.cache_clear()


def upload(s3: Any, sample: str, key: str) -> str:
    return str(s3.put_object(Bucket=LANDING, Key=key, Body=(SAMPLES / sample).read_bytes())["VersionId"])


def test_the_four_stage_handlers_chain_from_source_to_snapshot(aws: Any) -> None:
    from stages import loader, parser, quality_scorer, validator

    # GIVEN a posts file in the landing bucket and the Prepare state's output
    version = upload(aws, "post_results_20260113_175319.csv", "scrapes/post_results_20260113_175319.csv")
    job = event("job_posts.json")
    job["source"]["version_id"] = version

    # WHEN each handler receives the previous one's output
    parsed = parser.handler(job, FakeLambdaContext())
    validated = validator.handler(parsed, FakeLambdaContext())
    scored = quality_scorer.handler(validated, FakeLambdaContext())
    loaded = loader.handler(scored, FakeLambdaContext())

    # THEN every state carries the previous ones plus its own result, as small JSON
    assert parsed["dataset"] == "posts"
    assert parsed["parsed_uri"] == "s3://lake/processing/exec-0f1e2d3c/parsed.parquet"
    assert (validated["rows_valid"], validated["rows_rejected"]) == (24, 4)
    assert validated["rejected_uri"] == "s3://lake/dlq/posts/exec-0f1e2d3c/rejected.parquet"
    assert scored["quality"]["passed"] is True
    assert set(scored["quality"]["dimensions"]) == set(QUALITY_DIMENSIONS)
    assert loaded["load"]["inserted"] == 23
    assert loaded["load"]["snapshot_id"] > 0
    assert loaded["source"]["version_id"] == version
    assert len(json.dumps(loaded)) < 8_000, "payloads stay far below Step Functions' 256 KB"
    assert aws.head_object(Bucket=LAKE, Key="processing/exec-0f1e2d3c/quality.json")["ContentLength"] > 0


def test_the_parser_reads_the_version_named_by_the_event(aws: Any) -> None:
    from stages import parser

    # GIVEN a key uploaded twice: first a good posts file, then one missing columns
    key = "scrapes/post_results_20260113_175319.csv"
    first = upload(aws, "post_results_20260113_175319.csv", key)
    upload(aws, "post_results_20260116_120000.csv", key)

    # WHEN the parser handles the event of the first upload
    job = event("job_posts.json")
    job["source"]["version_id"] = first
    parsed = parser.handler(job, FakeLambdaContext())

    # THEN it parsed that version, not the latest
    assert parsed["rows"] == 28


def test_a_terminal_error_propagates_under_its_class_name(aws: Any) -> None:
    from icegate.errors import SchemaMismatch
    from stages import parser

    upload(aws, "post_results_20260116_120000.csv", "scrapes/post_results_20260113_175319.csv")
    with pytest.raises(SchemaMismatch, match="post_url"):
        parser.handler(event("job_posts.json"), FakeLambdaContext())


def test_the_dead_letter_handler_files_the_source_and_its_reason(aws: Any) -> None:
    from stages import dead_letter

    # GIVEN a failed execution state, as the Catch and the failed_stage Pass leave it
    version = upload(aws, "post_results_20260116_120000.csv", "scrapes/post_results_20260116_120000.csv")
    failed = event("parse_failed.json")
    failed["source"]["version_id"] = version

    # WHEN the dead-letter handler runs
    entry = dead_letter.handler(failed, FakeLambdaContext())

    # THEN the source sits in dlq/<dataset>/<run_id>/ beside an error.json with the reason
    assert entry["dlq_uri"] == "s3://lake/dlq/posts/exec-9a8b7c6d/post_results_20260116_120000.csv"
    copied = aws.get_object(Bucket=LAKE, Key="dlq/posts/exec-9a8b7c6d/post_results_20260116_120000.csv")
    assert copied["Body"].read() == (SAMPLES / "post_results_20260116_120000.csv").read_bytes()
    error = json.loads(aws.get_object(Bucket=LAKE, Key="dlq/posts/exec-9a8b7c6d/error.json")["Body"].read())
    assert error["stage"] == "parse"
    assert error["error_type"] == "SchemaMismatch"
    assert error["message"].startswith("scrapes/post_results_20260116_120000.csv, header")
    assert error["source"]["version_id"] == version
    assert error["run_id"] == "exec-9a8b7c6d"
