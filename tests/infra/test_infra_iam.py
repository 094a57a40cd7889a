"""Least privilege: each stage function may do exactly what its stage needs, and nothing else."""

from __future__ import annotations

import pytest
from infra_support import Synth

from icegate.constants import (
    DEAD_LETTER,
    DLQ_PREFIX,
    HANDLERS,
    LEDGER_TABLE,
    LOAD,
    PARSE,
    PROCESSING_PREFIX,
    REPORTS_PREFIX,
    SCORE,
    VALIDATE,
    WAITING_FOLDER,
)

READ = {"s3:GetObject"}
READ_VERSIONS = {"s3:GetObject", "s3:GetObjectVersion"}
WRITE = {"s3:PutObject", "s3:AbortMultipartUpload"}
#: The loader deletes under warehouse/ (lost commit attempts, old metadata.json); the dead letter a rerun's
#: duplicate rejects and its own lost ledger commits.
DELETE = {"s3:DeleteObject"}
#: What pyiceberg's Glue catalog calls to load, create and commit; not CreateDatabase (the stack creates it).
GLUE = {"glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"}
GLUE_READ = {"glue:GetDatabase", "glue:GetTable"}
LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def _pairs(actions: set[str], resources: list[str]) -> set[tuple[str, str]]:
    return {(action, resource) for action in actions for resource in resources}


def _expected_data_grants(synth: Synth) -> dict[str, set[tuple[str, str]]]:
    """What each stage needs, from the design (§8, §10), in the template's own references."""
    lake = f"<{synth.logical_id(synth.stack.storage.lake_bucket.bucket_arn)}.Arn>"
    landing = [synth.render(synth.stack.resolve(b.bucket_arn)) for b in synth.stack.storage.landing_buckets]
    landing_objects = [f"{arn}/*" for arn in landing]
    processing, warehouse, dlq = (f"{lake}/{p}/*" for p in (PROCESSING_PREFIX, "warehouse", DLQ_PREFIX))
    glue = "arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>"
    database = synth.stack.catalog.database_name
    # ListBucketVersions: the version a Backfill listed, found by its ETag when the key was re-uploaded since.
    read_landing = _pairs(READ_VERSIONS, landing_objects) | _pairs({"s3:ListBucket", "s3:ListBucketVersions"}, landing)
    catalog, tables = f"{glue}:catalog", f"{glue}:database/{database}"
    ledger_table = f"{glue}:table/{database}/{LEDGER_TABLE}"
    ledger_files = f"{lake}/warehouse/{database}.db/{LEDGER_TABLE}/*"
    reports = f"{lake}/{REPORTS_PREFIX}/*"
    return {
        # It answers a rerun of loaded content from the ledger, confirmed by the table's marker: read-only.
        PARSE: read_landing
        | _pairs(WRITE, [processing])
        | _pairs(GLUE_READ, [catalog, tables, f"{glue}:table/{database}/*"])
        | _pairs(READ, [warehouse])
        | _pairs({"s3:ListBucket"}, [lake]),
        # Rejected rows are kept under dlq/ (processing/ expires): the validator writes them, the scorer reads them.
        VALIDATE: _pairs(READ | WRITE, [processing]) | _pairs(WRITE, [dlq]),
        # The trend gate reads the ledger, and only the ledger.
        SCORE: _pairs(READ | WRITE, [processing])
        | _pairs(READ, [dlq])
        | _pairs(GLUE_READ, [catalog, tables, ledger_table])
        | _pairs(READ, [ledger_files])
        | _pairs({"s3:ListBucket"}, [lake]),
        # Group commit: it announces its file under processing/_waiting/ and removes the entries it committed.
        # The report: a HEAD tells its age (rebuilt only when older than the minimum interval), then a PUT.
        LOAD: _pairs(READ, [processing])
        | _pairs(WRITE | DELETE, [f"{lake}/{PROCESSING_PREFIX}/{WAITING_FOLDER}/*"])
        | _pairs(READ | WRITE, [reports])
        | _pairs(READ | WRITE | DELETE, [warehouse])
        | _pairs({"s3:ListBucket"}, [lake])
        | _pairs(GLUE, [f"{glue}:catalog", f"{glue}:database/{database}", f"{glue}:table/{database}/*"]),
        # A rerun failing the same way reuses the first entry (reads its index and error.json, 404 needs
        # ListBucket) and removes the rejected rows the validator filed again, and nothing else.
        DEAD_LETTER: read_landing
        | _pairs(READ, [processing])
        | _pairs(READ | WRITE, [dlq])
        | _pairs({"s3:ListBucket"}, [lake])
        | _pairs({"s3:DeleteObject"}, [f"{lake}/{DLQ_PREFIX}/*/rejected.parquet"])
        # A loader killed by its runtime left its file waiting: the dead letter of that load removes the entry.
        | _pairs({"s3:DeleteObject"}, [f"{lake}/{PROCESSING_PREFIX}/{WAITING_FOLDER}/*"])
        # It records the dead-lettered outcome in the ledger table (never a dataset's) and rewrites the report.
        | _pairs(GLUE, [catalog, tables, ledger_table])
        | _pairs(READ | WRITE | DELETE, [ledger_files])
        | _pairs(READ | WRITE, [reports]),
    }


