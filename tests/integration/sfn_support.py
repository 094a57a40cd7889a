"""Executing the real state machine: the synthesised definition in moto's Step Functions interpreter.

moto's ASL interpreter (``execute_state_machine``) runs the definition; it invokes a Lambda task through
``lambda_eval_utils._invoke_lambda_function(parameters, region, state_credentials)``, which would call
moto's Lambda (Docker). :class:`LambdaDispatcher` replaces exactly that function: it calls the stage's
real handler in-process and answers as the Lambda ``Invoke`` API does — the result as ``Payload``, or
``FunctionError: Unhandled`` with the Python runtime's error document (``errorType`` = exception class
name). The interpreter then turns that into Error = errorType and Cause = the document, as AWS does, so
``ErrorEquals``, ``Retry`` and ``Catch`` see what they would see in the cloud.

S3 is moto; ``processing/`` and ``dlq/`` live in the moto lake bucket (``ICEGATE_LAKE_ROOT=s3://lake``).
The Iceberg catalog is a real ``SqlCatalog`` on SQLite with a ``file://`` warehouse, or — as deployed —
pyiceberg's Glue catalog (moto Glue) with the warehouse in the lake bucket, served over HTTP by moto's
``ThreadedMotoServer`` so that pyarrow's own S3 client reaches it (``aws_support``).
"""

from __future__ import annotations

import importlib
import json
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import boto3
import polars as pl
import pytest
from moto import mock_aws
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

from icegate.constants import HANDLERS
from icegate.settings import Settings, load_settings
from tests.conftest import SAMPLES
from tests.integration.aws_support import REGION, create_glue_database, glue_properties, s3_server

LANDING, LAKE = "landing", "lake"
#: How long an execution may run before the test gives up on it.
EXECUTION_TIMEOUT_SECONDS = 60.0
#: The tables' namespace (the default setting; the tests do not override it).
NAMESPACE = Settings().namespace


@dataclass(frozen=True)
class Definition:
    """The state machine as CloudFormation would create it, with placeholder ARNs for the functions."""

    asl: dict[str, Any]
    #: Lambda function name (the last part of the task's placeholder ARN) -> stage.
    stage_of_function: dict[str, str]
    #: Stage -> every statement of its function's role, resources rendered (``<LakeBucket….Arn>/warehouse/*``).
    statements: dict[str, list[dict[str, Any]]]
    #: Rendered bucket ARN (``<LakeBucket….Arn>``) -> which bucket it is: ``lake`` or ``landing``.
    buckets: dict[str, str]
    #: The EventBridge rule target's InputTransformer: S3 event -> execution input.
    input_transformer: dict[str, Any]
    #: Every statement of the scheduled maintainer's role, rendered like ``statements``.
    maintainer_statements: list[dict[str, Any]] = field(default_factory=list)
    #: The backfill state machine's definition (as moto's grammar takes it), and the placeholders in it
    #: for the ingestion state machine's ARN and the lake bucket's name.
    backfill_asl: dict[str, Any] = field(default_factory=dict)
    ingestion_arn_placeholder: str = ""
    lake_name_placeholder: str = ""


