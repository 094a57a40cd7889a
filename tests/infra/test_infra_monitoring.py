"""Alarms and the dashboard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match
from infra_support import IMPORTED_CONTEXT, Synth, substitute

from icegate.constants import DEAD_LETTER, HANDLERS

TOPIC = IMPORTED_CONTEXT["alarms"]["topic_arn"]


#: Every alarm: the first occurrence in a 5-minute period (the context defaults); no data is quiet, not broken.
COMMON: dict[str, Any] = {
    "Threshold": 1,
    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    "EvaluationPeriods": 1,
    "Period": 300,
    "TreatMissingData": "notBreaching",
}


@pytest.mark.parametrize(
    ("metric", "statistic"),
    [("ExecutionsFailed", "Sum"), ("ExecutionsTimedOut", "Sum")],
)
def test_state_machine_alarms_notify_the_topic(imported: Synth, metric: str, statistic: str) -> None:
    # GIVEN context naming an SNS topic for alarms
    state_machine = imported.logical_id(imported.stack.pipeline.state_machine.state_machine_arn)
    # WHEN we look for the alarm on the state machine's metric
    # THEN it fires on the first occurrence and notifies the topic (and again when it clears)
    imported.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            **COMMON,
            "Namespace": "AWS/States",
            "MetricName": metric,
            "Statistic": statistic,
            "Dimensions": [{"Name": "StateMachineArn", "Value": {"Ref": state_machine}}],
            "AlarmActions": [TOPIC],
            "OKActions": [TOPIC],
        },
    )


@pytest.mark.parametrize("metric", ["Invocations", "Errors"])
def test_dead_letter_function_is_alarmed(imported: Synth, metric: str) -> None:
    # GIVEN the dead-letter function (Invocations = files dead-lettered; Errors = the DLQ path itself broke)
    function = imported.functions_by_stage[DEAD_LETTER]
    # WHEN we look for its alarms
    # THEN each fires on the first occurrence in a period
    imported.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            **COMMON,
            "Namespace": "AWS/Lambda",
            "MetricName": metric,
            "Statistic": "Sum",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function}}],
        },
    )


def test_undelivered_events_alarm_on_any_message_in_the_queue(imported: Synth) -> None:
    # GIVEN the SQS queue that holds events EventBridge could not deliver
    queue = imported.logical_id(imported.stack.trigger.dead_letter_queue.queue_arn)
    # WHEN we look for its alarm
    # THEN any visible message raises it
    imported.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            **COMMON,
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Statistic": "Maximum",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}],
        },
    )


def test_alarms_without_a_topic_only_change_state(created: Synth) -> None:
    # GIVEN the default context (no alarm topic)
    # WHEN we read the alarms
    # THEN there are six (five of the pipeline, one of the scheduled maintenance), none with actions
    alarms = created.resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 6
    created.template.all_resources_properties("AWS::CloudWatch::Alarm", {"AlarmActions": Match.absent()})


def test_dashboard_shows_executions_and_each_stage(imported: Synth) -> None:
    # GIVEN the dashboard
    (dashboard,) = imported.resources("AWS::CloudWatch::Dashboard").values()
    body = json.loads(substitute(dashboard["Properties"]["DashboardBody"], imported.doc["Resources"]))
    # WHEN we collect the metrics its widgets plot
    metrics = [m for w in body["widgets"] for m in w["properties"].get("metrics", [])]
    names = {(m[0], m[1]) for m in metrics}
    # THEN executions started / succeeded / failed, per-stage errors and duration, the DLQ figures are there
    for metric in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut"):
        assert ("AWS/States", metric) in names
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in names
    functions = {imported.functions_by_stage[stage].lower() for stage in HANDLERS}
    for metric in ("Errors", "Duration", "Throttles"):
        assert {m[3] for m in metrics if m[:2] == ["AWS/Lambda", metric]} == functions, metric
    dead_letter = imported.functions_by_stage[DEAD_LETTER].lower()
    assert ["AWS/Lambda", "Invocations", "FunctionName", dead_letter] in [m[:4] for m in metrics]
    titles = {w["properties"].get("title") for w in body["widgets"]}
    assert {"Executions", "Errors per stage", "Duration per stage (p95)", "Alarms"} <= titles
