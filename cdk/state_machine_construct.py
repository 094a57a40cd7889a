"""The Step Functions state machine: Prepare -> Parse -> Validate -> Score -> Gate -> Load, or DeadLetter -> Fail."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cdk.nag import default_policy, nag_resource, suppress
from icegate.constants import (
    DEAD_LETTER,
    GATE,
    LAMBDA_SERVICE_ERRORS,
    LAMBDA_SERVICE_RETRY,
    LAMBDA_THROTTLING_ERRORS,
    LAMBDA_THROTTLING_RETRY,
    LOAD,
    PARSE,
    SCORE,
    TRANSIENT_ERRORS,
    TRANSIENT_RETRY,
    VALIDATE,
    RetryBudget,
)

#: Every task's retriers, in the order Step Functions tries them (the first whose ErrorEquals matches counts
#: its own attempts): throttling (the burst's queue: a long budget), the Lambda service's other errors (a
#: few minutes), our transient errors (``icegate.errors.TransientError``, the budget the local runner shares).
RETRIERS: tuple[tuple[tuple[str, ...], RetryBudget], ...] = (
    (LAMBDA_THROTTLING_ERRORS, LAMBDA_THROTTLING_RETRY),
    (LAMBDA_SERVICE_ERRORS, LAMBDA_SERVICE_RETRY),
    (TRANSIENT_ERRORS, TRANSIENT_RETRY),
)
#: ``icegate.errors.QualityGateFailed``: the error name the gate reports (cdk/ may not import icegate.errors).
QUALITY_GATE_FAILED = "QualityGateFailed"
#: Where a Catch puts the error ({"Error", "Cause"}): next to the state, so the cause is never lost.
ERROR_PATH = "$.error"
FAILED_STAGE_PATH = "$.failed_stage"

#: State name of each stage's task.
TASK_NAMES = {PARSE: "Parse", VALIDATE: "Validate", SCORE: "Score", LOAD: "Load", DEAD_LETTER: "DeadLetter"}


class StateMachineConstruct(Construct):
    """A Standard state machine whose every path ends in Succeed (loaded) or Fail (dead-lettered).

    The execution input is the S3 object ``{bucket, key, version_id, etag, size}``; ``Prepare`` turns it
    into ``{source: {...}, run_id: <execution name>}``, and each stage returns its input extended with
    its own result (``icegate.payloads``). A failed stage is caught with ``ResultPath: $.error`` (the
    state survives), marked with ``$.failed_stage`` and handed to DeadLetter, which copies the source to
    ``dlq/`` and writes ``error.json``; the execution then fails with the original error. New execution
    reruns such a file; a redrive would only re-enter Fail (it helps timed-out and aborted runs).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        log_retention: logs.RetentionDays,
        timeout: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        self._functions = functions
        stack = Stack.of(self)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            # The /aws/vendedlogs/ prefix keeps the account's CloudWatch Logs resource policy from growing
            # with every state machine (its size is capped). The group outlives the stack (the execution
            # history of dead-lettered files), so its name ends with the stack's own id: a stack deployed
            # again after `cdk destroy` creates a new group instead of failing on the one it left behind.
            log_group_name=Fn.join(
                "",
                [f"/aws/vendedlogs/states/{stack.stack_name}-pipeline-", Fn.select(2, Fn.split("/", stack.stack_id))],
            ),
            retention=log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(self._build_definition()),
            timeout=timeout,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            comment="icegate: quality-gated ingestion of one scraped file into Iceberg",
        )
        self._suppress_role_findings()

    def _build_definition(self) -> sfn.IChainable:
        fail = sfn.Fail(
            self,
            "Fail",
            comment="The file is in dlq/ with error.json; the execution fails with the original error.",
            error_path=f"{ERROR_PATH}.Error",
            cause_path=f"{ERROR_PATH}.Cause",
        )
        dead_letter = self._task(DEAD_LETTER, result_path="$.dead_letter")
        # If even the dead-letter copy fails, the execution must still end failed (and keep both errors).
        dead_letter.add_catch(fail, errors=[sfn.Errors.ALL], result_path="$.dead_letter_error")
        dead_letter.next(fail)

        prepare = sfn.Pass(
            self,
            "Prepare",
            comment="Wrap the S3 object as the run's source and name the run after the execution.",
            parameters={"source.$": "$", "run_id.$": "$$.Execution.Name"},
        )
        parse, validate, score, load = (self._task(stage) for stage in (PARSE, VALIDATE, SCORE, LOAD))
        for stage, task in ((PARSE, parse), (VALIDATE, validate), (SCORE, score), (LOAD, load)):
            task.add_catch(self._mark_failed(stage, dead_letter), errors=[sfn.Errors.ALL], result_path=ERROR_PATH)

        gate = sfn.Choice(self, "Gate", comment="Load only what the quality score lets through.")
        passed = sfn.Condition.and_(
            sfn.Condition.is_present("$.quality.passed"), sfn.Condition.boolean_equals("$.quality.passed", True)
        )
        has_report = sfn.Condition.and_(
            *(sfn.Condition.is_present(f"$.quality.{name}") for name in ("score", "threshold", "reason"))
        )
        rejected = sfn.Pass(
            self,
            "DescribeGateFailure",
            parameters={
                "Error": QUALITY_GATE_FAILED,
                # The reason states the score, threshold and floors that failed, after the file (the source's URI, as
                # every other error's message begins): the same words as the local runner.
                "Cause.$": "States.Format('s3://{}/{}: quality gate failed: {}', $.source.bucket, $.source.key, "
                "$.quality.reason)",
            },
            result_path=ERROR_PATH,
        )
        # Without a report the Format above would fail the execution with States.Runtime and skip the DLQ.
        no_report = sfn.Pass(
            self,
            "NoQualityReport",
            parameters={"Error": QUALITY_GATE_FAILED, "Cause": "the score stage returned no quality summary"},
            result_path=ERROR_PATH,
        )
        gate_failed = self._mark_failed(GATE, dead_letter)
        rejected.next(gate_failed)
        no_report.next(gate_failed)
        gate.when(passed, load).when(has_report, rejected).otherwise(no_report)
        load.next(sfn.Succeed(self, "Done", comment="The rows are committed (or were already)."))

        return prepare.next(parse).next(validate).next(score).next(gate)

    def _task(self, stage: str, *, result_path: str | None = None) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            TASK_NAMES[stage],
            lambda_function=self._functions[stage],
            # The function returns the whole next state; Step Functions' envelope (Payload, headers) is noise.
            payload_response_only=True,
            # Our own retriers below, so that the policy is visible and the same for every task.
            retry_on_service_exceptions=False,
            result_path=result_path,
        )
        for errors, budget in RETRIERS:
            task.add_retry(
                errors=list(errors),
                interval=Duration.seconds(budget.interval_seconds),
                max_attempts=budget.retries,
                backoff_rate=budget.backoff_rate,
                max_delay=Duration.seconds(budget.max_delay_seconds),
                # Full jitter: a burst's throttled tasks must not all come back in the same second.
                jitter_strategy=sfn.JitterType.FULL,
            )
        return task

    def _mark_failed(self, stage: str, dead_letter: tasks.LambdaInvoke) -> sfn.Pass:
        mark = sfn.Pass(
            self,
            f"{stage.capitalize()}Failed",
            comment=f"Record that the {stage} stage failed, for error.json.",
            result=sfn.Result.from_string(stage),
            result_path=FAILED_STAGE_PATH,
        )
        mark.next(dead_letter)
        return mark

    def _suppress_role_findings(self) -> None:
        policy = default_policy(self.state_machine.role)
        suppress(
            policy,
            "AwsSolutions-IAM5",
            "Logging to CloudWatch Logs (logs:CreateLogDelivery, GetLogDelivery, ..., DescribeLogGroups) and "
            "X-Ray tracing (xray:PutTraceSegments, ...) do not support resource-level permissions; CDK grants "
            "them on '*'.",
            applies_to=["Resource::*"],
            apply_to_children=True,
        )
        suppress(
            policy,
            "AwsSolutions-IAM5",
            "LambdaInvoke grants lambda:InvokeFunction on each stage function and its versions/aliases "
            "(<function ARN>:*); the state machine invokes only these five functions.",
            applies_to=[nag_resource(self, f"{fn.function_arn}:*") for fn in self._functions.values()],
            apply_to_children=True,
        )
