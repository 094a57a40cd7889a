"""The backfill state machine, executed: moto's Step Functions interpreter runs the synthesised definition.

What is executed (moto 5.2's interpreter, ``sfn_support``): the HasPrefix Choice and its default, the
Distributed Map with its S3 ``ItemReader`` (``s3:listObjectsV2`` against moto S3), the ``ItemSelector``
(``$$.Map.Item.Value`` and ``$``), the item processor's suffix Choice and its Skipped Pass, and each file's
child execution of the **real ingestion state machine** through ``states:startExecution.sync:2`` (moto starts
it, runs it with the stage handlers dispatched in-process, and the parent waits for it by
``DescribeExecution``), ``MaxConcurrency`` (moto's map workers), and ``ResultWriter`` (moto writes a
``manifest.json`` under ``backfill-results/<map run id>/``).

What is not, or differently:

- moto's ``ItemReader`` returns boto3's ``list_objects_v2`` ``Contents`` as they are (``ETag``, a datetime
  ``LastModified``; one page only), where AWS gives ``Etag``, an epoch ``LastModified`` and every page.
  :func:`aws_listing` gives moto's reader AWS's documented item shape and pagination; the rest is moto's.
- moto 5.2.5's ``states:startExecution`` integration passes the ASL parameters (``StateMachineArn``,
  ``Input``) to botocore unconverted, which refuses them (``KeyError: 'StateMachineArn'``), and returns the API's
  camelCase fields (``executionArn``) where AWS's integration returns ``ExecutionArn``/``Status``/``Output``.
  :func:`aws_sfn_integration` converts the top-level names both ways, as AWS's integration does; starting,
  waiting (``.sync:2``), the JSON-parsed ``Input``/``Output`` and failure as ``States.TaskFailed`` are moto's.
- moto does not generate a name for a child execution started without one (AWS does: a UUID); all children
  would share the ARN ``...:None``. :func:`named_children` names them with a UUID, as AWS does.
- ``ToleratedFailurePercentage`` is parsed but ignored by moto ("no effect on the program evaluation"), and
  moto's grammar only takes it as a decimal (``for_moto``): the threshold itself is not exercised here.
- moto's ``ResultWriter`` writes the manifest only, not the SUCCEEDED/FAILED result files.
- IAM of the backfill role is not enforced here (moto's interpreter does not check the state machine role);
  it is asserted on the template (``tests/infra/test_infra_backfill.py``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval import resource_eval_s3
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
    StateTaskServiceSfn,
)
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from icegate.constants import BACKFILL_RESULTS_PREFIX
from icegate.lake import loaded_snapshots
from tests.conftest import SAMPLES
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
#: 28 rows - 4 rejected - 1 duplicate key; the xlsx adds 5 new keys (see test_state_machine / test_iam_enforced).
POSTS_ROWS = 23 + 5
BACKFILL_TIMEOUT_SECONDS = 240.0


def aws_listing(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
    """ItemReader's ``listObjectsV2`` as AWS runs it: every page, items shaped as AWS documents them."""
    client = resource_eval_s3.ResourceEvalS3._get_s3_client(resource_runtime_part, state_credentials)
    parameters = env.stack.pop()
    items = [
        {
            "Etag": obj["ETag"],
            "Key": obj["Key"],
            "LastModified": int(obj["LastModified"].timestamp()),
            "Size": obj["Size"],
            "StorageClass": obj.get("StorageClass", "STANDARD"),
        }
        for page in client.get_paginator("list_objects_v2").paginate(**parameters)
        for obj in page.get("Contents", [])
    ]
    env.stack.append(items)


