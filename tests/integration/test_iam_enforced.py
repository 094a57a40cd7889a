"""IAM as deployed, enforced: every stage runs with exactly its function role's statements from the template.

The synthesised state machine is executed by moto (``sfn_support``) with the deployed configuration —
pyiceberg's Glue catalog, the warehouse in the lake bucket, S3 over HTTP so that pyarrow's own client is
checked too (``aws_support``) — and moto's IAM enforcement on. Each Lambda invocation runs its real
handler with the access key of an IAM user whose only policy is that function's role statements, taken
from the synthesised template with the stack's bucket ARNs replaced by the test's buckets.

What moto checks: S3 actions against the request's bucket/key ARN (so every S3 grant is tested with its
exact resource), every other service's actions against ``*`` only (so Glue grants are tested by action;
their resources are asserted on the template in ``tests/infra/test_infra_iam.py``).

The negative controls take one needed action out of one statement and watch the run fail with AccessDenied
(or, for deletes, watch the files stay and the failure be said), so these tests can fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest

import icegate.datasets
import icegate.lake
from icegate.constants import DEAD_LETTER, HANDLERS, LEDGER_TABLE, LOAD, PARSE, REPORTS_PREFIX, WAITING_FOLDER
from icegate.datasets import all_datasets
from icegate.lake import SourceIdentity, build_catalog, load_batch
from icegate.lake import commit as commit_module
from icegate.lake.maintain import maintain
from icegate.report import REPORT_NAME
from icegate.settings import load_settings
from icegate.waiting import ObjectQueue
from tests.conftest import SAMPLES
from tests.integration.aws_support import (
    ADMIN_POLICY,
    AccessKey,
    acting_as,
    create_principal,
    enforce_iam,
    principal_policy,
)
from tests.integration.sfn_support import (
    LAKE,
    LANDING,
    NAMESPACE,
    CloudPipeline,
    running_pipeline,
    synthesised_definition,
)

POSTS_CSV = "post_results_20260113_175319.csv"
POSTS_XLSX = "post_results_20260115_081500.xlsx"
MISSING_COLUMNS = "post_results_20260116_120000.csv"
#: 28 rows - 4 rejected - 1 duplicate key (as in test_state_machine.py).
CSV_VALID_KEYS = 23
HAPPY_PATH = ["parse", "validate", "score", "load"]

#: A grant to take away from a stage's role: (stage, an action, a text the statement's resource contains).
Dropped = tuple[str, str, str]


@dataclass
class Deployed:
    pipeline: CloudPipeline
    #: Stage -> the access key of the IAM user holding that function's role statements.
    keys: dict[str, AccessKey]
    #: Stage -> the policy that user holds.
    policies: dict[str, dict[str, Any]]

    def run(self, execution_input: dict[str, Any]) -> dict[str, Any]:
        return self.pipeline.execute(execution_input)

    def warehouse_files(self, table: str = "posts") -> set[str]:
        """Data files under the table's folder in S3."""
        prefix = f"warehouse/{NAMESPACE}.db/{table}/data/"
        return {f"s3://{LAKE}/{key}" for key in self.pipeline.keys(prefix) if key.endswith(".parquet")}

    def referenced_files(self, table: str = "posts") -> set[str]:
        """Data files live in any snapshot the table still has."""
        loaded = self.pipeline.catalog().load_table((NAMESPACE, table))
        return {
            entry.data_file.file_path
            for snapshot in loaded.metadata.snapshots
            for manifest in snapshot.manifests(loaded.io)
            for entry in manifest.fetch_manifest_entry(loaded.io, discard_deleted=True)
        }


