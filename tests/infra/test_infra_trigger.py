"""The EventBridge rule: which S3 events start an execution, with what input, and where failures go."""

from __future__ import annotations

import re
from typing import Any

from aws_cdk.assertions import Match
from infra_support import IMPORTED_CONTEXT, Synth, transform_event

from icegate.constants import SUPPORTED_SUFFIXES
from icegate.payloads import Job, SourceObject

#: An S3 "Object Created" event as EventBridge delivers it (trimmed to what the rule reads).
S3_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "123456789012",
    "time": "2026-01-13T17:53:19Z",
    "region": "eu-west-1",
    "resources": ["arn:aws:s3:::scraper-posts"],
    "detail": {
        "version": "0",
        "bucket": {"name": "scraper-posts"},
        "object": {
            "key": "post_results_20260113_175319.csv",
            "size": 48213,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            "sequencer": "00617F08299329D189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "reason": "PutObject",
    },
}


def _rule(synth: Synth) -> dict[str, Any]:
    (rule,) = synth.resources("AWS::Events::Rule").values()
    return dict(rule["Properties"])


def test_rule_matches_object_created_in_the_landing_buckets_with_supported_suffixes(imported: Synth) -> None:
    # GIVEN the rule of the stack with two imported landing buckets
    pattern = _rule(imported)["EventPattern"]
    # WHEN we read its event pattern
    # THEN it matches S3 "Object Created" events of exactly those buckets ...
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"]["name"] == IMPORTED_CONTEXT["landing_buckets"]
    # ... and only keys ending in a supported suffix, whatever their case
    assert pattern["detail"]["object"]["key"] == [{"suffix": {"equals-ignore-case": s}} for s in SUPPORTED_SUFFIXES]


def test_rule_matches_the_created_landing_bucket_by_reference(created: Synth) -> None:
    # GIVEN the default stack, whose landing bucket is created with a generated name
    (landing,) = created.stack.storage.landing_buckets
    # WHEN we read the rule's bucket filter
    names = _rule(created)["EventPattern"]["detail"]["bucket"]["name"]
    # THEN it refers to that bucket
    assert names == [{"Ref": created.logical_id(landing.bucket_arn)}]


def test_input_transformer_builds_the_source_object_with_a_numeric_size(imported: Synth) -> None:
    # GIVEN the rule's single target
    transformer = imported.input_transformer
    # WHEN EventBridge transforms an S3 event with it
    execution_input = transform_event(transformer, S3_EVENT)
    # THEN the execution input is exactly the SourceObject payload, size a number (not a quoted string)
    assert execution_input == {
        "bucket": "scraper-posts",
        "key": "post_results_20260113_175319.csv",
        "version_id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        "etag": "b1946ac92492d2347c6235b4d2611184",
        "size": 48213,
    }
    assert not re.search(r'"<[\w.-]+>"', transformer["InputTemplate"]), "placeholders must not be quoted"
    # AND the library reads it back as the run's source
    source = SourceObject.from_dict(execution_input)
    assert (source.size, source.version) == (48213, "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e")
    assert Job.from_dict({"source": execution_input, "run_id": "r1"}).source == source


def test_target_starts_the_state_machine_with_retries_and_a_dead_letter_queue(imported: Synth) -> None:
    # GIVEN the rule's target
    (target,) = _rule(imported)["Targets"]
    state_machine = imported.logical_id(imported.stack.pipeline.state_machine.state_machine_arn)
    queue = imported.logical_id(imported.stack.trigger.dead_letter_queue.queue_arn)
    # WHEN we read it
    # THEN it starts this state machine, retries for a day, then parks the event in the SQS queue
    assert target["Arn"] == {"Ref": state_machine}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 24 * 3600, "MaximumRetryAttempts": 185}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}


def test_dead_letter_queue_is_encrypted_ssl_only_and_writable_by_the_rule_only(imported: Synth) -> None:
    # GIVEN the SQS queue for undeliverable events
    queue = imported.logical_id(imported.stack.trigger.dead_letter_queue.queue_arn)
    rule = imported.logical_id(imported.stack.trigger.rule.rule_arn)
    # WHEN we read it and its policy
    # THEN it is encrypted (SSE-SQS: EventBridge can write to it) and keeps messages 14 days
    imported.template.has_resource_properties(
        "AWS::SQS::Queue", {"SqsManagedSseEnabled": True, "MessageRetentionPeriod": 14 * 24 * 3600}
    )
    # AND its policy denies plain HTTP and lets only this rule send to it
    imported.template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": queue}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": "sqs:SendMessage",
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule, "Arn"]}}},
                            }
                        ),
                    ]
                )
            },
        },
    )
