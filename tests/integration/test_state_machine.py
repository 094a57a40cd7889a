"""The state machine, executed: the synthesised definition run by moto's Step Functions interpreter.

Every Lambda task is dispatched in-process to the real stage handler (``sfn_support``), against moto S3
and a real Iceberg ``SqlCatalog``. What is proven here is the definition's behaviour — the order of the
stages, the Choice, the Retry and Catch policies, the payload hand-offs, DeadLetter -> Fail with the
original error — not only its shape (that is ``tests/infra/test_infra_state_machine.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from icegate.constants import HANDLERS, TRANSIENT_RETRIES
from icegate.errors import CommitConflict
from icegate.lake import catalog as lake_catalog
from icegate.settings import load_settings
from tests.conftest import EVENTS, SAMPLES
from tests.garbage import GARBAGE_POSTS_NAME, garbage_posts_csv
from tests.integration.sfn_support import (
    LAKE,
    LANDING,
    CloudPipeline,
    running_pipeline,
    synthesised_definition,
)

POSTS_CSV = "post_results_20260113_175319.csv"
POSTS_XLSX = "post_results_20260115_081500.xlsx"
MISSING_COLUMNS = "post_results_20260116_120000.csv"
#: What tests/integration/test_local_pipeline.py expects of POSTS_CSV: 28 rows - 4 rejected - 1 duplicate key.
CSV_VALID_KEYS = 23
HAPPY_PATH = ["parse", "validate", "score", "load"]


@pytest.fixture
def cloud_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudPipeline]:
    with running_pipeline(tmp_path, monkeypatch) as pipeline:
        yield pipeline


def output(execution: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(execution["output"])
    return result


def failed_lambdas(pipeline: CloudPipeline, execution: dict[str, Any]) -> list[str]:
    return [
        event["lambdaFunctionFailedEventDetails"]["error"]
        for event in pipeline.history(execution["executionArn"])
        if event["type"] == "LambdaFunctionFailed"
    ]


def test_every_lambda_task_of_the_synthesised_definition_has_a_stage_handler() -> None:
    # GIVEN the definition of the real stack
    definition = synthesised_definition()

    # WHEN its Lambda tasks are listed
    resources = {
        name: state["Resource"].rsplit(":", 1)[-1]
        for name, state in definition.asl["States"].items()
        if state["Type"] == "Task"
    }

    # THEN each one names one of the five stage functions, so every invocation reaches a real handler
    assert {definition.stage_of_function[function] for function in resources.values()} == set(HANDLERS)
    assert set(resources) == {"Parse", "Validate", "Score", "Load", "DeadLetter"}


def test_a_good_posts_file_loads_and_the_execution_succeeds(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a posts file in the landing bucket
    source = cloud_pipeline.upload(POSTS_CSV)

    # WHEN the execution the EventBridge rule would start runs
    execution = cloud_pipeline.execute(source)

    # THEN it succeeds after the four stages, nothing dead-lettered
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert cloud_pipeline.dispatcher.invocations == HAPPY_PATH
    assert cloud_pipeline.dlq_entries() == []

    # AND the output is the last stage's payload: the run is named after the execution
    result = output(execution)
    assert result["run_id"] == execution["name"]
    # (its key as resolved by the parser, marked raw so no later stage decodes it again)
    assert result["source"] == {**source, "raw_key": True}
    assert (result["rows"], result["rows_valid"], result["rows_rejected"]) == (28, 24, 4)
    assert result["quality"]["passed"] is True
    assert result["load"]["inserted"] == CSV_VALID_KEYS
    assert result["load"]["duplicates_in_file"] == 1
    assert result["load"]["already_loaded"] is False

    # AND the table holds the file's distinct valid posts, with the cloud lineage
    posts = cloud_pipeline.table("posts")
    assert posts.height == CSV_VALID_KEYS
    assert posts.select("post_id", "creator").is_duplicated().sum() == 0
    assert posts.filter(pl.col("post_id") == "C1a2B3c4D5e")["likes"].to_list() == [12600]
    assert set(posts["source_file"]) == {f"s3://{source['bucket']}/{source['key']}"}
    assert set(posts["source_version"]) == {source["version_id"]}
    assert set(posts["run_id"]) == {execution["name"]}
    assert cloud_pipeline.snapshot_count("posts") == 1

    # AND the rejected rows sit with the run in dlq/, the scratch files in processing/<execution name>/
    assert cloud_pipeline.keys(f"dlq/posts/{execution['name']}/") == [f"dlq/posts/{execution['name']}/rejected.parquet"]
    assert {key.rsplit("/", 1)[-1] for key in cloud_pipeline.keys(f"processing/{execution['name']}/")} == {
        "parsed.parquet",
        "valid.parquet",
        "quality.json",
    }


def test_a_file_missing_a_column_fails_and_is_dead_lettered_with_the_original_error(
    cloud_pipeline: CloudPipeline,
) -> None:
    # GIVEN a posts file whose header lacks required columns
    source = cloud_pipeline.upload(MISSING_COLUMNS)

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN the execution fails with the parser's error, as Lambda reported it (Cause = the error document)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "SchemaMismatch"
    cause = json.loads(execution["cause"])
    assert cause["errorType"] == "SchemaMismatch"
    assert source["key"] in cause["errorMessage"]
    assert "post_url" in cause["errorMessage"]
    assert cloud_pipeline.dispatcher.invocations == ["parse", "dead_letter"]

    # AND the source sits in dlq/posts/<execution name>/ beside an error.json that says why
    folder = f"dlq/posts/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [folder + "error.json", folder + MISSING_COLUMNS]
    copied = cloud_pipeline.s3.get_object(Bucket=LAKE, Key=folder + MISSING_COLUMNS)["Body"].read()
    assert copied == (SAMPLES / MISSING_COLUMNS).read_bytes()
    error = cloud_pipeline.read_json(folder + "error.json")
    assert (error["stage"], error["error_type"], error["dataset"]) == ("parse", "SchemaMismatch", "posts")
    assert MISSING_COLUMNS in error["message"]
    assert error["message"] == cause["errorMessage"]
    assert error["run_id"] == execution["name"]
    assert error["source"]["version_id"] == source["version_id"]

    # AND nothing was loaded
    assert cloud_pipeline.snapshot_count("posts") == 0


def test_a_file_under_the_quality_threshold_fails_at_the_gate_with_its_report(
    cloud_pipeline: CloudPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a posts table already holding a clean file, and a threshold flawed files cannot meet
    loaded = cloud_pipeline.execute(cloud_pipeline.upload(POSTS_XLSX))
    assert loaded["status"] == "SUCCEEDED", loaded.get("cause")
    rows, snapshots = cloud_pipeline.table("posts").height, cloud_pipeline.snapshot_count("posts")
    monkeypatch.setenv("ICEGATE_QUALITY_THRESHOLD_POSTS", "99.5")
    load_settings.cache_clear()
    cloud_pipeline.dispatcher.invocations.clear()

    # WHEN a file with flawed rows arrives
    execution = cloud_pipeline.execute(cloud_pipeline.upload(POSTS_CSV))

    # THEN the Gate sends it to DeadLetter without loading, and the execution fails with QualityGateFailed
    assert execution["status"] == "FAILED"
    assert cloud_pipeline.dispatcher.invocations == ["parse", "validate", "score", "dead_letter"]
    assert execution["error"] == "QualityGateFailed"
    assert execution["cause"].startswith("s3://"), "the message names the file, as every DLQ message does"
    assert f"/{POSTS_CSV}: quality gate failed: score " in execution["cause"]
    assert "< threshold 99.5" in execution["cause"]
    assert execution["cause"].count("threshold") == 1, "the cause says it once"

    # AND the DLQ entry carries the full quality report
    (error,) = cloud_pipeline.dlq_entries()
    assert (error["stage"], error["error_type"], error["run_id"]) == ("gate", "QualityGateFailed", execution["name"])
    assert error["message"] == execution["cause"]
    report = error["quality"]
    assert report["passed"] is False
    assert report["threshold"] == 99.5
    assert f"score {report['score']} < threshold" in execution["cause"]
    assert {d["name"] for d in report["dimensions"]} == {
        "completeness",
        "accuracy",
        "consistency",
        "timeliness",
        "uniqueness",
        "validity",
    }
    assert cloud_pipeline.keys(f"dlq/posts/{execution['name']}/{POSTS_CSV}")

    # AND no snapshot was added
    assert cloud_pipeline.snapshot_count("posts") == snapshots
    assert cloud_pipeline.table("posts").height == rows


def test_a_file_whose_every_row_is_rejected_fails_as_no_valid_rows_without_loading(
    cloud_pipeline: CloudPipeline,
) -> None:
    """Issue 8: 20 rows, all rejected, used to pass the gate at 90/70 and 'load' 0 rows."""
    # GIVEN a posts file whose every row has negative likes, an ftp:// URL, a 2099 date and status '??'
    source = cloud_pipeline.upload(GARBAGE_POSTS_NAME, body=garbage_posts_csv())

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN Score fails it with the terminal NoValidRows: dead-lettered, never loaded
    assert execution["status"] == "FAILED"
    assert execution["error"] == "NoValidRows"
    assert cloud_pipeline.dispatcher.invocations == ["parse", "validate", "score", "dead_letter"]
    cause = json.loads(execution["cause"])
    assert source["key"] in cause["errorMessage"]
    assert "rejected all 20 rows" in cause["errorMessage"]

    # AND the DLQ entry says so, beside the source and the rejected rows
    folder = f"dlq/posts/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [
        folder + "error.json",
        folder + GARBAGE_POSTS_NAME,
        folder + "rejected.parquet",
    ]
    (error,) = cloud_pipeline.dlq_entries()
    assert (error["stage"], error["error_type"]) == ("score", "NoValidRows")
    assert error["message"] == cause["errorMessage"]
    assert f"s3://{LAKE}/{folder}rejected.parquet" in error["message"]
    assert cloud_pipeline.snapshot_count("posts") == 0


def test_a_transient_loader_failure_is_retried_and_the_execution_succeeds(cloud_pipeline: CloudPipeline) -> None:
    """The first Load invocation raises CommitConflict (injected at the Lambda dispatch, before the handler).

    The definition's Retry for transient errors (IntervalSeconds 5, JitterStrategy FULL) makes moto's
    interpreter sleep ``uniform(0, 5)`` s for real; the fixture replaces that sleep with a recorder, so
    the wait is asserted instead of spent.
    """
    # GIVEN a posts file, and a loader whose first attempt loses a commit race
    source = cloud_pipeline.upload(POSTS_CSV)
    cloud_pipeline.dispatcher.faults["load"] = [
        CommitConflict("8 commits to instagram_db.posts lost to concurrent writers", file="s3://landing/x")
    ]

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN Load was retried once after one backoff wait, and the execution succeeded
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert cloud_pipeline.dispatcher.invocations == [*HAPPY_PATH, "load"]
    assert failed_lambdas(cloud_pipeline, execution) == ["CommitConflict"]
    (wait,) = cloud_pipeline.retry_waits
    assert 0 <= wait <= 5

    # AND the rows went in exactly once
    assert output(execution)["load"]["inserted"] == CSV_VALID_KEYS
    assert cloud_pipeline.table("posts").height == CSV_VALID_KEYS
    assert cloud_pipeline.snapshot_count("posts") == 1
    assert cloud_pipeline.dlq_entries() == []


def test_a_transient_error_that_persists_is_dead_lettered_after_the_retries(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a loader that keeps losing commit races
    source = cloud_pipeline.upload(POSTS_CSV)
    cloud_pipeline.dispatcher.faults["load"] = [CommitConflict(f"conflict {n}") for n in range(10)]

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN Load ran 1 + 5 retries (MaxAttempts), then the file was dead-lettered at the load stage
    assert execution["status"] == "FAILED"
    assert execution["error"] == "CommitConflict"
    assert cloud_pipeline.dispatcher.invocations == [*HAPPY_PATH, *["load"] * TRANSIENT_RETRIES, "dead_letter"]
    assert len(cloud_pipeline.retry_waits) == TRANSIENT_RETRIES
    (error,) = cloud_pipeline.dlq_entries()
    assert (error["stage"], error["error_type"], error["message"]) == (
        "load",
        "CommitConflict",
        f"conflict {TRANSIENT_RETRIES}",
    )
    assert cloud_pipeline.snapshot_count("posts") == 0


def test_the_same_input_again_adds_no_rows_and_succeeds(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a posts file already loaded by one execution
    source = cloud_pipeline.upload(POSTS_CSV)
    first = cloud_pipeline.execute(source)
    assert first["status"] == "SUCCEEDED", first.get("cause")
    rows, snapshots = cloud_pipeline.table("posts").height, cloud_pipeline.snapshot_count("posts")

    # WHEN a second execution starts with the same input (a duplicate S3 event: EventBridge cannot dedupe)
    second = cloud_pipeline.execute(source)

    # THEN it succeeds, reporting the snapshot the file already went into, and adds nothing
    assert second["status"] == "SUCCEEDED", second.get("cause")
    assert second["name"] != first["name"]
    load = output(second)["load"]
    assert load["already_loaded"] is True
    assert load["inserted"] == 0
    assert load["snapshot_id"] == output(first)["load"]["snapshot_id"]
    assert cloud_pipeline.table("posts").height == rows
    assert cloud_pipeline.snapshot_count("posts") == snapshots


def test_an_unknown_file_name_fails_and_lands_in_dlq_unknown(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a file whose name matches no dataset
    source = cloud_pipeline.upload(POSTS_CSV, key="scrapes/menu_export.csv")

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN it fails with UnknownDataset and the file is in dlq/unknown/<execution name>/
    assert execution["status"] == "FAILED"
    assert execution["error"] == "UnknownDataset"
    folder = f"dlq/unknown/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [folder + "error.json", folder + "menu_export.csv"]
    error = cloud_pipeline.read_json(folder + "error.json")
    assert (error["stage"], error["error_type"], error["dataset"]) == ("parse", "UnknownDataset", "unknown")
    assert "post_results_*" in error["message"]


def test_a_landing_file_named_error_json_keeps_its_copy_beside_the_dlq_record(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a scraped file named error.json (it matches no dataset, so it is dead-lettered)
    body = b'[{"restaurant": "scraped payload that must be kept"}]'
    source = cloud_pipeline.upload(POSTS_CSV, key="exports/error.json", body=body)

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN the DLQ folder holds the record and, under another name, the copy; error.json points at the copy
    assert execution["error"] == "UnknownDataset"
    folder = f"dlq/unknown/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [folder + "error.json", folder + "source-error.json"]
    assert cloud_pipeline.s3.get_object(Bucket=LAKE, Key=folder + "source-error.json")["Body"].read() == body
    error = cloud_pipeline.read_json(folder + "error.json")
    assert (error["error_type"], error["copy"]) == ("UnknownDataset", {"status": "copied"})
    assert error["dead_letter_uri"] == f"s3://{LAKE}/{folder}source-error.json"


def test_a_failing_dead_letter_stage_still_fails_the_execution_with_the_original_error(
    cloud_pipeline: CloudPipeline,
) -> None:
    # GIVEN a bad file, and a dead-letter stage that cannot write to the DLQ
    source = cloud_pipeline.upload(MISSING_COLUMNS)
    cloud_pipeline.dispatcher.faults["dead_letter"] = [PermissionError("AccessDenied on dlq/")]

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN DeadLetter's own Catch still ends in Fail, and the execution reports the parser's error, not its own
    assert execution["status"] == "FAILED"
    assert execution["error"] == "SchemaMismatch"
    assert json.loads(execution["cause"])["errorType"] == "SchemaMismatch"
    assert cloud_pipeline.dispatcher.invocations == ["parse", "dead_letter"]
    assert failed_lambdas(cloud_pipeline, execution) == ["SchemaMismatch", "PermissionError"]


# --- real S3 events: URL-encoded keys -------------------------------------------------------------

#: EventBridge "Object Created" fixtures (tests/events/object_created/) -> the key the scraper wrote. S3
#: URL-encodes the key in the event (space -> '+', '+' -> '%2B', '(' -> '%28', UTF-8 bytes -> '%XX').
ENCODED_KEY_EVENTS = {
    "space_and_parentheses": "scrapes/post_results_2026-01-13 (1).csv",
    "plus": "scrapes/post_results_a+b_20260113_175319.csv",
    "equals_in_prefix": "scrapes/date=2026-01-13/post_results_20260113_175319.csv",
    "percent": "scrapes/post_results_100%_20260113_175319.csv",
    "emoji_and_accents": "scrapes/café/post_results_📸_20260113_175319.csv",
    "colon": "scrapes/post_results_2026-01-13T17:53:19.csv",
}


def object_created(fixture: str, version_id: str) -> dict[str, Any]:
    """The fixture event, naming the version moto assigned to the upload (moto picks its own ids)."""
    event: dict[str, Any] = json.loads((EVENTS / "object_created" / f"{fixture}.json").read_text())
    event["detail"]["object"]["version-id"] = version_id
    return event


@pytest.mark.parametrize(("fixture", "key"), ENCODED_KEY_EVENTS.items(), ids=list(ENCODED_KEY_EVENTS))
def test_an_object_created_event_with_an_encoded_key_loads_the_file(
    cloud_pipeline: CloudPipeline, fixture: str, key: str
) -> None:
    # GIVEN a posts file the scraper wrote under a key that S3 URL-encodes in its event
    body = (SAMPLES / POSTS_CSV).read_bytes()
    version = cloud_pipeline.s3.put_object(Bucket=LANDING, Key=key, Body=body)["VersionId"]
    event = object_created(fixture, version)
    assert event["detail"]["object"]["key"] != key, "the fixture carries the key as S3 encodes it"

    # WHEN the rule's input transformer (as synthesised) starts the execution with that event
    execution = cloud_pipeline.execute(cloud_pipeline.execution_input(event))

    # THEN the file loads, under the key it really has, and nothing is dead-lettered
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert cloud_pipeline.dispatcher.invocations == HAPPY_PATH
    result = output(execution)
    assert result["source"]["key"] == key
    assert result["load"]["inserted"] == CSV_VALID_KEYS
    assert set(cloud_pipeline.table("posts")["source_file"]) == {f"s3://{LANDING}/{key}"}
    assert cloud_pipeline.dlq_entries() == []


def test_a_bad_file_under_an_encoded_key_is_dead_lettered_with_its_copy(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a file missing required columns, under a key with a space and parentheses
    key = ENCODED_KEY_EVENTS["space_and_parentheses"]
    body = (SAMPLES / MISSING_COLUMNS).read_bytes()
    version = cloud_pipeline.s3.put_object(Bucket=LANDING, Key=key, Body=body)["VersionId"]

    # WHEN its S3 event starts an execution
    execution = cloud_pipeline.execute(cloud_pipeline.execution_input(object_created("space_and_parentheses", version)))

    # THEN it is filed in dlq/ under its real name, with the source copied beside error.json
    assert execution["status"] == "FAILED"
    assert execution["error"] == "SchemaMismatch"
    folder = f"dlq/posts/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [folder + "error.json", folder + "post_results_2026-01-13 (1).csv"]
    error = cloud_pipeline.read_json(folder + "error.json")
    assert error["copy"] == {"status": "copied"}
    assert error["source"]["key"] == key


def test_a_hand_started_execution_with_a_raw_key_reads_exactly_that_key(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN two different posts files whose keys differ by '+' and ' ' (what URL-decoding would confuse)
    body = (SAMPLES / POSTS_CSV).read_bytes()
    cloud_pipeline.upload(POSTS_CSV, key="scrapes/post_results_a b.csv", body=body)
    plus = cloud_pipeline.upload(
        POSTS_CSV, key="scrapes/post_results_a+b.csv", body=body.replace(b"C1a2B3c4D5e", b"Z" * 11)
    )

    # WHEN an execution is started by hand with the real key, said to be raw, and no version id
    execution = cloud_pipeline.execute({"bucket": LANDING, "key": plus["key"], "raw_key": True})

    # THEN it loads the '+' file, not the other one
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert output(execution)["source"]["key"] == plus["key"]
    assert set(cloud_pipeline.table("posts")["source_file"]) == {f"s3://{LANDING}/{plus['key']}"}


# --- an input without a version id (a Backfill listing: bucket, key, etag, size) ------------------


def listed(cloud_pipeline: CloudPipeline, key: str) -> dict[str, Any]:
    """The ingestion input the Backfill state machine gives a listed object: no version id, the listing's ETag."""
    head = cloud_pipeline.s3.head_object(Bucket=LANDING, Key=key)
    return {"bucket": LANDING, "key": key, "raw_key": True, "etag": head["ETag"], "size": head["ContentLength"]}


