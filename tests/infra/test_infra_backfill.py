"""The backfill state machine: a Distributed Map over a landing bucket's listing, each file through ingestion."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from cfnlint.api import ManualArgs, lint_file
from infra_support import IMPORTED_CONTEXT, Synth, for_moto, synthesise

from icegate.constants import BACKFILL_RESULTS_PREFIX, SUPPORTED_SUFFIXES


def _map(synth: Synth) -> dict[str, Any]:
    definition = synth.backfill_definition
    (state,) = [s for s in definition["States"].values() if s["Type"] == "Map"]
    return dict(state)


def test_backfill_is_a_distributed_map_listing_the_input_bucket_and_prefix(any_synth: Synth) -> None:
    # GIVEN the backfill definition
    definition = any_synth.backfill_definition
    state = _map(any_synth)
    # WHEN we read its start and its Map state
    # THEN an input without a prefix lists the whole bucket; with one, only that prefix
    start = definition["States"][definition["StartAt"]]
    assert start["Type"] == "Choice"
    assert start["Choices"][0]["Variable"] == "$.prefix"
    assert start["Choices"][0]["IsPresent"] is True
    assert definition["States"][start["Default"]]["Parameters"] == {"bucket.$": "$.bucket", "prefix": ""}
    # AND the Map is distributed, reading the bucket's listing (ListObjectsV2) at the input's bucket and prefix
    assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert state["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:listObjectsV2",
        "Parameters": {"Bucket.$": "$.bucket", "Prefix.$": "$.prefix"},
    }
    # AND each listed object becomes the ingestion input the S3 trigger would build (no version id in a listing),
    # its key marked raw: a listing's key is the key itself, which the parser must not URL-decode as an event's
    assert state["ItemSelector"] == {
        "bucket.$": "$.bucket",
        "key.$": "$$.Map.Item.Value.Key",
        "raw_key": True,
        "etag.$": "$$.Map.Item.Value.Etag",
        "size.$": "$$.Map.Item.Value.Size",
    }


def test_backfill_concurrency_failures_and_results_follow_context(tmp_path: Path) -> None:
    # GIVEN backfill context from the command line
    synth = synthesise(
        {**IMPORTED_CONTEXT, "backfill": json.dumps({"max_concurrency": "4", "tolerated_failure_percentage": 25})},
        tmp_path,
    )
    state = _map(synth)
    # THEN the Map runs 4 files at once and stops when more than 25 % failed
    assert state["MaxConcurrency"] == 4
    assert state["ToleratedFailurePercentage"] == 25
    # AND writes its results into the lake bucket under backfill-results/
    lake_id = synth.logical_id(synth.stack.storage.lake_bucket.bucket_arn)
    assert state["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        # The lake bucket's Ref (its name), as the placeholder substitution renders it
        "Parameters": {"Bucket": lake_id.lower(), "Prefix": BACKFILL_RESULTS_PREFIX},
    }


def test_each_supported_file_starts_the_ingestion_state_machine_and_waits(any_synth: Synth) -> None:
    # GIVEN the Map's item processor
    processor = _map(any_synth)["ItemProcessor"]
    states = processor["States"]
    # WHEN we follow a key through it
    choice = states[processor["StartAt"]]
    (rule,) = choice["Choices"]
    patterns = {c["StringMatches"] for c in rule["Or"]}
    # THEN only the trigger's suffixes, in any case, go on to ingestion; others end as skipped
    assert {p.lower() for p in patterns} == {f"*{s}" for s in SUPPORTED_SUFFIXES}
    assert {c["Variable"] for c in rule["Or"]} == {"$.key"}
    assert states[choice["Default"]]["Type"] == "Pass"
    ingest = states[rule["Next"]]
    # AND ingestion is a child execution of the ingestion state machine, awaited (.sync:2), with the item as input
    ingestion_id = any_synth.logical_id(any_synth.stack.pipeline.state_machine.state_machine_arn)
    assert ingest["Resource"] == "arn:aws:states:::states:startExecution.sync:2"
    assert ingest["Parameters"] == {
        "StateMachineArn": f"arn:aws:states:eu-west-1:123456789012:stateMachine:{ingestion_id}",
        "Input.$": "$",
    }
    # AND a start refused under load is retried, but a failed file (dead-lettered) is not
    (retry,) = ingest["Retry"]
    assert "States.TaskFailed" not in retry["ErrorEquals"]
    assert "StepFunctions.ExecutionLimitExceededException" in retry["ErrorEquals"]


#: Keys as a landing bucket may hold them (mixed-case suffixes, unsupported ones, near misses).
KEYS = (
    "2025/post_results_a.csv",
    "2025/post_results_a.CSV",
    "2025/post_results_a.Csv",
    "2025/post_results_a.cSv",
    "2025/post_results_a.Parquet",
    "2025/post_results_a.NDJson",
    "2025/post_results_a.JsonL",
    "2025/post_results_a.csv.Gz",
    "2025/post_results_a.xLsX",
    "2025/README.txt",
    "2025/post_results_a.csvx",
    "2025/post_results_a_csv",
    "2025/post_results_a.xls",
)


def _trigger_takes(synth: Synth, key: str) -> bool:
    """Whether the synthesised EventBridge rule matches an S3 event for ``key`` (its key filter)."""
    (rule,) = synth.resources("AWS::Events::Rule").values()
    filters = rule["Properties"]["EventPattern"]["detail"]["object"]["key"]
    assert all(set(f) == {"suffix"} and set(f["suffix"]) == {"equals-ignore-case"} for f in filters)
    return any(key.lower().endswith(f["suffix"]["equals-ignore-case"].lower()) for f in filters)


def test_the_backfill_takes_exactly_the_keys_the_trigger_takes(any_synth: Synth) -> None:
    # GIVEN the item processor's suffix Choice (StringMatches: case-sensitive, '*' the only wildcard)
    processor = _map(any_synth)["ItemProcessor"]
    (rule,) = processor["States"][processor["StartAt"]]["Choices"]
    patterns = [c["StringMatches"] for c in rule["Or"]]

    # WHEN each key is matched as Step Functions matches it
    taken = {key: any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns) for key in KEYS}

    # THEN the backfill runs exactly the keys the S3 trigger would (mixed case too), and skips the others
    assert taken == {key: _trigger_takes(any_synth, key) for key in KEYS}
    assert sum(taken.values()) == 9
    # AND no pattern holds a character StringMatches would read as anything but itself
    assert not [p for p in patterns if set(p[1:]) & set("*\\?[]")]


def test_backfill_role_lists_only_landing_buckets_starts_only_ingestion_writes_only_results(any_synth: Synth) -> None:
    # GIVEN the backfill state machine's role
    role_id = any_synth.backfill_state_machine["RoleArn"]["Fn::GetAtt"][0]
    grants = {
        (a, r)
        for s in any_synth.role_statements(role_id)
        if s["Effect"] == "Allow"
        for a in s["Action"]
        for r in s["Resource"]
    }
    landing = {any_synth.render(any_synth.stack.resolve(b.bucket_arn)) for b in any_synth.stack.storage.landing_buckets}
    lake = f"<{any_synth.logical_id(any_synth.stack.storage.lake_bucket.bucket_arn)}.Arn>"
    ingestion = f"<{any_synth.logical_id(any_synth.stack.pipeline.state_machine.state_machine_arn)}>"
    # THEN S3 access is: list the landing buckets, write (and read back) results under backfill-results/
    s3 = {(a, r) for a, r in grants if a.startswith("s3:")}
    assert s3 == {("s3:ListBucket", arn) for arn in landing} | {
        (a, f"{lake}/{BACKFILL_RESULTS_PREFIX}/*")
        for a in ("s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload")
    }
    # AND it may start the ingestion state machine and itself (the map's children), nothing else
    started = {r for a, r in grants if a == "states:StartExecution"}
    backfill = f"<{any_synth.logical_id(any_synth.stack.backfill.state_machine.state_machine_arn)}>"
    assert started == {ingestion, backfill}
    # AND it never reads landing objects or the warehouse itself (the child executions' stages do)
    assert not any(a in ("s3:GetObject", "s3:PutObject") and "warehouse" in r for a, r in grants)
    assert not any(a == "s3:GetObject" and r.startswith(tuple(landing)) for a, r in grants)


def test_backfill_is_standard_logged_traced_and_its_definition_passes_cfn_lint(imported: Synth, tmp_path: Path) -> None:
    # GIVEN the backfill state machine
    props = imported.backfill_state_machine
    # THEN it logs everything and traces
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["TracingConfiguration"] == {"Enabled": True}
    # AND its definition, with placeholder ARNs, passes cfn-lint (which cannot see into the Fn::Join form)
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Backfill": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "Definition": imported.backfill_definition,
                    "RoleArn": "arn:aws:iam::123456789012:role/placeholder",
                    "StateMachineType": "STANDARD",
                },
            }
        },
    }
    path = tmp_path / "backfill.json"
    path.write_text(json.dumps(template))
    assert [str(m) for m in lint_file(path, config=ManualArgs(regions=["eu-west-1", "us-east-1"]))] == []


def test_moto_parses_the_backfill_definition(imported: Synth) -> None:
    # GIVEN the backfill definition (what tests/integration/test_backfill.py executes)
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    # WHEN moto's ASL parser reads it (its one grammar gap adapted: an integer ToleratedFailurePercentage)
    program, _ = AmazonStateLanguageParser.parse(json.dumps(for_moto(imported.backfill_definition)))
    # THEN it is accepted (Distributed Map, ItemReader, ItemSelector, ResultWriter, startExecution.sync:2)
    assert program is not None
