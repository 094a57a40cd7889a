"""The Lambda handlers: a Step Functions state in, the next state out (S3 is moto)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from icegate.errors import StorageUnavailable
from icegate.payloads import ErrorInfo
from icegate.settings import QUALITY_DIMENSIONS, load_settings
from icegate.storage import Storage
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

    key = "scrapes/post_results_20260113_175319.csv"
    upload(aws, "post_results_20260116_120000.csv", key)
    job = event("job_posts.json")
    # Without a version id the run reads the version with the input's ETag: this upload's.
    job["source"]["etag"] = aws.head_object(Bucket=LANDING, Key=key)["ETag"]
    with pytest.raises(SchemaMismatch, match="post_url"):
        parser.handler(job, FakeLambdaContext())


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


def test_the_parser_falls_back_to_the_raw_key_when_the_decoded_one_does_not_exist(aws: Any) -> None:
    from stages import parser

    # GIVEN a key with a literal '+', started by hand with the key as it is (not URL-encoded)
    key = "scrapes/post_results_a+b_20260113_175319.csv"
    version = upload(aws, "post_results_20260113_175319.csv", key)
    job = event("job_posts.json")
    job["source"].update(key=key, version_id=version)

    # WHEN the parser decodes it ('+' -> ' ') and finds nothing there
    parsed = parser.handler(job, FakeLambdaContext())

    # THEN it reads the raw key instead, and the state carries that key on
    assert parsed["rows"] == 28
    assert parsed["source"]["key"] == key


def _failed_state(aws: Any, run_id: str = "exec-9a8b7c6d", *, deleted: str | None = None) -> dict[str, Any]:
    """A parse failure of the missing-columns sample; its object optionally deleted ("object" or "version")."""
    key = "scrapes/post_results_20260116_120000.csv"
    version = upload(aws, "post_results_20260116_120000.csv", key)
    failed = event("parse_failed.json", run_id=run_id)
    failed["source"]["version_id"] = version
    if deleted == "version":
        aws.delete_object(Bucket=LANDING, Key=key, VersionId=version)
    elif deleted == "object":  # an unversioned event: the latest object is gone (a delete marker)
        failed["source"]["version_id"] = None
        aws.delete_object(Bucket=LANDING, Key=key)
    return failed


def _error_json(aws: Any, run_id: str) -> dict[str, Any]:
    body = aws.get_object(Bucket=LAKE, Key=f"dlq/posts/{run_id}/error.json")["Body"].read()
    result: dict[str, Any] = json.loads(body)
    return result


@pytest.mark.parametrize("deleted", ["object", "version"], ids=["object-deleted", "version-gone"])
def test_the_dead_letter_writes_error_json_even_when_the_source_is_gone(aws: Any, deleted: str) -> None:
    from stages import dead_letter

    # GIVEN a failed state whose source object (or the version it names) no longer exists
    failed = _failed_state(aws, deleted=deleted)

    # WHEN the dead-letter handler runs
    entry = dead_letter.handler(failed, FakeLambdaContext())

    # THEN error.json keeps the original reason and says the copy failed, and why
    error = _error_json(aws, "exec-9a8b7c6d")
    assert (error["stage"], error["error_type"]) == ("parse", "SchemaMismatch")
    assert error["copy"]["status"] == "failed"
    assert error["copy"]["error"].startswith("SourceNotFound: ")
    assert entry["copy_error"] == error["copy"]["error"]
    keys = [o["Key"] for o in aws.list_objects_v2(Bucket=LAKE, Prefix="dlq/")["Contents"]]
    assert keys == ["dlq/posts/exec-9a8b7c6d/error.json"]


class _CopyRefused(Storage):
    """S3 refusing the copy, as it answers when the role may not read the source."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__()
        self.code, self.status = code, status

    def copy(self, source_uri: str, target_uri: str, version_id: str | None = None, *, etag: str | None = None) -> None:
        answer = {
            "Error": {"Code": self.code, "Message": self.code},
            "ResponseMetadata": {"HTTPStatusCode": self.status},
        }

        def refused() -> None:
            raise ClientError(answer, "CopyObject")  # type: ignore[arg-type]

        self._s3_call("COPY", source_uri, refused)