@cache
def synthesised_definition() -> Definition:
    """The definition from the real CDK stack (cdk.json defaults), synthesised once per process."""
    from tests.infra.infra_support import CREATED_CONTEXT, for_moto, placeholder_arn, substitute, synthesise

    with tempfile.TemporaryDirectory(prefix="icegate-sfn-synth-") as outdir:
        synth = synthesise(CREATED_CONTEXT, Path(outdir))
        resources = synth.doc["Resources"]
        stage_of_function = {
            placeholder_arn(logical_id, resources).rsplit(":", 1)[-1]: stage
            for stage, logical_id in synth.functions_by_stage.items()
        }
        storage = synth.stack.storage
        buckets = {synth.render(synth.stack.resolve(storage.lake_bucket.bucket_arn)): LAKE}
        buckets.update({synth.render(synth.stack.resolve(b.bucket_arn)): LANDING for b in storage.landing_buckets})
        return Definition(
            asl=synth.definition,
            stage_of_function=stage_of_function,
            statements={stage: synth.function_statements(stage) for stage in synth.functions_by_stage},
            buckets=buckets,
            input_transformer=synth.input_transformer,
            maintainer_statements=synth.role_statements(
                synth.doc["Resources"][synth.maintainer]["Properties"]["Role"]["Fn::GetAtt"][0]
            ),
            backfill_asl=for_moto(synth.backfill_definition),
            ingestion_arn_placeholder=substitute(
                synth.stack.resolve(synth.stack.pipeline.state_machine.state_machine_arn), resources
            ),
            lake_name_placeholder=substitute(synth.stack.resolve(storage.lake_bucket.bucket_name), resources),
        )


@dataclass
class FakeLambdaContext:
    """What Powertools reads from the Lambda context."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class LambdaDispatcher:
    """Stands in for the Lambda service: function ARN -> the stage's real handler, called in-process."""

    stage_of_function: dict[str, str]
    #: Stage of every invocation, in order.
    invocations: list[str] = field(default_factory=list)
    #: Exceptions to raise instead of calling a stage's handler, consumed one per invocation (fault injection).
    faults: dict[str, list[BaseException]] = field(default_factory=dict)
    #: Stage -> what the handler runs inside (e.g. the credentials of that function's role); default: nothing.
    invoke_as: Callable[[str], AbstractContextManager[object]] | None = None
    #: Stage -> how many of its next invocations the Lambda service refuses, its concurrency being in use
    #: (reserved concurrency in a burst); the handler does not run. See :meth:`_throttled`.
    throttles: dict[str, int] = field(default_factory=dict)
    #: Stage of every refused invocation, in order.
    throttled: list[str] = field(default_factory=list)

    def __call__(self, parameters: dict[str, Any], region: str, state_credentials: Any) -> dict[str, Any]:
        arn = str(parameters["FunctionName"])
        stage = self.stage_of_function[arn.rsplit(":", 1)[-1]]
        if self.throttles.get(stage, 0) > 0:
            self.throttles[stage] -= 1
            self.throttled.append(stage)
            return self._throttled()
        self.invocations.append(stage)
        event = json.loads(parameters["Payload"])
        module_name, _, function_name = HANDLERS[stage].rpartition(".")
        handler: Callable[[dict[str, Any], Any], Any] = getattr(importlib.import_module(module_name), function_name)
        context = FakeLambdaContext(function_name=arn.rsplit(":", 1)[-1], invoked_function_arn=arn)
        try:
            pending = self.faults.get(stage)
            if pending:
                raise pending.pop(0)
            with self.invoke_as(stage) if self.invoke_as else nullcontext():
                result = handler(event, context)
            # The Lambda service serialises the result: a payload that is not JSON fails here as it would there.
            payload = json.loads(json.dumps(result))
        except Exception as exc:
            # The Python runtime's error document for an unhandled exception.
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "ExecutedVersion": "$LATEST",
                "Payload": {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "requestId": context.aws_request_id,
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                },
            }
        return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": payload}

    @staticmethod
    def _throttled() -> dict[str, Any]:
        """A throttled invoke, as the state machine sees it: the error ``Lambda.TooManyRequestsException``.

        AWS answers the Invoke call with HTTP 429 and Step Functions names the task's error
        ``Lambda.TooManyRequestsException``. moto's interpreter names every ``ClientError`` of a task whose
        Resource is a function ARN ``Exception`` (``state_task_lambda.StateTaskLambda._from_error``), so
        raising the 429 here would test moto's naming, not our Retry. The error reaches the Retry under its
        AWS name through the error-document path instead; what runs is the definition's retrier for it.
        """
        return {
            "StatusCode": 200,
            "FunctionError": "Unhandled",
            "ExecutedVersion": "$LATEST",
            "Payload": {
                "errorMessage": "Rate Exceeded. (Reason: ReservedFunctionConcurrentInvocationLimitExceeded)",
                "errorType": "Lambda.TooManyRequestsException",
            },
        }


