"""Scheduled maintenance: EventBridge Scheduler -> the maintainer Lambda, with only the grants maintain needs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from infra_support import IMPORTED_CONTEXT, Synth, synthesise

from cdk.config import MaintenanceSettings, PipelineConfig
from icegate.constants import REFRESH_REPORT, REPORTS_PREFIX, WAREHOUSE_PREFIX
from icegate.lake.maintain import MIN_ORPHAN_AGE, MaintenanceRequest

XRAY_AND_LOGS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "logs:CreateLogStream", "logs:PutLogEvents"}


def _schedule(synth: Synth) -> dict[str, Any]:
    """The nightly maintenance schedule (the other one refreshes the report)."""
    logical_id = synth.logical_id(synth.stack.maintenance.schedule.schedule_arn)
    return dict(synth.doc["Resources"][logical_id]["Properties"])


def test_the_schedule_invokes_the_maintainer_with_the_configured_request(any_synth: Synth) -> None:
    # GIVEN the stack's maintenance settings (cdk.json defaults, or context)
    settings = any_synth.stack.config.maintenance
    # WHEN we read the schedule
    schedule = _schedule(any_synth)
    # THEN it runs on the configured expression and time zone, always on, and targets the maintainer function
    assert schedule["ScheduleExpression"] == settings.schedule
    assert schedule["ScheduleExpressionTimezone"] == settings.schedule_timezone
    assert schedule["State"] == "ENABLED"
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": [any_synth.maintainer, "Arn"]}
    # AND its input is a request the maintainer's code accepts, with the configured ages
    request = MaintenanceRequest.from_dict(json.loads(schedule["Target"]["Input"]))
    assert request == MaintenanceRequest(
        expire_after_days=settings.expire_after_days,
        retain_last=settings.retain_last,
        orphan_after_days=settings.orphan_after_days,
        target_file_size_bytes=settings.target_file_size_mb * 1024 * 1024,
    )
    # AND the scheduler's own role may invoke only the maintainer (and its versions)
    statements = any_synth.role_statements(schedule["Target"]["RoleArn"]["Fn::GetAtt"][0])
    assert {(a, r) for s in statements for a in s["Action"] for r in s["Resource"]} == {
        ("lambda:InvokeFunction", f"<{any_synth.maintainer}.Arn>"),
        ("lambda:InvokeFunction", f"<{any_synth.maintainer}.Arn>:*"),
    }


def test_the_report_schedule_asks_the_maintainer_to_refresh_the_report(any_synth: Synth) -> None:
    # GIVEN the stack's maintenance settings
    settings = any_synth.stack.config.maintenance
    assert any_synth.stack.maintenance.report_schedule is not None
    logical_id = any_synth.logical_id(any_synth.stack.maintenance.report_schedule.schedule_arn)
    # WHEN we read the second schedule
    schedule = any_synth.doc["Resources"][logical_id]["Properties"]
    # THEN it invokes the maintainer every 15 minutes with the refresh event (no maintenance), and drops an
    # event the next run supersedes anyway
    assert schedule["ScheduleExpression"] == settings.report_schedule == "rate(15 minutes)"
    assert schedule["State"] == "ENABLED"
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": [any_synth.maintainer, "Arn"]}
    assert json.loads(schedule["Target"]["Input"]) == {REFRESH_REPORT: True}
    assert schedule["Target"]["RetryPolicy"]["MaximumEventAgeInSeconds"] == 15 * 60


def test_context_sets_the_schedule_ages_and_the_maintainer_size(tmp_path: Any) -> None:
    # GIVEN maintenance context given on the command line (strings)
    synth = synthesise(
        {
            **IMPORTED_CONTEXT,
            "maintenance": json.dumps(
                {
                    "schedule": "rate(6 hours)",
                    "expire_after_days": "2",
                    "orphan_after_days": 1,
                    "target_file_size_mb": 256,
                    "memory_mb": 6144,
                    "report_schedule": "",
                }
            ),
        },
        tmp_path,
    )
    # WHEN we read the schedule and the function
    schedule = _schedule(synth)
    function = synth.doc["Resources"][synth.maintainer]["Properties"]
    # THEN they follow it, unset values keep their defaults
    assert schedule["ScheduleExpression"] == "rate(6 hours)"
    assert json.loads(schedule["Target"]["Input"]) == {
        "expire_after_days": 2,
        "retain_last": MaintenanceSettings().retain_last,
        "orphan_after_days": 1,
        "target_file_size_bytes": 256 * 1024 * 1024,
    }
    assert function["MemorySize"] == 6144
    assert function["Timeout"] == MaintenanceSettings().timeout_seconds
    # AND one maintainer runs at a time (two would fight over the same commits)
    assert function["ReservedConcurrentExecutions"] == 1
    # AND with an empty report_schedule there is no report refresh schedule, only the maintenance one
    assert synth.stack.maintenance.report_schedule is None
    assert len(synth.resources("AWS::Scheduler::Schedule")) == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"orphan_after_days": 0}, "orphan_after_days", id="orphans-younger-than-a-day"),
        pytest.param({"schedule": "every night"}, "schedule", id="not-an-expression"),
        pytest.param({"retain_last": 0}, "retain_last", id="keep-no-snapshot"),
        pytest.param({"report_schedule": "every 15 minutes"}, "report_schedule", id="report-not-an-expression"),
        pytest.param({"cadence": "daily"}, "unknown keys", id="typo"),
    ],
)
def test_unsafe_or_malformed_maintenance_context_is_refused(values: dict[str, Any], message: str) -> None:
    # GIVEN maintenance context that would delete a running load's files, or cannot be scheduled
    from aws_cdk import App

    app = App(context={"maintenance": values})
    # WHEN the stack reads it
    # THEN synthesis stops with the key named
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_context(app.node)


def test_the_minimum_orphan_age_matches_the_library() -> None:
    # GIVEN cdk/'s copy of the minimum orphan age (cdk/ cannot import the library's data modules)
    from cdk.config import MIN_ORPHAN_DAYS

    # THEN it is the library's
    assert MIN_ORPHAN_AGE.days == MIN_ORPHAN_DAYS
    assert MIN_ORPHAN_AGE.seconds == 0


def test_the_maintainer_role_holds_exactly_what_maintain_needs(any_synth: Synth) -> None:
    # GIVEN the maintainer's role
    function = any_synth.doc["Resources"][any_synth.maintainer]["Properties"]
    statements = any_synth.role_statements(function["Role"]["Fn::GetAtt"][0])
    grants = {(a, r) for s in statements if s["Effect"] == "Allow" for a in s["Action"] for r in s["Resource"]}
    lake = f"<{any_synth.logical_id(any_synth.stack.storage.lake_bucket.bucket_arn)}.Arn>"
    glue = "arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>"
    namespace = any_synth.stack.config.namespace
    # WHEN we leave out its own logs and X-Ray
    data = {(a, r) for a, r in grants if a not in XRAY_AND_LOGS}
    # THEN it reads, writes and deletes under warehouse/ only, lists the lake, and lists/loads/commits the
    # database's tables: never CreateTable or CreateDatabase, nothing in processing/, dlq/ or landing;
    # and it reads and rewrites the HTML report (the report schedule), nothing else under reports/
    expected = {
        *((a, f"{lake}/{WAREHOUSE_PREFIX}/*") for a in ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")),
        *((a, f"{lake}/{REPORTS_PREFIX}/*") for a in ("s3:GetObject", "s3:PutObject")),
        ("s3:DeleteObject", f"{lake}/{WAREHOUSE_PREFIX}/*"),
        ("s3:ListBucket", lake),
        *(
            (a, r)
            for a in ("glue:GetDatabase", "glue:GetTables", "glue:GetTable", "glue:UpdateTable")
            for r in (f"{glue}:catalog", f"{glue}:database/{namespace}", f"{glue}:table/{namespace}/*")
        ),
    }
    assert data == expected
    # AND it reads the same settings as the stages (lake, Glue catalog, namespace)
    loader = any_synth.doc["Resources"][any_synth.functions_by_stage["load"]]["Properties"]
    assert function["Environment"] == loader["Environment"]
    assert function["ImageConfig"]["Command"] == ["stages.maintainer.handler"]
    assert function["Code"] == loader["Code"]


def test_the_maintainer_role_arn_is_an_output_for_lake_formation_grants(any_synth: Synth) -> None:
    # GIVEN the stack's outputs
    role_id = any_synth.doc["Outputs"]["MaintainerRoleArn"]["Value"]["Fn::GetAtt"][0]
    # THEN MaintainerRoleArn is the maintainer function's role
    function = any_synth.doc["Resources"][any_synth.maintainer]["Properties"]
    assert function["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_a_failed_maintenance_run_raises_an_alarm_to_the_topic(imported: Synth) -> None:
    # GIVEN the stack with an alarm topic in context
    maintainer = imported.maintainer
    # WHEN we look for the alarm on the maintainer's errors
    (alarm,) = [
        a["Properties"]
        for a in imported.resources("AWS::CloudWatch::Alarm").values()
        if {"Name": "FunctionName", "Value": {"Ref": maintainer}} in a["Properties"].get("Dimensions", [])
    ]
    # THEN one error raises it and notifies the topic (and its recovery too)
    assert alarm["MetricName"] == "Errors"
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [IMPORTED_CONTEXT["alarms"]["topic_arn"]]
    assert alarm["OKActions"] == [IMPORTED_CONTEXT["alarms"]["topic_arn"]]
