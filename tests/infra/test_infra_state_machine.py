"""The state machine: its definition (parsed from the template), logging, tracing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from infra_support import Synth

from cdk.state_machine_construct import QUALITY_GATE_FAILED, TASK_NAMES
from icegate import errors
from icegate.constants import (
    DEAD_LETTER,
    GATE,
    LAMBDA_SERVICE_ERRORS,
    LAMBDA_THROTTLING_ERRORS,
    LOAD,
    PARSE,
    SCORE,
    TRANSIENT_ERRORS,
    VALIDATE,
)

STAGE_TASKS = [(PARSE, "Parse"), (VALIDATE, "Validate"), (SCORE, "Score"), (LOAD, "Load")]


def _next_states(state: dict[str, Any]) -> set[str]:
    found = {state["Next"]} if "Next" in state else set()
    found |= {c["Next"] for c in state.get("Catch", [])}
    found |= {c["Next"] for c in state.get("Choices", [])}
    if "Default" in state:
        found.add(state["Default"])
    return found


def test_state_machine_is_standard_logged_and_traced(imported: Synth) -> None:
    # GIVEN the state machine resource
    props = imported.state_machine
    log_group_id = imported.logical_id(imported.stack.pipeline.log_group.log_group_arn)
    # WHEN we read its configuration
    # THEN it is a Standard workflow (redrive needs one), logs everything with execution data, traces
    assert props["StateMachineType"] == "STANDARD"
    assert props["LoggingConfiguration"] == {
        "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": [log_group_id, "Arn"]}}}],
        "IncludeExecutionData": True,
        "Level": "ALL",
    }
    assert props["TracingConfiguration"] == {"Enabled": True}
    log_group = imported.doc["Resources"][log_group_id]["Properties"]
    assert imported.render(log_group["LogGroupName"]).startswith("/aws/vendedlogs/states/")
    assert log_group["RetentionInDays"] == 14
    # AND executions have a timeout
    assert imported.definition["TimeoutSeconds"] == 240 * 60


def test_prepare_wraps_the_object_as_source_and_names_the_run(imported: Synth) -> None:
    # GIVEN the definition
    definition = imported.definition
    # WHEN an execution starts
    prepare = definition["States"][definition["StartAt"]]
    # THEN the first state is a Pass that nests the S3 object under "source" and adds the run id
    assert definition["StartAt"] == "Prepare"
    assert prepare["Type"] == "Pass"
    assert prepare["Parameters"] == {"source.$": "$", "run_id.$": "$$.Execution.Name"}
    assert prepare["Next"] == "Parse"


def test_stages_run_in_order_and_load_ends_in_success(imported: Synth) -> None:
    # GIVEN the definition
    states = imported.definition["States"]
    # WHEN we follow the happy path
    # THEN Parse -> Validate -> Score -> Gate, and the gate's pass branch is Load -> Succeed
    assert [states[name]["Next"] for name in ("Parse", "Validate", "Score")] == ["Validate", "Score", "Gate"]
    assert states["Load"]["Next"] == "Done"
    assert states["Done"]["Type"] == "Succeed"


@pytest.mark.parametrize(("stage", "name"), [*STAGE_TASKS, (DEAD_LETTER, "DeadLetter")])
def test_each_task_invokes_its_stage_function_with_explicit_retries(imported: Synth, stage: str, name: str) -> None:
    # GIVEN a stage's task state
    task = imported.definition["States"][name]
    # WHEN we read it
    # THEN it invokes the stage's function directly, so the output is the function's payload only
    assert TASK_NAMES[stage] == name
    assert task["Type"] == "Task"
    assert task["Resource"].endswith(f":function:{imported.functions_by_stage[stage]}")
    assert "Parameters" not in task
    assert "OutputPath" not in task
    # AND it retries exactly: Lambda throttling, the Lambda service's other errors, then our transient errors,
    # with backoff + jitter (the budgets: tests/infra/test_infra_bursts.py)
    assert [r["ErrorEquals"] for r in task["Retry"]] == [
        list(LAMBDA_THROTTLING_ERRORS),
        list(LAMBDA_SERVICE_ERRORS),
        list(TRANSIENT_ERRORS),
    ]
    # AND the Lambda errors AWS raises under load are among them: the concurrency limit during a burst, and
    # the invoke call timing out
    assert task["Retry"][0]["ErrorEquals"] == ["Lambda.TooManyRequestsException"]
    assert "Lambda.ClientExecutionTimeoutException" in task["Retry"][1]["ErrorEquals"]
    assert {"CommitConflict", "StorageUnavailable", "CatalogUnavailable"} <= set(task["Retry"][2]["ErrorEquals"])
    for retrier in task["Retry"]:
        assert retrier["BackoffRate"] > 1
        assert retrier["JitterStrategy"] == "FULL"
        assert retrier["MaxAttempts"] >= 3
        assert retrier["MaxDelaySeconds"] >= retrier["IntervalSeconds"]


@pytest.mark.parametrize(("stage", "name"), STAGE_TASKS)
def test_each_stage_failure_is_caught_with_its_cause_and_marked(imported: Synth, stage: str, name: str) -> None:
    # GIVEN a stage's task state
    states = imported.definition["States"]
    # WHEN it fails with any error
    (catch,) = states[name]["Catch"]
    marker = states[catch["Next"]]
    # THEN the error and cause are kept at $.error (the input survives) ...
    assert catch["ErrorEquals"] == ["States.ALL"]
    assert catch["ResultPath"] == "$.error"
    # ... a Pass records the failed stage, and DeadLetter gets it all
    assert marker == {
        "Type": "Pass",
        "Comment": marker["Comment"],
        "Result": stage,
        "ResultPath": "$.failed_stage",
        "Next": "DeadLetter",
    }


def test_gate_loads_only_a_passing_score(imported: Synth) -> None:
    # GIVEN the Gate state
    gate = imported.definition["States"]["Gate"]
    # WHEN we read its choices
    first = gate["Choices"][0]
    # THEN only $.quality.passed == true leads to Load; everything else goes towards DeadLetter
    assert gate["Type"] == "Choice"
    assert first["Next"] == "Load"
    assert {"Variable": "$.quality.passed", "BooleanEquals": True} in first["And"]
    others = {c["Next"] for c in gate["Choices"][1:]} | {gate["Default"]}
    assert "Load" not in others


def test_gate_failure_reports_score_threshold_and_reason_then_dead_letters(imported: Synth) -> None:
    # GIVEN the branch a failing score takes
    states = imported.definition["States"]
    describe = states[imported.definition["States"]["Gate"]["Choices"][1]["Next"]]
    # WHEN it runs
    # THEN $.error names QualityGateFailed with a cause built from the quality summary
    assert describe["Type"] == "Pass"
    assert describe["ResultPath"] == "$.error"
    assert describe["Parameters"]["Error"] == QUALITY_GATE_FAILED
    # (the file first, as every other error's message begins, so the DLQ entry names it)
    assert describe["Parameters"]["Cause.$"] == (
        "States.Format('s3://{}/{}: quality gate failed: {}', $.source.bucket, $.source.key, $.quality.reason)"
    )
    # AND the failed stage is "gate", then DeadLetter
    marked = states[describe["Next"]]
    assert (marked["Result"], marked["ResultPath"], marked["Next"]) == (GATE, "$.failed_stage", "DeadLetter")
    # AND a summary without a score still reaches DeadLetter (a States.Format on a missing path would not)
    no_report = states[imported.definition["States"]["Gate"]["Default"]]
    assert no_report["Parameters"]["Error"] == QUALITY_GATE_FAILED
    assert no_report["Next"] == describe["Next"]


def test_dead_letter_always_ends_in_fail_with_the_original_error(imported: Synth) -> None:
    # GIVEN the DeadLetter task and the Fail state
    states = imported.definition["States"]
    dead_letter, fail = states["DeadLetter"], states["Fail"]
    # WHEN DeadLetter succeeds, or fails even after its retries
    (catch,) = dead_letter["Catch"]
    # THEN the execution fails either way (so Redrive / New execution work), keeping $.error intact
    assert dead_letter["Next"] == "Fail"
    assert (catch["ErrorEquals"], catch["Next"]) == (["States.ALL"], "Fail")
    assert catch["ResultPath"] not in ("$", "$.error", None)
    assert dead_letter["ResultPath"] not in ("$", "$.error", None)
    assert fail == {
        "Type": "Fail",
        "Comment": fail["Comment"],
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }


def test_every_state_is_reachable_and_every_path_ends_in_succeed_or_fail(imported: Synth) -> None:
    # GIVEN the definition as a graph
    states = imported.definition["States"]
    # WHEN we walk it from StartAt
    seen, todo = set(), [imported.definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_next_states(states[name]))
    # THEN every state is reachable, and the only terminal states are Done (Succeed) and Fail (Fail)
    assert seen == set(states)
    terminal = {name for name, state in states.items() if not _next_states(state)}
    assert {name: states[name]["Type"] for name in terminal} == {"Done": "Succeed", "Fail": "Fail"}


def test_error_names_match_the_library_error_classes() -> None:
    # GIVEN the names the state machine matches and raises
    # WHEN we compare them with icegate.errors
    # THEN the transient ones are TransientError classes and the gate's is the terminal QualityGateFailed
    for name in TRANSIENT_ERRORS:
        assert issubclass(getattr(errors, name), errors.TransientError)
    assert issubclass(getattr(errors, QUALITY_GATE_FAILED), errors.TerminalError)


def test_moto_step_functions_interpreter_parses_the_definition(imported: Synth) -> None:
    # GIVEN the synthesised definition with placeholder ARNs (what the integration tests execute)
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    # WHEN moto's ASL parser reads it
    program, _ = AmazonStateLanguageParser.parse(json.dumps(imported.definition))
    # THEN it is accepted (JitterStrategy, MaxDelaySeconds, ErrorPath/CausePath, States.Format included)
    assert program is not None
