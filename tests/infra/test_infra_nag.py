"""cdk-nag (AwsSolutions): no unsuppressed finding, and every suppression narrow and explained."""

from __future__ import annotations

import re
from typing import Any

from aws_cdk.assertions import Match
from infra_support import Synth

#: Actions that do not support resource-level permissions, so "*" is the only possible resource.
ACTIONS_WITHOUT_RESOURCES = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    # CDK's BucketNotifications handler (imported landing buckets only).
    "s3:PutBucketNotification",
}


def _suppressions(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical_id, rule)
        for logical_id, resource in synth.doc["Resources"].items()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]


def test_no_unsuppressed_aws_solutions_findings(any_synth: Synth) -> None:
    # GIVEN the stack synthesised with AwsSolutionsChecks
    # WHEN we collect cdk-nag's errors and warnings
    errors = any_synth.annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    warnings = any_synth.annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    # THEN there are none
    assert [f"{e.id}: {e.entry.data}" for e in errors] == []
    assert [f"{w.id}: {w.entry.data}" for w in warnings] == []


def test_suppressions_are_per_resource_with_a_rule_and_a_reason(any_synth: Synth) -> None:
    # GIVEN every cdk-nag suppression in the template
    suppressions = _suppressions(any_synth)
    # WHEN we check them
    # THEN none is stack-wide
    assert "cdk_nag" not in any_synth.doc.get("Metadata", {})
    assert suppressions
    for logical_id, rule in suppressions:
        # AND each names one AwsSolutions rule and says why in a sentence a reviewer can check
        assert re.fullmatch(r"AwsSolutions-[A-Z]+[0-9]+", rule["id"]), (logical_id, rule)
        assert len(rule["reason"]) >= 60, (logical_id, rule)
        # AND wildcard-permission suppressions name the exact findings they accept
        if rule["id"] in ("AwsSolutions-IAM5", "AwsSolutions-IAM4"):
            assert rule.get("applies_to"), (logical_id, rule)


def test_only_expected_rules_are_suppressed_and_only_where_expected(any_synth: Synth) -> None:
    # GIVEN the suppressions
    by_rule: dict[str, set[str]] = {}
    for logical_id, rule in _suppressions(any_synth):
        by_rule.setdefault(rule["id"], set()).add(logical_id)
    access_logs = any_synth.logical_id(any_synth.stack.storage.access_log_bucket.bucket_arn)
    queue = any_synth.logical_id(any_synth.stack.trigger.dead_letter_queue.queue_arn)
    # WHEN we compare them with the accepted exceptions
    # THEN S1 is only the access-log bucket, SQS3 only the queue that is itself a DLQ,
    # IAM4 only CDK's notifications handler, and the rest are IAM5 (checked below)
    assert by_rule.pop("AwsSolutions-S1") == {access_logs}
    assert by_rule.pop("AwsSolutions-SQS3") == {queue}
    assert all(i.startswith("BucketNotificationsHandler") for i in by_rule.pop("AwsSolutions-IAM4", set()))
    assert set(by_rule) == {"AwsSolutions-IAM5"}


def test_resource_star_is_only_accepted_for_actions_that_take_no_resource(any_synth: Synth) -> None:
    # GIVEN every IAM policy statement whose resource is "*"
    for logical_id, policy in any_synth.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if "*" not in resources:
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            # THEN its actions are ones IAM cannot scope to a resource
            assert set(actions) <= ACTIONS_WITHOUT_RESOURCES, (logical_id, statement)