def _data_grants(synth: Synth, stage: str) -> set[tuple[str, str]]:
    return {(a, r) for a, r in synth.grants(stage) if a not in LOGS | XRAY}


@pytest.mark.parametrize("stage", sorted(HANDLERS))
def test_stage_has_exactly_the_s3_and_glue_grants_it_needs(any_synth: Synth, stage: str) -> None:
    # GIVEN the design's list of what each stage reads and writes
    expected = _expected_data_grants(any_synth)[stage]
    # WHEN we collect every action/resource pair of the stage function's role
    actual = _data_grants(any_synth, stage)
    # THEN they are exactly those, no more (nothing to add) and no less (nothing forgotten)
    assert actual == expected, f"extra: {sorted(actual - expected)}; missing: {sorted(expected - actual)}"


@pytest.mark.parametrize("stage", sorted(HANDLERS))
def test_stage_logs_only_to_its_own_log_group_and_traces(imported: Synth, stage: str) -> None:
    # GIVEN a stage function and its log group
    function = imported.doc["Resources"][imported.functions_by_stage[stage]]["Properties"]
    log_group = f"<{function['LoggingConfig']['LogGroup']['Ref']}.Arn>"
    # WHEN we collect its log and trace grants
    grants = {(a, r) for a, r in imported.grants(stage) if a in LOGS | XRAY}
    # THEN it may write to its own log group only, and send traces (which take no resource)
    assert grants == _pairs(LOGS, [log_group]) | _pairs(XRAY, ["*"])


def test_only_the_loader_can_write_the_warehouse_beyond_the_ledger(any_synth: Synth) -> None:
    # GIVEN the lake bucket
    lake = f"<{any_synth.logical_id(any_synth.stack.storage.lake_bucket.bucket_arn)}.Arn>"
    covering_warehouse = {"*", f"{lake}/*", f"{lake}/warehouse/*"}
    # WHEN we look for any write to the warehouse prefix, by any stage
    writers = {
        stage
        for stage in HANDLERS
        for action, resource in any_synth.grants(stage)
        if action in WRITE | {"s3:DeleteObject", "s3:*", "s3:Put*"} and resource in covering_warehouse
    }
    # THEN only the loader may
    assert writers == {LOAD}


def test_parser_cannot_write_warehouse_or_dlq(any_synth: Synth) -> None:
    # GIVEN the parser's grants
    written = {resource for action, resource in any_synth.grants(PARSE) if action in WRITE}
    # WHEN we look at what it may write
    # THEN that is processing/ only
    assert len(written) == 1
    (only,) = written
    assert only.endswith(f"/{PROCESSING_PREFIX}/*")
    assert not any(r.endswith(("/warehouse/*", f"/{DLQ_PREFIX}/*")) for r in written)