@pytest.fixture
def dropped() -> Dropped | None:
    """No statement dropped; the negative controls parametrize this."""
    return None


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dropped: Dropped | None) -> Iterator[Deployed]:
    """The pipeline as deployed (Glue catalog) with one IAM user per stage function, IAM enforced."""
    with running_pipeline(tmp_path, monkeypatch, catalog="glue") as pipeline:
        definition = synthesised_definition()
        iam = boto3.client("iam")
        policies = {
            stage: principal_policy(_without(definition.statements[stage], stage, dropped), definition.buckets)
            for stage in HANDLERS
        }
        keys = {stage: create_principal(iam, f"icegate-{stage}", policy) for stage, policy in policies.items()}
        # The test itself (uploads, executions, reading the results) acts as an administrator.
        admin = create_principal(iam, "test-harness", ADMIN_POLICY)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", admin.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", admin.secret_access_key)
        boto3.DEFAULT_SESSION = None
        pipeline.s3 = boto3.client("s3", endpoint_url=pipeline.catalog_properties["s3.endpoint"])
        pipeline.sfn = boto3.client("stepfunctions")
        pipeline.dispatcher.invoke_as = lambda stage: acting_as(keys[stage])
        enforce_iam(monkeypatch)
        yield Deployed(pipeline, keys, policies)
    boto3.DEFAULT_SESSION = None


def _without(statements: list[dict[str, Any]], stage: str, dropped: Dropped | None) -> list[dict[str, Any]]:
    """The statements with one action taken out of the one statement that grants it on that resource."""
    if dropped is None or dropped[0] != stage:
        return statements
    _, action, resource = dropped
    granting = [s for s in statements if action in s["Action"] and any(resource in r for r in s["Resource"])]
    assert len(granting) == 1, f"not exactly one statement of {stage} grants {action} on *{resource}*"
    kept = [s for s in statements if s is not granting[0]]
    actions = [a for a in granting[0]["Action"] if a != action]
    return [*kept, {**granting[0], "Action": actions}] if actions else kept