def test_a_bad_file_re_uploaded_good_before_its_dead_letter_step_is_filed_with_the_bytes_that_failed(
    cloud_pipeline: CloudPipeline,
) -> None:
    # GIVEN a file missing required columns, run from a listing (no version id)
    bad = cloud_pipeline.upload(MISSING_COLUMNS, key=f"2025/{MISSING_COLUMNS}")
    good = (SAMPLES / POSTS_CSV).read_bytes()

    # AND the scraper re-uploads the key, good this time, after the parse failed and before the dead letter
    @contextmanager
    def re_uploaded_before_the_dead_letter(stage: str) -> Iterator[None]:
        if stage == "dead_letter":
            cloud_pipeline.s3.put_object(Bucket=LANDING, Key=bad["key"], Body=good)
        yield

    cloud_pipeline.dispatcher.invoke_as = re_uploaded_before_the_dead_letter

    # WHEN it is executed
    execution = cloud_pipeline.execute(listed(cloud_pipeline, bad["key"]))

    # THEN the DLQ keeps the version that failed, and error.json names that version
    assert execution["error"] == "SchemaMismatch"
    folder = f"dlq/posts/{execution['name']}/"
    copy = cloud_pipeline.s3.get_object(Bucket=LAKE, Key=f"{folder}{MISSING_COLUMNS}")["Body"].read()
    assert copy == (SAMPLES / MISSING_COLUMNS).read_bytes()
    error = cloud_pipeline.read_json(folder + "error.json")
    assert (error["copy"], error["source"]["version_id"]) == ({"status": "copied"}, bad["version_id"])