@dataclass
class CloudPipeline:
    """The deployed pipeline in miniature: landing and lake buckets, the state machine, the stage handlers."""

    s3: Any
    sfn: Any
    state_machine_arn: str
    dispatcher: LambdaDispatcher
    #: Seconds each Retry would have slept (the interpreter's sleep is replaced; see ``running_pipeline``).
    retry_waits: list[float]
    #: pyiceberg properties of the pipeline's catalog, for an independent reader.
    catalog_properties: dict[str, str]

    def upload(self, sample: str, key: str | None = None, *, body: bytes | None = None) -> dict[str, Any]:
        """Put a sample (or ``body`` under that name) into the landing bucket; return the execution input
        the EventBridge rule would build."""
        key = key or f"scrapes/{sample}"
        data = (SAMPLES / sample).read_bytes() if body is None else body
        put = self.s3.put_object(Bucket=LANDING, Key=key, Body=data)
        head = self.s3.head_object(Bucket=LANDING, Key=key, VersionId=put["VersionId"])
        # cdk/trigger_construct.execution_input(): S3's EventBridge event carries the etag unquoted.
        return {
            "bucket": LANDING,
            "key": key,
            "version_id": put["VersionId"],
            "etag": put["ETag"].strip('"'),
            "size": head["ContentLength"],
        }

    def execution_input(self, event: dict[str, Any]) -> dict[str, Any]:
        """The execution input the EventBridge rule builds from an S3 event, by its synthesised transformer."""
        from tests.infra.infra_support import transform_event

        result: dict[str, Any] = transform_event(synthesised_definition().input_transformer, event)
        return result

    def execute(self, execution_input: dict[str, Any]) -> dict[str, Any]:
        """Start an execution and wait for it to end; the ``describe_execution`` answer.

        The name is given explicitly (a UUID, as AWS generates for EventBridge's executions): moto's
        interpreter does not generate one and would name the execution ``None``.
        """
        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, name=str(uuid.uuid4()), input=json.dumps(execution_input)
        )["executionArn"]
        deadline = time.monotonic() + EXECUTION_TIMEOUT_SECONDS
        while True:
            described = self.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return dict(described)
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {arn} still RUNNING after {EXECUTION_TIMEOUT_SECONDS} s")
            time.sleep(0.02)

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        return list(self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"])

    def read_json(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=LAKE, Key=key)["Body"].read())

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=LAKE, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def dlq_entries(self) -> list[dict[str, Any]]:
        return [self.read_json(key) for key in self.keys("dlq/") if key.endswith("/error.json")]

    def catalog(self) -> Any:
        """A reader on the pipeline's catalog, straight from pyiceberg (independent of ``icegate.lake``)."""
        from pyiceberg.catalog import load_catalog

        return load_catalog(Settings().catalog_name, **self.catalog_properties)

    def table(self, name: str) -> pl.DataFrame:
        return table_frame(self.catalog(), name)

    def snapshot_count(self, name: str) -> int:
        catalog = self.catalog()
        if not catalog.table_exists((NAMESPACE, name)):
            return 0
        return len(catalog.load_table((NAMESPACE, name)).metadata.snapshots)


def sql_catalog(uri: str, warehouse: str) -> Any:
    """A reader on the pipeline's catalog, straight from pyiceberg (independent of ``icegate.lake``)."""
    from pyiceberg.catalog import load_catalog

    return load_catalog(Settings().catalog_name, type="sql", uri=uri, warehouse=warehouse)