def test_the_dead_letter_writes_error_json_when_the_copy_is_refused(aws: Any) -> None:
    from icegate.pipeline import run_dead_letter

    # GIVEN a failed state, and S3 refusing to copy its source (AccessDenied)
    failed = _failed_state(aws)

    # WHEN it is dead-lettered
    entry = run_dead_letter(
        failed, "parse", ErrorInfo.from_dict(failed["error"]), load_settings(), _CopyRefused("AccessDenied", 403)
    )

    # THEN the reason is filed, and error.json says the copy was refused
    error = _error_json(aws, "exec-9a8b7c6d")
    assert error["error_type"] == "SchemaMismatch"
    assert error["copy"] == {"status": "failed", "error": entry.copy_error}
    assert "AccessDenied" in entry.copy_error


def test_a_throttled_copy_is_retried_with_error_json_already_filed(aws: Any) -> None:
    from icegate.pipeline import run_dead_letter

    # GIVEN a failed state, and S3 throttling the copy
    failed = _failed_state(aws)

    # WHEN it is dead-lettered
    # THEN the step fails with the retried StorageUnavailable, error.json already there saying why
    with pytest.raises(StorageUnavailable):
        run_dead_letter(
            failed, "parse", ErrorInfo.from_dict(failed["error"]), load_settings(), _CopyRefused("SlowDown", 503)
        )
    error = _error_json(aws, "exec-9a8b7c6d")
    assert error["copy"]["status"] == "failed"
    assert "SlowDown" in error["copy"]["error"]


def test_dead_lettering_the_same_failure_again_reuses_the_first_entry(aws: Any) -> None:
    from stages import dead_letter

    # GIVEN a file dead-lettered by one execution
    first = dead_letter.handler(_failed_state(aws, "exec-1"), FakeLambdaContext())

    # WHEN the same content, uploaded again, fails the same way in a rerun
    second = dead_letter.handler(_failed_state(aws, "exec-2"), FakeLambdaContext())

    # THEN it points at the first entry instead of filing a second one, and the first notes the rerun
    assert (second["duplicate_of"], second["error_uri"], second["dlq_uri"]) == (
        "exec-1",
        first["error_uri"],
        first["dlq_uri"],
    )
    folders = {o["Key"].split("/")[2] for o in aws.list_objects_v2(Bucket=LAKE, Prefix="dlq/posts/")["Contents"]}
    assert folders == {"exec-1", "_index"}
    error = _error_json(aws, "exec-1")
    assert (error["rerun_count"], error["reruns"]) == (1, ["exec-2"])


def test_a_different_reason_for_the_same_content_is_filed_anew(aws: Any) -> None:
    from stages import dead_letter

    # GIVEN a file dead-lettered once at parse
    dead_letter.handler(_failed_state(aws, "exec-1"), FakeLambdaContext())

    # WHEN the same content fails differently in a later run (another stage, another error)
    other = _failed_state(aws, "exec-2")
    other.update(failed_stage="load", error={"Error": "CatalogUnavailable", "Cause": "catalog down"})
    entry = dead_letter.handler(other, FakeLambdaContext())

    # THEN it gets its own entry
    assert entry["duplicate_of"] == ""
    assert _error_json(aws, "exec-2")["error_type"] == "CatalogUnavailable"


@pytest.mark.parametrize("module", ["validator", "quality_scorer"])
def test_a_stage_that_opens_no_catalog_does_not_import_the_catalog_libraries(module: str) -> None:
    # GIVEN a fresh interpreter (a cold Lambda)  WHEN it imports a handler that never opens the catalog
    # (the scorer only for a dataset with a trend gate)
    code = f"import sys, stages.{module}; print(sorted({{'pyiceberg', 'sqlalchemy'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # THEN pyiceberg and sqlalchemy (≈0.4–0.7 s of a cold start) did not come with it
    assert out.strip() == "[]"


@pytest.mark.parametrize("module", ["parser", "loader", "dead_letter"])
def test_a_stage_that_opens_the_catalog_on_every_event_imports_it_at_init(module: str) -> None:
    code = f"import sys, stages.{module}; print(sorted({{'pyiceberg', 'sqlalchemy'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pyiceberg', 'sqlalchemy']"
