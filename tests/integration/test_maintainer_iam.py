"""The scheduled maintainer, as deployed: its real handler against a Glue-catalog table, with exactly its role.

The table is loaded by the executed ingestion state machine (``test_iam_enforced.deployed``: moto S3 over
HTTP, moto Glue, IAM enforced). The maintainer handler is then called as EventBridge Scheduler would call it,
with the access key of an IAM user holding exactly the maintainer role's statements from the synthesised
template. What moto checks is said in ``test_iam_enforced``: S3 actions against the exact bucket/key ARN,
Glue actions by action only (their resources are asserted in ``tests/infra/test_infra_maintenance.py``).
The negative controls take one statement's action away and watch the run fail, so these tests can fail.
"""

from __future__ import annotations

import boto3
import pytest

from icegate.constants import LEDGER_TABLE, REFRESH_REPORT, REPORTS_PREFIX
from icegate.report import REPORT_NAME
from stages.maintainer import handler as maintainer_handler
from tests.integration import test_iam_enforced
from tests.integration.aws_support import AccessKey, acting_as, create_principal, principal_policy
from tests.integration.sfn_support import LAKE, NAMESPACE, FakeLambdaContext, synthesised_definition
from tests.integration.test_iam_enforced import POSTS_CSV, POSTS_XLSX, Deployed

# The deployed pipeline with one IAM user per stage function, IAM enforced (and its no-drop default).
deployed = test_iam_enforced.deployed
dropped = test_iam_enforced.dropped

#: Expire everything but the newest snapshot; orphans at the schedule's minimum age (a day: none here).
EVENT = {"expire_after_days": 0, "retain_last": 1, "orphan_after_days": 1}
#: What the report schedule sends.
REFRESH_EVENT = {REFRESH_REPORT: True}
REPORT_KEY = f"{REPORTS_PREFIX}/{REPORT_NAME}"
CONTEXT = FakeLambdaContext(
    function_name="maintainer", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:maintainer"
)


def _maintainer_key(without: str | None = None) -> AccessKey:
    """An IAM user with the maintainer role's statements (one action taken out, for a negative control)."""
    definition = synthesised_definition()
    statements = [
        {**s, "Action": [a for a in s["Action"] if a != without]}
        for s in definition.maintainer_statements
        if [a for a in s["Action"] if a != without]
    ]
    return create_principal(boto3.client("iam"), "icegate-maintainer", principal_policy(statements, definition.buckets))


def _two_loads(pipeline: Deployed) -> None:
    for sample in (POSTS_CSV, POSTS_XLSX):
        assert pipeline.run(pipeline.pipeline.upload(sample))["status"] == "SUCCEEDED"


def test_the_maintainer_maintains_every_glue_table_with_its_role_only(deployed: Deployed) -> None:
    # GIVEN a posts table loaded twice (two small files, two snapshots) in the Glue database
    _two_loads(deployed)
    rows_before = deployed.pipeline.table("posts").sort("post_id", "creator")
    files_before = deployed.warehouse_files()
    key = _maintainer_key()

    # WHEN the scheduled maintainer runs with its own role's statements
    with acting_as(key):
        result = maintainer_handler(EVENT, CONTEXT)

    # THEN it found the tables through the catalog (glue:GetTables) — the dataset's and the ledger, which
    # grows by a file per outcome — compacted the dataset's and expired its old snapshot
    reports = {report["table"]: report for report in result["tables"]}
    assert set(reports) == {f"{NAMESPACE}.posts", f"{NAMESPACE}.{LEDGER_TABLE}"}
    report = reports[f"{NAMESPACE}.posts"]
    assert report["files_compacted"] >= 2
    assert report["files_written"] < report["files_compacted"]
    assert report["snapshots_expired"] >= 1
    assert report["files_deleted"] > 0
    # AND the files it deleted are gone from S3 (s3:DeleteObject on warehouse/), the rows are unchanged
    assert deployed.warehouse_files() == deployed.referenced_files()
    assert len(deployed.warehouse_files()) < len(files_before)
    assert deployed.pipeline.table("posts").sort("post_id", "creator").equals(rows_before)


@pytest.mark.parametrize(
    ("without", "failure"),
    [
        pytest.param("glue:GetTables", r"(?i)access.?denied", id="without-listing-tables"),
        pytest.param("s3:DeleteObject", r"ACCESS_DENIED during DeleteObject", id="without-delete"),
        pytest.param("glue:UpdateTable", r"(?i)access.?denied", id="without-commit"),
    ],
)
def test_without_a_needed_statement_the_maintainer_fails_and_says_so(
    deployed: Deployed, without: str, failure: str
) -> None:
    # GIVEN a loaded table, and the maintainer's statements less one action
    _two_loads(deployed)
    key = _maintainer_key(without=without)

    # WHEN the maintainer runs
    # THEN it fails (the schedule's run is an error, alarmed and retried) naming the denial
    with acting_as(key), pytest.raises(Exception, match=failure):
        maintainer_handler(EVENT, CONTEXT)


def test_the_report_schedule_refreshes_the_report_with_the_maintainers_role_only(deployed: Deployed) -> None:
    # GIVEN loaded files, and no report in the lake (as after a burst whose last publications were skipped,
    # or before the first one)
    _two_loads(deployed)
    s3 = deployed.pipeline.s3
    s3.delete_object(Bucket=LAKE, Key=REPORT_KEY)
    key = _maintainer_key()

    # WHEN the report schedule's event reaches the maintainer, with its own role's statements
    with acting_as(key):
        first = maintainer_handler(REFRESH_EVENT, CONTEXT)
        # AND again, with nothing new in the ledger
        second = maintainer_handler(REFRESH_EVENT, CONTEXT)

    # THEN the first run publishes the report, drawn from the ledger's current snapshot (s3:PutObject on reports/)
    assert first == {"report": f"s3://{LAKE}/{REPORT_KEY}"}
    page = s3.get_object(Bucket=LAKE, Key=REPORT_KEY)["Body"].read().decode()
    snapshot = deployed.pipeline.catalog().load_table((NAMESPACE, LEDGER_TABLE)).metadata.current_snapshot_id
    assert f'<meta name="icegate-ledger-snapshot" content="{snapshot}">' in page
    assert "post_results" in page
    # AND the second only reads it back (s3:GetObject on reports/) and finds it current
    assert second == {"report": None}
