"""The EventBridge rule that starts one execution per file landing in a landing bucket."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.nag import suppress
from icegate.constants import SUPPORTED_SUFFIXES


def execution_input() -> events.RuleTargetInput:
    """The execution input: the S3 object, as ``icegate.payloads.SourceObject`` reads it.

    EventBridge quotes the string values it substitutes and leaves numbers bare, so ``size`` stays a
    number. An unversioned bucket's event has no ``version-id``; the parser then identifies the upload
    by its etag.
    """
    return events.RuleTargetInput.from_object(
        {
            "bucket": events.EventField.from_path("$.detail.bucket.name"),
            "key": events.EventField.from_path("$.detail.object.key"),
            "version_id": events.EventField.from_path("$.detail.object.version-id"),
            "etag": events.EventField.from_path("$.detail.object.etag"),
            "size": events.EventField.from_path("$.detail.object.size"),
        }
    )


class TriggerConstruct(Construct):
    """S3 "Object Created" -> state machine, for supported suffixes in the landing buckets only.

    EventBridge cannot name the execution, so a duplicate S3 event (delivery is at least once) starts a
    second execution: idempotency lives in the loader (the source marker in the snapshot summary).
    Events that cannot be delivered after the retry policy land in an SQS queue (alarmed).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        landing_buckets: Sequence[s3.IBucket],
        state_machine: sfn.IStateMachine,
        max_event_age: Duration,
        retry_attempts: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "UndeliveredEvents",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # The longest SQS allows: time to find and fix whatever stopped delivery, then replay.
            retention_period=Duration.days(14),
        )
        suppress(
            self.dead_letter_queue,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue of the EventBridge target; it is alarmed on any "
            "visible message and read by an operator, so it needs no dead-letter queue of its own.",
        )
        self.rule = events.Rule(
            self,
            "ObjectCreated",
            description="icegate: start the ingestion state machine for each supported file in a landing bucket",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name for bucket in landing_buckets]},
                    # Case-insensitive, so POST_RESULTS.CSV is ingested (or dead-lettered), never ignored.
                    "object": {
                        "key": events.Match.any_of(
                            *(events.Match.suffix_equals_ignore_case(suffix) for suffix in SUPPORTED_SUFFIXES)
                        )
                    },
                },
            ),
        )
        self.rule.add_target(
            targets.SfnStateMachine(
                state_machine,
                input=execution_input(),
                dead_letter_queue=self.dead_letter_queue,
                max_event_age=max_event_age,
                retry_attempts=retry_attempts,
            )
        )
