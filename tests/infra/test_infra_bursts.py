"""Bursts: a thousand files at once. The retriers' budgets, the loader's concurrency bound, and the settings
that size them (README "Bursts").

The target's retry policy and its SQS dead-letter queue are asserted in ``test_infra_trigger.py``, the alarm
on that queue in ``test_infra_monitoring.py`` and cdk-nag for every variant in ``test_infra_nag.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Capture, Match
from infra_support import CREATED_CONTEXT, REPO_ROOT, Synth, synthesise

from cdk.config import PipelineConfig
from cdk.state_machine_construct import RETRIERS, TASK_NAMES
from icegate.constants import (
    DEAD_LETTER,
    HANDLERS,
    LAMBDA_SERVICE_RETRY,
    LAMBDA_THROTTLING_ERRORS,
    LAMBDA_THROTTLING_RETRY,
    LOAD,
    TRANSIENT_ERRORS,
    TRANSIENT_RETRY,
    RetryBudget,
)
from icegate.settings import Settings

#: The stages that commit to shared tables (the datasets', the ledger), and the context key bounding each.
BOUNDED = {LOAD: "loader_concurrency", DEAD_LETTER: "dead_letter_concurrency"}


def _function(stage: str) -> dict[str, Any]:
    """Match a stage's function by its handler (the image's CMD)."""
    return {"ImageConfig": {"Command": [HANDLERS[stage]]}}


@pytest.mark.parametrize("name", sorted(TASK_NAMES.values()))
def test_every_task_retries_throttling_service_errors_and_transient_errors_on_their_budgets(
    any_synth: Synth, name: str
) -> None:
    # GIVEN a Lambda task of the ingestion state machine
    retriers = any_synth.definition["States"][name]["Retry"]
    # WHEN we read its retriers
    # THEN they are the three budgets of icegate.constants, in order, each with full jitter
    assert retriers == [
        {
            "ErrorEquals": list(errors),
            "IntervalSeconds": budget.interval_seconds,
            "MaxAttempts": budget.retries,
            "BackoffRate": budget.backoff_rate,
            "MaxDelaySeconds": budget.max_delay_seconds,
            "JitterStrategy": "FULL",
        }
        for errors, budget in RETRIERS
    ]
    # AND throttling is first and alone: a throttled task spends the burst budget, not the service errors'
    assert retriers[0]["ErrorEquals"] == list(LAMBDA_THROTTLING_ERRORS)
    assert retriers[-1]["ErrorEquals"] == list(TRANSIENT_ERRORS)


def test_the_throttling_budget_outlasts_draining_a_burst_through_the_bounded_loader() -> None:
    # GIVEN the documented burst: 1 000 files through the default 10 loaders at ~15 s per load
    drain_seconds = 1000 / PipelineConfig().loader_concurrency * 15
    # WHEN we compare it with what the throttling retrier rides out (full jitter: about half its ceilings)
    # THEN a throttled load waits longer than the burst takes to drain, with room to spare
    assert LAMBDA_THROTTLING_RETRY.expected_wait_seconds >= 2 * drain_seconds
    # AND the service errors get minutes, not seconds; the transient errors over a minute
    assert 3 * 60 <= LAMBDA_SERVICE_RETRY.expected_wait_seconds <= 10 * 60
    assert TRANSIENT_RETRY.expected_wait_seconds >= 60


@pytest.mark.parametrize(
    ("budget", "longest"),
    [
        pytest.param(RetryBudget(3, 2, 2.0, 60), 2 + 4 + 8, id="doubling"),
        pytest.param(RetryBudget(5, 2, 2.0, 10), 2 + 4 + 8 + 10 + 10, id="capped"),
        pytest.param(RetryBudget(0, 2, 2.0, 60), 0, id="no-retries"),
    ],
)
def test_a_budget_adds_up_its_capped_waits(budget: RetryBudget, longest: int) -> None:
    # GIVEN a retry budget WHEN we ask how long it waits at most THEN it adds the capped doubling waits
    assert budget.longest_wait_seconds == longest
    assert budget.expected_wait_seconds == longest / 2


def test_only_the_committing_stages_reserve_concurrency_by_default(created: Synth) -> None:
    # GIVEN the stack with the default context
    # WHEN we read the functions
    # THEN the loader and the dead-letter stage, which commit to shared tables, reserve the default, 10
    for stage, key in BOUNDED.items():
        assert getattr(PipelineConfig(), key) == 10
        created.template.has_resource_properties(
            "AWS::Lambda::Function", {**_function(stage), "ReservedConcurrentExecutions": 10}
        )
    # AND the other stages reserve none: they write only their own run's objects, and draw on the account's pool
    for stage in set(HANDLERS) - set(BOUNDED):
        created.template.has_resource_properties(
            "AWS::Lambda::Function", {**_function(stage), "ReservedConcurrentExecutions": Match.absent()}
        )


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        pytest.param({"loader_concurrency": 25}, {LOAD: 25, DEAD_LETTER: 10}, id="loader-configured"),
        pytest.param(
            {"loader_concurrency": "0", "dead_letter_concurrency": "0"},
            {LOAD: None, DEAD_LETTER: None},
            id="zero-means-unreserved",
        ),
    ],
)
def test_reserved_concurrency_follows_context(
    tmp_path: Path, context: dict[str, Any], expected: dict[str, int | None]
) -> None:
    # GIVEN a context bounding the committing stages (cdk.json, or `-c loader_concurrency=0`: a string)
    synth = synthesise({**CREATED_CONTEXT, **context}, tmp_path)
    # WHEN the stack is synthesised
    # THEN each reserves exactly that many, or none at all for 0
    for stage, value in expected.items():
        if value is None:
            synth.template.has_resource_properties(
                "AWS::Lambda::Function", {**_function(stage), "ReservedConcurrentExecutions": Match.absent()}
            )
        else:
            reserved = Capture()
            synth.template.has_resource_properties(
                "AWS::Lambda::Function", {**_function(stage), "ReservedConcurrentExecutions": reserved}
            )
            assert reserved.as_number() == value
    # AND cdk-nag stays clean (no finding, so no suppression is needed for the bound)
    for found in (synth.annotations.find_error, synth.annotations.find_warning):
        assert [f"{f.id}: {f.entry.data}" for f in found("*", Match.string_like_regexp("AwsSolutions-.*"))] == []


@pytest.mark.parametrize(
    ("context", "message"),
    [
        pytest.param({"loader_concurrency": -1}, "loader_concurrency", id="negative"),
        pytest.param({"loader_concurrency": "ten"}, "loader_concurrency.*whole number", id="not-a-number"),
        pytest.param({"dead_letter_concurrency": -5}, "dead_letter_concurrency", id="dead-letter-negative"),
        pytest.param({"execution_timeout_minutes": 60}, "execution_timeout_minutes.*burst", id="timeout-too-short"),
        pytest.param(
            {"execution_timeout_minutes": 150, "functions": {"load": {"timeout_seconds": 900}}},
            r"raise it.*loader's timeout",
            id="timeout-shorter-than-retried-loads",
        ),
    ],
)
def test_burst_settings_that_cannot_work_are_refused_with_the_key_named(context: dict[str, Any], message: str) -> None:
    # GIVEN a context whose burst settings cannot work
    # WHEN the stack reads it
    # THEN it refuses, naming the key and what to do
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_context(App(context=context).node)


def test_the_default_timeout_covers_the_longest_legitimate_load() -> None:
    # GIVEN the defaults WHEN we compare the execution timeout with a throttled, retried load
    config = PipelineConfig()
    # THEN the load fits: a burst's queued file is never timed out while it waits its turn
    assert config.longest_load_minutes <= config.execution_timeout_minutes
    assert config.longest_load_minutes >= LAMBDA_THROTTLING_RETRY.longest_wait_seconds / 60


def _bursts_section() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    return readme.split("## Bursts\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_bursts_section_states_the_codes_numbers() -> None:
    # GIVEN the README's "Bursts" section
    section = _bursts_section()
    config = PipelineConfig()
    # WHEN we read its budget table and its sizing
    rows = {
        line.split("|")[1].strip(): line.split("|")[3].strip() for line in section.splitlines() if "| every" in line
    }
    retries = {errors.split(",")[0]: int(count) for errors, count in rows.items()}
    # THEN each retrier's retries are the code's
    assert retries == {
        "`Lambda.TooManyRequestsException` (reserved or account concurrency in use)": LAMBDA_THROTTLING_RETRY.retries,
        "`Lambda.ServiceException`": LAMBDA_SERVICE_RETRY.retries,
        "`CommitConflict`": TRANSIENT_RETRY.retries,
    }
    # AND so are the bounds, the refused timeout and the group commit's size
    assert f"`loader_concurrency` ({config.loader_concurrency})" in section
    assert f"(`dead_letter_concurrency`, {config.dead_letter_concurrency})" in section
    assert f"({config.longest_load_minutes} minutes with the default" in section
    assert f"the default timeout is {config.execution_timeout_minutes}" in section
    assert f"`ICEGATE_GROUP_MAX_FILES`, default {Settings().group_max_files}" in section