def test_an_input_without_a_version_id_is_pinned_to_the_version_it_names(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a listed posts file, re-uploaded with other content after it was listed
    first = cloud_pipeline.upload(POSTS_CSV, key=f"2025/{POSTS_CSV}")
    execution_input = listed(cloud_pipeline, first["key"])
    other = (SAMPLES / POSTS_CSV).read_bytes().replace(b"C1a2B3c4D5e", b"Z" * 11)
    cloud_pipeline.s3.put_object(Bucket=LANDING, Key=first["key"], Body=other)

    # WHEN the listed input is executed
    execution = cloud_pipeline.execute(execution_input)

    # THEN the version listed (found by its ETag) is the one loaded, and every stage was handed that version
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert output(execution)["source"]["version_id"] == first["version_id"]
    posts = cloud_pipeline.table("posts")
    assert set(posts["source_version"]) == {first["version_id"]}
    assert "Z" * 11 not in posts["post_id"].to_list()


# --- an unversioned landing bucket: the input's ETag names the upload -----------------------------

UNVERSIONED = "landing-unversioned"


def unversioned_upload(cloud_pipeline: CloudPipeline, name: str, body: bytes) -> dict[str, Any]:
    """An upload to a bucket never versioned, and the execution input its event gives (no version id)."""
    cloud_pipeline.s3.create_bucket(Bucket=UNVERSIONED)
    key = f"scrapes/{name}"
    etag = cloud_pipeline.s3.put_object(Bucket=UNVERSIONED, Key=key, Body=body)["ETag"].strip('"')
    return {"bucket": UNVERSIONED, "key": key, "etag": etag, "size": len(body)}


def test_an_unversioned_object_replaced_before_its_parse_is_not_loaded_under_the_first_uploads_etag(
    cloud_pipeline: CloudPipeline,
) -> None:
    # GIVEN a posts file uploaded to an unversioned bucket, then replaced with other rows before its run parses it
    first = unversioned_upload(cloud_pipeline, POSTS_CSV, (SAMPLES / POSTS_CSV).read_bytes())
    other = (SAMPLES / POSTS_CSV).read_bytes().replace(b"C1a2B3c4D5e", b"Z" * 11)
    cloud_pipeline.s3.put_object(Bucket=UNVERSIONED, Key=first["key"], Body=other)

    # WHEN the first upload's event runs
    execution = cloud_pipeline.execute(first)

    # THEN nothing is loaded under its ETag: its bytes are gone, and the upload now there has its own event
    assert execution["status"] == "FAILED"
    assert execution["error"] == "SourceNotFound"
    assert cloud_pipeline.snapshot_count("posts") == 0
    # AND error.json says why, and that no copy was made (the bytes there now are not the ones that ran)
    folder = f"dlq/posts/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [folder + "error.json"]
    error = cloud_pipeline.read_json(folder + "error.json")
    assert "replaced since its ETag" in error["message"]
    assert error["copy"]["status"] == "failed"


def test_an_unversioned_bad_file_re_uploaded_before_its_dead_letter_step_is_not_filed_with_the_new_bytes(
    cloud_pipeline: CloudPipeline,
) -> None:
    # GIVEN a file missing required columns in an unversioned bucket, re-uploaded good after its parse failed
    bad = unversioned_upload(cloud_pipeline, MISSING_COLUMNS, (SAMPLES / MISSING_COLUMNS).read_bytes())

    @contextmanager
    def re_uploaded_before_the_dead_letter(stage: str) -> Iterator[None]:
        if stage == "dead_letter":
            cloud_pipeline.s3.put_object(Bucket=UNVERSIONED, Key=bad["key"], Body=(SAMPLES / POSTS_CSV).read_bytes())
        yield

    cloud_pipeline.dispatcher.invoke_as = re_uploaded_before_the_dead_letter

    # WHEN its event runs
    execution = cloud_pipeline.execute(bad)

    # THEN it is dead-lettered for what its parse found, and dlq/ holds no copy of the good re-upload
    assert execution["error"] == "SchemaMismatch"
    folder = f"dlq/posts/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [folder + "error.json"]
    # AND error.json says the copy failed because the object was replaced, never "copied"
    copy = cloud_pipeline.read_json(folder + "error.json")["copy"]
    assert copy["status"] == "failed"
    assert "replaced since its ETag" in copy["error"]


# --- the dead letter cannot lose a file -----------------------------------------------------------


def test_a_source_deleted_before_the_run_still_gets_an_error_json_saying_the_copy_failed(
    cloud_pipeline: CloudPipeline,
) -> None:
    # GIVEN an event for a version that was permanently deleted before the execution ran
    source = cloud_pipeline.upload(POSTS_CSV)
    cloud_pipeline.s3.delete_object(Bucket=LANDING, Key=source["key"], VersionId=source["version_id"])

    # WHEN the execution runs
    execution = cloud_pipeline.execute(source)

    # THEN it fails with SourceNotFound, and error.json says why and that the copy failed (nothing to copy)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "SourceNotFound"
    assert cloud_pipeline.dispatcher.invocations == ["parse", "dead_letter"]
    folder = f"dlq/posts/{execution['name']}/"
    assert cloud_pipeline.keys(folder) == [folder + "error.json"]
    error = cloud_pipeline.read_json(folder + "error.json")
    assert (error["stage"], error["error_type"]) == ("parse", "SourceNotFound")
    assert error["copy"]["status"] == "failed"
    assert "SourceNotFound" in error["copy"]["error"]
    assert source["version_id"] in error["message"]


def test_a_rerun_that_fails_the_same_way_reuses_the_first_dlq_entry(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a bad file already dead-lettered by one execution
    source = cloud_pipeline.upload(MISSING_COLUMNS)
    first = cloud_pipeline.execute(source)
    assert first["status"] == "FAILED"

    # WHEN a new execution reruns it, failing identically
    second = cloud_pipeline.execute(source)

    # THEN it fails the same way, but the DLQ holds one entry: the first, noting the rerun
    assert second["status"] == "FAILED"
    assert second["error"] == "SchemaMismatch"
    entries = [key for key in cloud_pipeline.keys("dlq/") if key.endswith("/error.json")]
    assert entries == [f"dlq/posts/{first['name']}/error.json"]
    error = cloud_pipeline.read_json(entries[0])
    assert (error["rerun_count"], error["reruns"]) == (1, [second["name"]])
    dead_letter = output_of_dead_letter(cloud_pipeline, second)
    assert dead_letter["duplicate_of"] == first["name"]


def test_a_gate_failure_rerun_leaves_no_second_folder_of_rejected_rows(
    cloud_pipeline: CloudPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a flawed file under a threshold it cannot meet, dead-lettered once
    monkeypatch.setenv("ICEGATE_QUALITY_THRESHOLD_POSTS", "99.5")
    load_settings.cache_clear()
    source = cloud_pipeline.upload(POSTS_CSV)
    first = cloud_pipeline.execute(source)
    assert first["error"] == "QualityGateFailed"

    # WHEN it is rerun (the validator files its rejected rows again under the rerun's id)
    second = cloud_pipeline.execute(source)

    # THEN only the first folder remains (beside the index), with its source, error.json and rejected rows
    assert second["error"] == "QualityGateFailed"
    folder = f"dlq/posts/{first['name']}/"
    assert {key.split("/")[2] for key in cloud_pipeline.keys("dlq/posts/")} == {first["name"], "_index"}
    assert cloud_pipeline.keys(folder) == [folder + "error.json", folder + POSTS_CSV, folder + "rejected.parquet"]


def output_of_dead_letter(pipeline: CloudPipeline, execution: dict[str, Any]) -> dict[str, Any]:
    """What the DeadLetter function returned (the ``DeadLettered`` payload)."""
    (result,) = [
        json.loads(event["lambdaFunctionSucceededEventDetails"]["output"])
        for event in pipeline.history(execution["executionArn"])
        if event["type"] == "LambdaFunctionSucceeded"
        and "error_uri" in json.loads(event["lambdaFunctionSucceededEventDetails"]["output"])
    ]
    return dict(result)


# --- bounded payloads -----------------------------------------------------------------------------

#: Step Functions fails a state over 256 KB with States.DataLimitExceeded, which no Catch of States.ALL sees.
STATE_LIMIT_BYTES = 256 * 1024


def pathological_header(sample: str, extra_columns: int = 240, name_chars: int = 1_100) -> bytes:
    """``sample`` with many long, unknown header names appended (empty values): ~264 KB of names, within
    the default column limit (256)."""
    lines = (SAMPLES / sample).read_text(encoding="utf-8").splitlines()
    extra = [f"scraper_debug_{i:03d}_{'x' * name_chars}" for i in range(extra_columns)]
    rows = [lines[0] + "," + ",".join(extra), *(line + "," * extra_columns for line in lines[1:])]
    return ("\n".join(rows) + "\n").encode()


def state_sizes(pipeline: CloudPipeline, execution: dict[str, Any]) -> list[int]:
    """Size in bytes of every state's input and output, and of every error's cause, in the execution."""
    sizes = []
    for event in pipeline.history(execution["executionArn"]):
        for details in event.values():
            if isinstance(details, dict):
                sizes += [
                    len(str(details[field]).encode()) for field in ("input", "output", "cause") if field in details
                ]
    return sizes


@pytest.mark.parametrize(
    ("sample", "status"),
    [(POSTS_CSV, "SUCCEEDED"), (MISSING_COLUMNS, "FAILED")],
    ids=["unknown-columns-loads", "unknown-columns-and-a-missing-one-is-dead-lettered"],
)
def test_a_pathological_header_keeps_every_state_far_below_the_limit(
    cloud_pipeline: CloudPipeline, sample: str, status: str
) -> None:
    # GIVEN a file whose header carries 240 unknown columns of 1 100 characters each (~264 KB of names)
    key = f"scrapes/{sample}"
    body = pathological_header(sample)
    assert len(body) > STATE_LIMIT_BYTES
    put = cloud_pipeline.s3.put_object(Bucket=LANDING, Key=key, Body=body)
    source = {
        "bucket": LANDING,
        "key": key,
        "version_id": put["VersionId"],
        "etag": put["ETag"].strip('"'),
        "size": len(body),
    }

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN it ends loaded or in dlq/, as the file deserves, and no state came near Step Functions' limit
    assert execution["status"] == status, execution.get("cause")
    assert max(state_sizes(cloud_pipeline, execution)) < STATE_LIMIT_BYTES / 16
    if status == "SUCCEEDED":
        result = output(execution)
        assert result["ignored_columns_count"] == 240
        assert len(result["ignored_columns"]) == 50
        # AND the full list of what was not loaded is kept as an object, not in the state
        assert len(cloud_pipeline.read_json(result["ignored_columns_uri"].removeprefix(f"s3://{LAKE}/"))) == 240
    else:
        (error,) = cloud_pipeline.dlq_entries()
        assert error["error_type"] == "SchemaMismatch"
        assert "more characters)" in error["message"]


# --- transient errors as the libraries raise them --------------------------------------------------


@pytest.mark.parametrize(
    ("corrupt_for", "status"),
    [(1, "SUCCEEDED"), (TRANSIENT_RETRIES + 1, "FAILED")],
    ids=["catalog-repaired-before-the-retry-loads", "catalog-corrupt-for-good-is-catalog-unavailable"],
)
def test_a_corrupt_catalog_is_retried_by_the_state_machine_never_blamed_on_the_file(
    cloud_pipeline: CloudPipeline, monkeypatch: pytest.MonkeyPatch, corrupt_for: int, status: str
) -> None:
    """SQLAlchemy's DatabaseError ("file is not a database") surfaces as CatalogUnavailable, which Retry matches."""
    # GIVEN a good file, and a catalog database that is corrupt for the first `corrupt_for` Load attempts
    source = cloud_pipeline.upload(POSTS_CSV)
    catalog_db = Path(cloud_pipeline.catalog_properties["uri"].removeprefix("sqlite:///"))
    catalog_db.write_bytes(b"this is not a SQLite database\n" * 64)

    def wait(seconds: float) -> None:
        cloud_pipeline.retry_waits.append(seconds)
        if len(cloud_pipeline.retry_waits) == corrupt_for:
            catalog_db.unlink()

    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=wait))
    monkeypatch.setattr(lake_catalog, "time", SimpleNamespace(sleep=lambda seconds: None))

    # WHEN it is executed
    execution = cloud_pipeline.execute(source)

    # THEN Load was retried under the transient retrier, and the file either loaded or was filed as the catalog's fault
    assert execution["status"] == status, execution.get("cause")
    loads = cloud_pipeline.dispatcher.invocations.count("load")
    assert loads == min(corrupt_for + 1, TRANSIENT_RETRIES + 1)
    assert set(failed_lambdas(cloud_pipeline, execution)) == {"CatalogUnavailable"}
    if status == "SUCCEEDED":
        assert output(execution)["load"]["inserted"] == CSV_VALID_KEYS
    else:
        assert execution["error"] == "CatalogUnavailable"
        (error,) = cloud_pipeline.dlq_entries()
        assert (error["stage"], error["error_type"]) == ("load", "CatalogUnavailable")
        assert "the file is not at fault" in error["message"]
