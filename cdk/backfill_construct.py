"""Backfill: the files already in a landing bucket (S3 events fire only for new objects), run through ingestion.

A second Standard state machine, one Distributed Map state: its ``ItemReader`` lists the bucket and prefix
of the execution input (``s3:listObjectsV2``, paginated by Step Functions), its ``ItemSelector`` turns each
object into the ingestion state machine's input ``{bucket, key, raw_key: true, etag, size}`` (a listed key is
not URL-encoded as an event's), a Choice skips keys without a supported suffix, and each remaining file runs
the ingestion state machine as a child execution (``states:startExecution.sync:2``), ``MaxConcurrency`` at a
time. Step Functions' ``ResultWriter`` writes the per-file results to
``s3://<lake>/backfill-results/<map run id>/``.

Idempotent by construction: a file already loaded ends its child execution as "already loaded" (the
loader's content-hash marker), so a backfill can be run again over the same prefix after an interruption.
Dead-lettered files fail their child execution; ``ToleratedFailurePercentage`` says how many may before
the backfill itself stops.

Written as the state's JSON (``CustomState``): CDK's ``DistributedMap`` (aws-cdk-lib 2.275) renders the
``S3ObjectsItemReader`` prefix as a fixed string (not from the input) and, for a bucket given by path,
grants ``s3:ListBucket`` on ``*``; here the role may list the landing buckets only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from aws_cdk import ArnFormat, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.config import BackfillSettings
from cdk.nag import default_policy, nag_resource, suppress
from icegate.constants import BACKFILL_RESULTS_PREFIX, SUPPORTED_SUFFIXES

#: What a child start may hit under a burst of starts; retried with backoff, never a failed child.
_START_ERRORS = ("StepFunctions.ExecutionLimitExceededException", "StepFunctions.SdkClientException")


def suffix_patterns() -> list[str]:
    """``StringMatches`` patterns for the supported suffixes in every spelling of their case.

    The trigger matches suffixes ignoring case (``.Csv`` is ingested), and a backfill must take the same keys.
    ``StringMatches`` is case-sensitive and JSONPath has no lower-casing, so each spelling is a pattern: 276
    of them, about 14 KB of the definition. In a fixed order, so that a synth never differs from the last.
    """
    spellings = (
        "".join(chars)
        for suffix in SUPPORTED_SUFFIXES
        for chars in itertools.product(*((ch.lower(), ch.upper()) if ch.isalpha() else (ch,) for ch in suffix))
    )
    return [f"*{spelling}" for spelling in dict.fromkeys(spellings)]


class BackfillConstruct(Construct):
    """The Backfill state machine and its role (list the landing buckets, start ingestion, write results)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        landing_buckets: Sequence[s3.IBucket],
        lake_bucket: s3.IBucket,
        ingestion: sfn.StateMachine,
        settings: BackfillSettings,
        log_retention: logs.RetentionDays,
        timeout: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self._ingestion = ingestion
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            # As the ingestion state machine's group: vended-logs prefix, kept, named after this stack instance.
            log_group_name=Fn.join(
                "",
                [f"/aws/vendedlogs/states/{stack.stack_name}-backfill-", Fn.select(2, Fn.split("/", stack.stack_id))],
            ),
            retention=log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        backfill = sfn.CustomState(
            self, "Backfill", state_json=self.map_state(lake_bucket.bucket_name, ingestion, settings)
        )
        whole_bucket = sfn.Pass(
            self,
            "WholeBucket",
            comment="No prefix given: the whole bucket.",
            parameters={"bucket.$": "$.bucket", "prefix": ""},
        )
        start = (
            sfn.Choice(self, "HasPrefix")
            .when(sfn.Condition.is_present("$.prefix"), backfill)
            .otherwise(whole_bucket.next(backfill))
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(start),
            timeout=timeout,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            comment="icegate backfill: every supported file under s3://<bucket>/<prefix> through the ingestion machine",
        )
        self._grant(landing_buckets, lake_bucket)

    @staticmethod
    def map_state(lake_bucket_name: str, ingestion: sfn.StateMachine, settings: BackfillSettings) -> dict[str, Any]:
        ingest = {
            "Type": "Task",
            "Comment": "One file through parse, validate, score, load (or dlq/); waits for it to end.",
            "Resource": f"arn:{Stack.of(ingestion).partition}:states:::states:startExecution.sync:2",
            "Parameters": {"StateMachineArn": ingestion.state_machine_arn, "Input.$": "$"},
            # The child's own output (counts, snapshot) is in its history; the results file needs only these.
            "ResultSelector": {"key.$": "$.Input.key", "execution.$": "$.ExecutionArn", "status.$": "$.Status"},
            "Retry": [
                {
                    "ErrorEquals": list(_START_ERRORS),
                    "IntervalSeconds": 2,
                    "BackoffRate": 2.0,
                    "MaxAttempts": 6,
                    "MaxDelaySeconds": 60,
                    "JitterStrategy": "FULL",
                }
            ],
            "End": True,
        }
        supported = {
            "Type": "Choice",
            "Comment": "Only the suffixes the S3 trigger accepts, in any case.",
            "Choices": [
                {
                    "Or": [{"Variable": "$.key", "StringMatches": pattern} for pattern in suffix_patterns()],
                    "Next": "Ingest",
                }
            ],
            "Default": "Skipped",
        }
        skipped = {
            "Type": "Pass",
            "Parameters": {"key.$": "$.key", "status": "SKIPPED_UNSUPPORTED_SUFFIX"},
            "End": True,
        }
        return {
            "Type": "Map",
            "Comment": "List the bucket's prefix and run each supported file through the ingestion state machine.",
            "Label": "Backfill",
            "ItemReader": {
                "Resource": f"arn:{Stack.of(ingestion).partition}:states:::s3:listObjectsV2",
                "Parameters": {"Bucket.$": "$.bucket", "Prefix.$": "$.prefix"},
            },
            # The ingestion input as the EventBridge rule builds it; a listing has no version id, so the
            # parser reads the current version (the etag still identifies it). A listing's key is the key
            # itself, not URL-encoded as an event's: raw_key stops the parser decoding it (a+b.csv is not a b.csv).
            "ItemSelector": {
                "bucket.$": "$.bucket",
                "key.$": "$$.Map.Item.Value.Key",
                "raw_key": True,
                "etag.$": "$$.Map.Item.Value.Etag",
                "size.$": "$$.Map.Item.Value.Size",
            },
            "ItemProcessor": {
                # Standard children: an ingestion run may take longer than Express's 5 minutes.
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "Supported",
                "States": {"Supported": supported, "Skipped": skipped, "Ingest": ingest},
            },
            "MaxConcurrency": settings.max_concurrency,
            "ToleratedFailurePercentage": settings.tolerated_failure_percentage,
            "ResultWriter": {
                "Resource": f"arn:{Stack.of(ingestion).partition}:states:::s3:putObject",
                "Parameters": {"Bucket": lake_bucket_name, "Prefix": BACKFILL_RESULTS_PREFIX},
            },
            "End": True,
        }

    def _grant(self, landing_buckets: Sequence[s3.IBucket], lake_bucket: s3.IBucket) -> None:
        stack = Stack.of(self)
        role = self.state_machine.role
        # ItemReader: list the landing buckets only (a backfill over any other bucket is refused).
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[b.bucket_arn for b in landing_buckets])
        )
        results = lake_bucket.arn_for_objects(f"{BACKFILL_RESULTS_PREFIX}/*")
        # ResultWriter writes (multipart for large runs) the manifest and result files.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
                resources=[results],
            )
        )
        ingestion_arn = self._ingestion.state_machine_arn
        ingestion_executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self._ingestion.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        rule = stack.format_arn(
            service="events", resource="rule", resource_name="StepFunctionsGetEventsForStepFunctionsExecutionRule"
        )
        role.add_to_principal_policy(iam.PolicyStatement(actions=["states:StartExecution"], resources=[ingestion_arn]))
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:StopExecution"], resources=[ingestion_executions]
            )
        )
        # .sync: Step Functions learns that a child ended through this managed EventBridge rule.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"], resources=[rule]
            )
        )
        # The Distributed Map starts its own child executions (one per batch of items) of this state machine.
        # Kept out of the default policy: the state machine depends on that one, and this names the machine.
        own_executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self.state_machine.state_machine_name}/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        map_policy = iam.Policy(
            self,
            "DistributedMapPolicy",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["states:StartExecution"], resources=[self.state_machine.state_machine_arn]
                ),
                iam.PolicyStatement(
                    actions=["states:DescribeExecution", "states:StopExecution"], resources=[own_executions]
                ),
            ],
        )
        self._suppress(role, map_policy, results, ingestion_executions, own_executions)

    def _suppress(
        self, role: iam.IRole, map_policy: iam.Policy, results: str, ingestion_executions: str, own_executions: str
    ) -> None:
        assert isinstance(role, iam.Role)
        policy = default_policy(role)
        suppress(
            policy,
            "AwsSolutions-IAM5",
            "Logging to CloudWatch Logs and X-Ray tracing do not support resource-level permissions; CDK grants "
            "them on '*'.",
            applies_to=["Resource::*"],
        )
        suppress(
            policy,
            "AwsSolutions-IAM5",
            "ResultWriter names its files by the map run id (backfill-results/<map run id>/...), known only at "
            "run time; ingestion executions are named by Step Functions, so Describe/Stop on them needs ':*'.",
            applies_to=[nag_resource(self, results), nag_resource(self, ingestion_executions)],
        )
        suppress(
            map_policy,
            "AwsSolutions-IAM5",
            "The Distributed Map's child executions are named <state machine>/<map run id>:<n> at run time.",
            applies_to=[nag_resource(self, own_executions)],
        )