def output(execution: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(execution["output"])
    return result


def failed_lambdas(pipeline: CloudPipeline, execution: dict[str, Any]) -> list[dict[str, str]]:
    return [
        event["lambdaFunctionFailedEventDetails"]
        for event in pipeline.history(execution["executionArn"])
        if event["type"] == "LambdaFunctionFailed"
    ]


def test_the_principals_hold_the_template_statements_with_exact_s3_resources(deployed: Deployed) -> None:
    # GIVEN the policies the stage principals were given
    load_policy = deployed.policies[LOAD]["Statement"]

    # THEN S3 statements name the test's buckets exactly as the template names the stack's
    s3_resources = {r for s in load_policy if s["Action"][0].startswith("s3:") for r in s["Resource"]}
    assert s3_resources == {
        f"arn:aws:s3:::{LAKE}/processing/*",
        f"arn:aws:s3:::{LAKE}/processing/_waiting/*",
        f"arn:aws:s3:::{LAKE}/warehouse/*",
        f"arn:aws:s3:::{LAKE}/{REPORTS_PREFIX}/*",
        f"arn:aws:s3:::{LAKE}",
    }
    # AND the loader may not create the Glue database (the stack does)
    glue_actions = {a for s in load_policy for a in s["Action"] if a.startswith("glue:")}
    assert glue_actions == {"glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"}


def test_a_good_file_loads_into_a_new_glue_table_and_a_rerun_is_already_loaded(deployed: Deployed) -> None:
    """Regression (issue 7, defect 1): the first load asked Glue to CreateDatabase, which the role may not."""
    # GIVEN a posts file and a Glue database without tables, as the stack leaves it
    source = deployed.pipeline.upload(POSTS_CSV)

    # WHEN the execution runs, each stage with its own role's permissions
    execution = deployed.run(source)

    # THEN it succeeds: the loader created the table in the stack's database and loaded the file's rows
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert deployed.pipeline.dispatcher.invocations == HAPPY_PATH
    assert output(execution)["load"]["inserted"] == CSV_VALID_KEYS
    table = deployed.pipeline.catalog().load_table((NAMESPACE, "posts"))
    assert table.location() == f"s3://{LAKE}/warehouse/{NAMESPACE}.db/posts"
    assert table.scan().to_arrow().num_rows == CSV_VALID_KEYS
    # AND the rejected rows were kept in dlq/ by the validator
    assert deployed.pipeline.keys(f"dlq/posts/{execution['name']}/") == [
        f"dlq/posts/{execution['name']}/rejected.parquet"
    ]

    # WHEN the same input runs again (a duplicate S3 event)
    again = deployed.run(source)

    # THEN it succeeds as "already loaded" (GetTable, reading metadata), adding nothing
    assert again["status"] == "SUCCEEDED", again.get("cause")
    assert output(again)["load"]["already_loaded"] is True
    assert len(deployed.pipeline.catalog().load_table((NAMESPACE, "posts")).metadata.snapshots) == 1


def test_a_file_streamed_through_every_stage_loads_the_same_rows_under_the_roles(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deployment that streams every CSV (scratch Parquet through /tmp, uploaded and downloaded by boto3)
    monkeypatch.setenv("ICEGATE_STREAM_ABOVE_BYTES", "1")
    load_settings.cache_clear()
    source = deployed.pipeline.upload(POSTS_CSV)

    # WHEN the execution runs, each stage with its own role's permissions
    execution = deployed.run(source)

    # THEN every stage took it a slice at a time and the loader committed the same rows as the whole-file path
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert output(execution)["streamed"] is True
    assert output(execution)["load"]["inserted"] == CSV_VALID_KEYS
    assert deployed.pipeline.catalog().load_table((NAMESPACE, "posts")).scan().to_arrow().num_rows == CSV_VALID_KEYS
    assert deployed.pipeline.keys(f"dlq/posts/{execution['name']}/") == [
        f"dlq/posts/{execution['name']}/rejected.parquet"
    ]

    # WHEN the same input runs again
    again = deployed.run(source)

    # THEN its hash, read as a stream, finds it loaded
    assert again["status"] == "SUCCEEDED", again.get("cause")
    assert output(again)["load"]["already_loaded"] is True

    # WHEN the same bytes are uploaded again (a new version, so only the content can tell)
    uploaded_again = deployed.pipeline.upload(POSTS_CSV)
    assert uploaded_again != source

    # THEN the parse's own hash finds them loaded, under the parser's grants
    third = deployed.run(uploaded_again)
    assert third["status"] == "SUCCEEDED", third.get("cause")
    assert output(third)["load"]["already_loaded"] is True


def test_a_bad_file_is_dead_lettered_by_the_dead_letter_role(deployed: Deployed) -> None:
    # GIVEN a posts file missing required columns
    source = deployed.pipeline.upload(MISSING_COLUMNS)

    # WHEN it runs
    execution = deployed.run(source)

    # THEN it fails with the parser's error, and the dead-letter role copied it beside its error.json
    assert execution["status"] == "FAILED"
    assert execution["error"] == "SchemaMismatch"
    folder = f"dlq/posts/{execution['name']}/"
    assert deployed.pipeline.keys(folder) == [folder + "error.json", folder + MISSING_COLUMNS]
    assert deployed.pipeline.read_json(folder + "error.json")["error_type"] == "SchemaMismatch"


def test_a_killed_loaders_waiting_file_is_removed_by_its_dead_letter_and_never_committed(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a loader killed by its runtime (timed out, out of memory) once it announced its file as waiting:
    # played by a load that fails with its clean-up skipped, as a killed process runs none
    with monkeypatch.context() as killed:
        killed.setattr(ObjectQueue, "forget", lambda queue, uri: None)
        killed.setattr(icegate.lake, "load_group", _killed)
        first = deployed.run(deployed.pipeline.upload(POSTS_CSV))
    assert (first["status"], first["error"]) == ("FAILED", "RuntimeError")

    # WHEN the next file of the table loads (its loader would take the files waiting beside its own)
    xlsx = deployed.pipeline.upload(POSTS_XLSX)
    second = deployed.run(xlsx)

    # THEN the dead-letter role removed the killed load's entry, so the next loader committed its own file only
    assert deployed.pipeline.keys(f"processing/{WAITING_FOLDER}/") == []
    assert second["status"] == "SUCCEEDED", second.get("cause")
    sources = set(deployed.pipeline.table("posts")["source_file"].to_list())
    assert sources == {f"s3://{LANDING}/{xlsx['key']}"}, sources
    assert [entry["run_id"] for entry in deployed.pipeline.dlq_entries()] == [first["name"]]


def _killed(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the runtime was killed")


def test_a_gate_failure_is_dead_lettered_with_the_quality_report(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a threshold the flawed posts file cannot meet
    monkeypatch.setenv("ICEGATE_QUALITY_THRESHOLD_POSTS", "99.5")
    load_settings.cache_clear()

    # WHEN it runs
    execution = deployed.run(deployed.pipeline.upload(POSTS_CSV))

    # THEN the gate stops it and the dead-letter role read the scorer's report from processing/
    assert execution["status"] == "FAILED"
    assert execution["error"] == "QualityGateFailed"
    (error,) = deployed.pipeline.dlq_entries()
    assert error["quality"]["passed"] is False
    assert error["quality"]["threshold"] == 99.5


def test_an_upsert_rewrites_stored_files_under_the_loader_role(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN posts merged by upsert, and the file already loaded once
    upsert_posts = {**all_datasets(), "posts": _replace_strategy(all_datasets()["posts"], "upsert")}
    monkeypatch.setattr(icegate.datasets, "all_datasets", lambda: upsert_posts)
    first = deployed.run(deployed.pipeline.upload(POSTS_CSV))
    assert first["status"] == "SUCCEEDED", first.get("cause")
    files_before = deployed.warehouse_files()

    # WHEN a newer scrape of the same posts arrives with one changed like count
    newer = (SAMPLES / POSTS_CSV).read_bytes().replace(b"12.6K,345", b"13.1K,345")
    execution = deployed.run(deployed.pipeline.upload(POSTS_CSV, key=f"scrapes/newer/{POSTS_CSV}", body=newer))

    # THEN the stored rows are replaced (copy-on-write: the old files leave the current snapshot)
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    load = output(execution)["load"]
    assert (load["inserted"], load["updated"]) == (0, CSV_VALID_KEYS)
    posts = deployed.pipeline.table("posts")
    assert posts.height == CSV_VALID_KEYS
    assert posts.filter(pl.col("post_id") == "C1a2B3c4D5e")["likes"].to_list() == [13100]
    current = deployed.pipeline.catalog().load_table((NAMESPACE, "posts"))
    live = {task.file.file_path for task in current.scan().plan_files()}
    assert live.isdisjoint(files_before)


def _replace_strategy(dataset: Any, strategy: str) -> Any:
    import dataclasses

    return dataclasses.replace(dataset, strategy=strategy)


def _race_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Another loader commits some of the same keys between the loader's plan (its files written) and its commit, once.

    Returns the list the rival's inserted-row count is appended to.
    """
    real_write_files = commit_module.write_files
    rival_inserted: list[int] = []

    def write_then_lose_the_race(table: Any, dataset: Any, plan: Any) -> Any:
        files = real_write_files(table, dataset, plan)
        if not rival_inserted:
            rival_inserted.append(-1)  # the rival's own load writes through here too
            rival = plan.rows.head(5).select(dataset.column_names)
            identity = SourceIdentity(sha256="rival", file="s3://landing/rival.csv", version="v1", run_id="rival")
            settings = load_settings()
            summary = load_batch(build_catalog(settings), dataset, rival, identity, namespace=settings.namespace)
            rival_inserted[0] = summary.inserted
        return files

    monkeypatch.setattr(commit_module, "write_files", write_then_lose_the_race)
    return rival_inserted


def test_a_lost_commit_race_is_replanned_and_the_losing_files_are_deleted(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a rival loader that commits 5 of the file's keys while the loader plans its first load
    rival_inserted = _race_once(monkeypatch)

    # WHEN the file runs
    execution = deployed.run(deployed.pipeline.upload(POSTS_CSV))

    # THEN the loader's first commit lost (Glue), it re-planned against the rival's snapshot and won:
    # the rival's 5 keys are skipped, the rest inserted, no key twice
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert rival_inserted == [5]
    load = output(execution)["load"]
    assert (load["inserted"], load["skipped"]) == (CSV_VALID_KEYS - 5, 5)
    posts = deployed.pipeline.table("posts")
    assert posts.height == CSV_VALID_KEYS
    assert posts.select("post_id", "creator").is_duplicated().sum() == 0

    # AND the files its lost attempt wrote were deleted (s3:DeleteObject on warehouse/): none is left orphaned
    assert deployed.warehouse_files() == deployed.referenced_files()


def test_the_loader_deletes_metadata_files_beyond_the_kept_history(deployed: Deployed) -> None:
    """``write.metadata.delete-after-commit``: pyiceberg deletes, with the loader's role, what falls out of the log."""
    # GIVEN a loaded table that keeps one previous metadata file (set by an operator)
    assert deployed.run(deployed.pipeline.upload(POSTS_XLSX))["status"] == "SUCCEEDED"
    table = deployed.pipeline.catalog().load_table((NAMESPACE, "posts"))
    table.transaction().set_properties({"write.metadata.previous-versions-max": "1"}).commit_transaction()
    before = set(deployed.pipeline.keys(f"warehouse/{NAMESPACE}.db/posts/metadata/"))

    # WHEN the loader commits another file
    assert deployed.run(deployed.pipeline.upload(POSTS_CSV))["status"] == "SUCCEEDED"

    # THEN it deleted the metadata file that left the log: the current one and one previous remain
    after = {k for k in deployed.pipeline.keys(f"warehouse/{NAMESPACE}.db/posts/metadata/") if k.endswith(".json")}
    assert len(after) == 2
    assert {k for k in before if k.endswith(".json")} - after


def _maintain_posts_fully() -> Any:
    """Compact posts, expire all but its newest snapshot, remove every orphan (no load is running)."""
    return maintain(
        build_catalog(load_settings()),
        (NAMESPACE, "posts"),
        expire_older_than=timedelta(0),
        retain_last=1,
        orphans_older_than=timedelta(0),
        force=True,
    )


def test_maintain_runs_with_the_loader_grants_and_deletes_what_it_reports(deployed: Deployed) -> None:
    """``maintain`` run by hand (the CLI, not the scheduled maintainer) needs only what the loader holds."""
    # GIVEN two loads (small files, two snapshots)
    for sample in (POSTS_CSV, POSTS_XLSX):
        assert deployed.run(deployed.pipeline.upload(sample))["status"] == "SUCCEEDED"
    rows_before = deployed.pipeline.table("posts").sort("post_id", "creator")

    # WHEN maintain runs with the loader's role, expiring all but the newest snapshot
    with acting_as(deployed.keys[LOAD]):
        report = _maintain_posts_fully()

    # THEN it compacted and expired, and the files it says it deleted are gone from S3
    assert report.files_compacted > 0
    assert report.snapshots_expired >= 1
    assert report.files_deleted > 0
    assert deployed.warehouse_files() == deployed.referenced_files()
    assert deployed.pipeline.table("posts").sort("post_id", "creator").equals(rows_before)


def _ledger(deployed: Deployed) -> list[tuple[str, str, Any]]:
    """(run id, outcome, rows read) of every ledger row, oldest first."""
    rows = deployed.pipeline.catalog().load_table((NAMESPACE, LEDGER_TABLE)).scan().to_arrow()
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("finished_at").select("run_id", "outcome", "rows_read").rows()


def test_every_outcome_is_recorded_in_the_ledger_and_the_report_under_each_role(deployed: Deployed) -> None:
    """The loader and the dead letter write the ledger and the report, the parser reads it, each as deployed."""
    report_key = f"{REPORTS_PREFIX}/{REPORT_NAME}"
    # GIVEN a good file that loads (the loader writes the ledger row and the report)
    good = deployed.pipeline.upload(POSTS_CSV)
    first = deployed.run(good)
    assert first["status"] == "SUCCEEDED", first.get("cause")
    assert deployed.pipeline.keys(report_key) == [report_key]
    deployed.pipeline.s3.delete_object(Bucket=LAKE, Key=report_key)

    # WHEN the same object runs again (a duplicate event), then a bad file; the report is removed before each,
    # so that the stage must write it (within ICEGATE_REPORT_MIN_INTERVAL_SECONDS of the last one it would
    # rightly skip the rebuild, after a HEAD of the page)
    again = deployed.run(good)
    deployed.pipeline.s3.delete_object(Bucket=LAKE, Key=report_key)
    bad = deployed.run(deployed.pipeline.upload(MISSING_COLUMNS))

    # THEN the ledger holds one row per execution: the rerun answered by the parser from the ledger before any
    # parsing (no rows read), the bad file recorded by the dead-letter role
    assert (again["status"], bad["status"]) == ("SUCCEEDED", "FAILED")
    assert _ledger(deployed) == [
        (first["name"], "loaded", 28),
        (again["name"], "already_loaded", None),
        (bad["name"], "dead_lettered", None),
    ]
    # AND the dead-letter role rewrote the report, which names all three runs
    page = deployed.pipeline.s3.get_object(Bucket=LAKE, Key=report_key)["Body"].read().decode()
    assert all(execution["name"] in page for execution in (first, again, bad))


@pytest.mark.parametrize("dropped", [(DEAD_LETTER, "s3:PutObject", f"/{LEDGER_TABLE}/*")], ids=["no-ledger-write"])
def test_without_the_ledger_grant_the_dead_letter_still_files_but_records_nothing(
    deployed: Deployed, dropped: Dropped
) -> None:
    """Negative control: the dead-lettered row above is the dead-letter role's own write."""
    # WHEN a bad file runs while the dead letter may not write the ledger's files
    bad = deployed.run(deployed.pipeline.upload(MISSING_COLUMNS))

    # THEN the file is still filed (the ledger never stands in the way of the DLQ), and no row is recorded
    assert bad["status"] == "FAILED"
    assert deployed.pipeline.dlq_entries()
    assert not deployed.pipeline.catalog().table_exists((NAMESPACE, LEDGER_TABLE)) or _ledger(deployed) == []


# --- negative controls: without a needed statement, the run fails with AccessDenied -----------------------


@pytest.mark.parametrize(
    ("dropped", "failing_stage"),
    [
        pytest.param((PARSE, "s3:PutObject", "/processing/*"), PARSE, id="parser-without-processing-write"),
        pytest.param((LOAD, "s3:PutObject", "/warehouse/*"), LOAD, id="loader-without-warehouse-write"),
        pytest.param((LOAD, "glue:CreateTable", ":table/"), LOAD, id="loader-without-glue-tables"),
    ],
)
def test_without_a_needed_statement_the_stage_fails_with_access_denied(
    deployed: Deployed, dropped: Dropped, failing_stage: str
) -> None:
    # GIVEN a stage whose role lacks one statement the template grants
    # WHEN a good file runs
    execution = deployed.run(deployed.pipeline.upload(POSTS_CSV))

    # THEN that stage fails with access denied and the file is dead-lettered, not loaded
    assert execution["status"] == "FAILED"
    (failure,) = failed_lambdas(deployed.pipeline, execution)
    cause = json.loads(failure["cause"])["errorMessage"]
    assert re.search(r"access.?denied", cause, re.IGNORECASE), cause
    assert deployed.pipeline.dispatcher.invocations[-2:] == [failing_stage, "dead_letter"]
    assert deployed.pipeline.dlq_entries()


@pytest.mark.parametrize("dropped", [(LOAD, "s3:DeleteObject", "/warehouse/*")], ids=["loader-without-delete"])
def test_without_delete_a_lost_race_leaves_an_orphan_and_says_so(
    deployed: Deployed, dropped: Dropped, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The delete of a lost attempt's files must be seen to happen: without the grant it cannot, and is logged."""
    # GIVEN a loader that may not delete, losing one commit race
    _race_once(monkeypatch)

    # WHEN the file runs
    execution = deployed.run(deployed.pipeline.upload(POSTS_CSV))

    # THEN the load still succeeds, but the lost attempt's files stay in S3, and the loader said why
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert deployed.warehouse_files() - deployed.referenced_files()
    assert any("written by a lost commit attempt" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("dropped", [(LOAD, "s3:DeleteObject", "/warehouse/*")], ids=["loader-without-delete"])
def test_without_delete_maintain_fails_instead_of_reporting_deletes(deployed: Deployed, dropped: Dropped) -> None:
    # GIVEN two loads, and the loader's grants without s3:DeleteObject
    for sample in (POSTS_CSV, POSTS_XLSX):
        assert deployed.run(deployed.pipeline.upload(sample))["status"] == "SUCCEEDED"

    # WHEN maintain runs with them
    # THEN it fails on the first delete instead of claiming files deleted that are still there
    with acting_as(deployed.keys[LOAD]), pytest.raises(OSError, match="ACCESS_DENIED during DeleteObject"):
        _maintain_posts_fully()