@pytest.fixture
def aws_sfn_integration(monkeypatch: pytest.MonkeyPatch) -> None:
    real_parameters = StateTaskServiceSfn._normalise_parameters

    def normalise_parameters(self: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        real_parameters(self, parameters, *args, **kwargs)  # moto's own: Input as a JSON string
        for name in list(parameters):
            parameters[name[0].lower() + name[1:]] = parameters.pop(name)

    def normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(response, dict):
            for name in list(response):
                response[name[0].upper() + name[1:]] = response.pop(name)

    monkeypatch.setattr(StateTaskServiceSfn, "_normalise_parameters", normalise_parameters)
    monkeypatch.setattr(StateTaskServiceSfn, "_normalise_response", normalise_response)


@pytest.fixture
def named_children(monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = StepFunctionsParserBackend.start_execution

    def start_execution(self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        return real_start(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    monkeypatch.setattr(StepFunctionsParserBackend, "start_execution", start_execution)


class Backfill:
    def __init__(self, pipeline: CloudPipeline) -> None:
        self.pipeline = pipeline
        definition = synthesised_definition()
        text = (
            json.dumps(definition.backfill_asl)
            .replace(definition.ingestion_arn_placeholder, pipeline.state_machine_arn)
            .replace(json.dumps(definition.lake_name_placeholder), json.dumps(LAKE))
        )
        self.asl = json.loads(text)
        self.arn = pipeline.sfn.create_state_machine(
            name="icegate-backfill",
            definition=text,
            roleArn="arn:aws:iam::123456789012:role/icegate-backfill",
            type="STANDARD",
        )["stateMachineArn"]

    def run(self, execution_input: dict[str, Any]) -> dict[str, Any]:
        sfn = self.pipeline.sfn
        arn = sfn.start_execution(stateMachineArn=self.arn, name=str(uuid.uuid4()), input=json.dumps(execution_input))[
            "executionArn"
        ]
        deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
        while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"backfill {arn} still RUNNING"
            time.sleep(0.1)
        return dict(described)

    def children(self) -> list[dict[str, Any]]:
        """Executions of the ingestion state machine, described."""
        sfn = self.pipeline.sfn
        listed = sfn.list_executions(stateMachineArn=self.pipeline.state_machine_arn)["executions"]
        return [sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]


@pytest.fixture
def backfill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named_children: None, aws_sfn_integration: None
) -> Iterator[Backfill]:
    monkeypatch.setattr(resource_eval_s3.ResourceEvalS3, "_handle_list_objects_v2", staticmethod(aws_listing))
    with running_pipeline(tmp_path, monkeypatch) as pipeline:
        yield Backfill(pipeline)
    boto3.DEFAULT_SESSION = None


def _history(backfill: Backfill) -> None:
    """Months of scrapes already in the landing bucket (no S3 event will ever fire for them)."""
    backfill.pipeline.upload(POSTS_CSV, key=f"history/2026/01/{POSTS_CSV}")
    backfill.pipeline.upload(POSTS_XLSX, key=f"history/2026/01/{POSTS_XLSX}")
    backfill.pipeline.upload(POSTS_CSV, key="history/2026/01/README.txt")  # not a supported suffix
    backfill.pipeline.upload(POSTS_CSV, key=f"elsewhere/{POSTS_CSV}")  # outside the prefix


def test_a_backfill_loads_every_supported_file_under_the_prefix_once(backfill: Backfill) -> None:
    # GIVEN history in the landing bucket: two supported files under the prefix, one unsupported, one outside
    _history(backfill)

    # WHEN the backfill runs over the prefix, as `aws stepfunctions start-execution --input` would start it
    execution = backfill.run({"bucket": LANDING, "prefix": "history/"})

    # THEN it succeeds, having started one ingestion execution per supported file under the prefix
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    children = backfill.children()
    inputs = sorted(json.loads(child["input"])["key"] for child in children)
    assert inputs == [f"history/2026/01/{POSTS_CSV}", f"history/2026/01/{POSTS_XLSX}"]
    assert {child["status"] for child in children} == {"SUCCEEDED"}
    # AND each child got the input the S3 trigger would give it (bucket, key, etag, size; no version id), its
    # key marked raw (a listing's key is not URL-encoded as an event's)
    sample = json.loads(children[0]["input"])
    assert set(sample) == {"bucket", "key", "raw_key", "etag", "size"}
    assert (sample["bucket"], sample["raw_key"]) == (LANDING, True)
    assert isinstance(sample["size"], int)
    # AND the table holds both files' rows, each key once
    posts = backfill.pipeline.table("posts")
    assert posts.height == POSTS_ROWS
    assert posts.select("post_id", "creator").is_duplicated().sum() == 0
    assert loads(backfill) == 2  # one snapshot each, or one for both when a loader grouped them
    # AND the results manifest is under backfill-results/ in the lake
    (manifest,) = [k for k in backfill.pipeline.keys(f"{BACKFILL_RESULTS_PREFIX}/") if k.endswith("manifest.json")]
    assert json.loads(backfill.pipeline.s3.get_object(Bucket=LAKE, Key=manifest)["Body"].read())["MapRunArn"]


def loads(backfill: Backfill) -> int:
    """Loads in the posts table's history: a group commit's snapshot counts once per file it loaded."""
    return len(list(loaded_snapshots(backfill.pipeline.catalog().load_table((NAMESPACE, "posts")))))


def test_a_rerun_of_the_backfill_loads_nothing_twice(backfill: Backfill) -> None:
    # GIVEN a backfill that already ran over the prefix (say it was interrupted and is started again)
    _history(backfill)
    assert backfill.run({"bucket": LANDING, "prefix": "history/"})["status"] == "SUCCEEDED"

    # WHEN it runs again over the same prefix
    again = backfill.run({"bucket": LANDING, "prefix": "history/"})

    # THEN it succeeds, every file's new ingestion run says "already loaded", and the table is unchanged
    assert again["status"] == "SUCCEEDED", again.get("cause")
    outputs = [json.loads(c["output"]) for c in backfill.children()]
    assert len(outputs) == 4
    assert sorted(o["load"]["already_loaded"] for o in outputs) == [False, False, True, True]
    assert backfill.pipeline.table("posts").height == POSTS_ROWS
    assert loads(backfill) == 2


def test_without_a_prefix_the_whole_bucket_is_backfilled(backfill: Backfill) -> None:
    # GIVEN files under two prefixes
    _history(backfill)

    # WHEN the backfill is started with the bucket only
    execution = backfill.run({"bucket": LANDING})

    # THEN every supported file of the bucket ran (the one outside history/ is the CSV again: already loaded)
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    keys = sorted(json.loads(c["input"])["key"] for c in backfill.children())
    assert keys == [f"elsewhere/{POSTS_CSV}", f"history/2026/01/{POSTS_CSV}", f"history/2026/01/{POSTS_XLSX}"]
    assert backfill.pipeline.table("posts").height == POSTS_ROWS


def test_a_key_with_a_plus_is_read_as_itself_beside_the_key_with_a_space(backfill: Backfill) -> None:
    # GIVEN two different files whose keys differ by '+' and ' ' (what URL-decoding would confuse)
    body = (SAMPLES / POSTS_CSV).read_bytes()
    backfill.pipeline.upload(POSTS_CSV, key="history/post_results_a b.csv", body=body)
    backfill.pipeline.upload(
        POSTS_CSV, key="history/post_results_a+b.csv", body=body.replace(b"C1a2B3c4D5e", b"Z" * 11)
    )

    # WHEN the backfill runs over them
    execution = backfill.run({"bucket": LANDING, "prefix": "history/"})

    # THEN each child read its own object: both loaded, neither "already loaded" as the other
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    outputs = {json.loads(c["input"])["key"]: json.loads(c["output"]) for c in backfill.children()}
    assert {key: out["source"]["key"] for key, out in outputs.items()} == {key: key for key in outputs}
    assert {out["load"]["already_loaded"] for out in outputs.values()} == {False}
    posts = backfill.pipeline.table("posts")
    assert set(posts["source_file"]) == {
        f"s3://{LANDING}/history/post_results_a b.csv",
        f"s3://{LANDING}/history/post_results_a+b.csv",
    }
    assert "Z" * 11 in posts["post_id"].to_list()


def test_a_key_with_a_mixed_case_suffix_is_backfilled_as_the_trigger_would_ingest_it(backfill: Backfill) -> None:
    # GIVEN a posts file whose suffix is in mixed case (the S3 trigger matches suffixes ignoring case), beside a
    # file of an unsupported suffix
    backfill.pipeline.upload(POSTS_CSV, key="history/post_results_20260113_175319.Csv")
    backfill.pipeline.upload(POSTS_CSV, key="history/README.TXT")

    # WHEN the backfill runs over them
    execution = backfill.run({"bucket": LANDING, "prefix": "history/"})

    # THEN the mixed-case file ran and loaded; the other one started no execution
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    (child,) = backfill.children()
    assert (json.loads(child["input"])["key"], child["status"]) == (
        "history/post_results_20260113_175319.Csv",
        "SUCCEEDED",
    )
    assert backfill.pipeline.table("posts").height == 23