def table_frame(catalog: Any, name: str) -> pl.DataFrame:
    frame = pl.from_arrow(catalog.load_table((NAMESPACE, name)).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


@contextmanager
def running_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: Literal["sql", "glue"] = "sql"
) -> Iterator[CloudPipeline]:
    """The synthesised state machine in moto (executing), its Lambdas dispatched to the real handlers.

    ``catalog="glue"`` is the deployed configuration: the functions' environment as the stack sets it
    (Glue catalog, ``s3://lake/warehouse``), the Glue database as the stack creates it, and S3 served by
    a moto server that boto3 and pyarrow both reach through ``ICEGATE_S3_ENDPOINT``.

    The interpreter's Retry sleeps ``random.uniform(0, interval)`` (JitterStrategy FULL) for real — up to
    5 s for our transient retrier — so its ``time.sleep`` is replaced by a recorder: the waits are
    asserted instead of endured.
    """
    with s3_server() if catalog == "glue" else nullcontext(None) as endpoint:
        monkeypatch.setenv("ICEGATE_LAKE_ROOT", f"s3://{LAKE}")
        if endpoint is None:
            warehouse = (tmp_path / "warehouse").as_uri()
            properties = {"type": "sql", "uri": f"sqlite:///{tmp_path / 'catalog.db'}", "warehouse": warehouse}
            monkeypatch.setenv("ICEGATE_WAREHOUSE", warehouse)
            monkeypatch.setenv("ICEGATE_CATALOG_URI", properties["uri"])
        else:
            properties = glue_properties(endpoint)
            monkeypatch.setenv("ICEGATE_CATALOG_TYPE", "glue")
            monkeypatch.setenv("ICEGATE_WAREHOUSE", f"s3://{LAKE}/warehouse")
            monkeypatch.setenv("ICEGATE_S3_ENDPOINT", endpoint)
            monkeypatch.setenv("ICEGATE_CATALOG_PROPERTIES", json.dumps({"s3.region": REGION}))
        load_settings.cache_clear()
        with _executing_state_machine(monkeypatch, endpoint, properties) as pipeline:
            yield pipeline


@contextmanager
def _executing_state_machine(
    monkeypatch: pytest.MonkeyPatch, s3_endpoint: str | None, catalog_properties: dict[str, str]
) -> Iterator[CloudPipeline]:
    from stages._powertools import metrics, storage

    storage.cache_clear()  # its S3 client must be made inside the mock
    # Executions run side by side here, their handlers in one process sharing Powertools' one metric set:
    # one handler's flush would clear another's mid-serialisation ("Must contain at least one metric").
    # On Lambda a process serves one invocation at a time, so this harness records no metrics.
    monkeypatch.setattr(metrics, "add_metric", lambda **_: None)
    monkeypatch.setattr(metrics, "add_dimension", lambda **_: None)
    definition = synthesised_definition()
    dispatcher = LambdaDispatcher(definition.stage_of_function)
    monkeypatch.setattr(lambda_eval_utils, "_invoke_lambda_function", dispatcher)
    retry_waits: list[float] = []
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=retry_waits.append))
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3", endpoint_url=s3_endpoint)
        for bucket in (LANDING, LAKE):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=LANDING, VersioningConfiguration={"Status": "Enabled"})
        if catalog_properties["type"] == "glue":
            s3.put_bucket_versioning(Bucket=LAKE, VersioningConfiguration={"Status": "Enabled"})
            create_glue_database(boto3.client("glue"), NAMESPACE, LAKE)
        sfn = boto3.client("stepfunctions")
        state_machine_arn = sfn.create_state_machine(
            name="icegate-pipeline",
            definition=json.dumps(definition.asl),
            roleArn="arn:aws:iam::123456789012:role/icegate-state-machine",
            type="STANDARD",
        )["stateMachineArn"]
        yield CloudPipeline(s3, sfn, state_machine_arn, dispatcher, retry_waits, catalog_properties)
    storage.cache_clear()
    load_settings.cache_clear()