def test_no_function_role_has_wildcard_actions_or_unscoped_data_access(any_synth: Synth) -> None:
    # GIVEN every statement of every stage function's role
    for stage in HANDLERS:
        for statement in any_synth.function_statements(stage):
            # THEN no action is a wildcard, and "*" resources are for X-Ray only
            assert statement["Effect"] == "Allow"
            assert not any("*" in action for action in statement["Action"]), (stage, statement)
            if "*" in statement["Resource"]:
                assert set(statement["Action"]) <= XRAY, (stage, statement)
            # AND Glue is never granted on '*', and only the loader writes tables other than the ledger
            if any(action.startswith("glue:") for action in statement["Action"]):
                assert "*" not in statement["Resource"]
                if set(statement["Action"]) - GLUE_READ and stage != LOAD:
                    assert all(
                        r.endswith(("catalog", f"/{LEDGER_TABLE}")) or ":database/" in r for r in statement["Resource"]
                    )


def test_state_machine_may_invoke_only_the_stage_functions(any_synth: Synth) -> None:
    # GIVEN the state machine's role
    role_id = any_synth.state_machine["RoleArn"]["Fn::GetAtt"][0]
    statements = any_synth.role_statements(role_id)
    # WHEN we collect its lambda:InvokeFunction resources
    invoked = {r for s in statements if "lambda:InvokeFunction" in s["Action"] for r in s["Resource"]}
    functions = {f"<{logical_id}.Arn>" for logical_id in any_synth.functions_by_stage.values()}
    # THEN they are the five stage functions (and their versions), nothing else
    assert invoked == functions | {f"{arn}:*" for arn in functions}


def test_eventbridge_may_start_only_this_state_machine(any_synth: Synth) -> None:
    # GIVEN the role EventBridge uses for the rule's target
    (rule,) = any_synth.resources("AWS::Events::Rule").values()
    (target,) = rule["Properties"]["Targets"]
    statements = any_synth.role_statements(target["RoleArn"]["Fn::GetAtt"][0])
    # WHEN we read it
    # THEN it may start executions of this state machine and do nothing else
    state_machine = any_synth.logical_id(any_synth.stack.pipeline.state_machine.state_machine_arn)
    assert [(s["Action"], s["Resource"]) for s in statements] == [(["states:StartExecution"], [f"<{state_machine}>"])]


def test_deletes_are_only_the_loaders_warehouse_files_and_the_dead_letters_duplicate_rejects(any_synth: Synth) -> None:
    # GIVEN every grant of every stage
    deletes = {
        (stage, resource)
        for stage in HANDLERS
        for action, resource in any_synth.grants(stage)
        if action.startswith("s3:Delete")
    }
    # WHEN we look at who may delete what
    # THEN it is the loader on warehouse/ objects (a delete marker in the versioned lake) and on the waiting
    # entries of the files it committed, and the dead letter on the rejected rows a rerun filed again before it
    # found the earlier entry and on the waiting entry of a killed loader; nothing else
    lake = f"<{any_synth.logical_id(any_synth.stack.storage.lake_bucket.bucket_arn)}.Arn>"
    database = any_synth.stack.catalog.database_name
    assert deletes == {
        (LOAD, f"{lake}/warehouse/*"),
        (LOAD, f"{lake}/{PROCESSING_PREFIX}/{WAITING_FOLDER}/*"),
        (DEAD_LETTER, f"{lake}/dlq/*/rejected.parquet"),
        (DEAD_LETTER, f"{lake}/{PROCESSING_PREFIX}/{WAITING_FOLDER}/*"),
        (DEAD_LETTER, f"{lake}/warehouse/{database}.db/{LEDGER_TABLE}/*"),
    }
    assert not any(action == "s3:DeleteObjectVersion" for stage in HANDLERS for action, _ in any_synth.grants(stage))
