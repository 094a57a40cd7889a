"""Stack settings from CDK context: cdk.json defaults and ``-c key=value`` strings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App
from infra_support import REPO_ROOT

from cdk.config import DEFAULT_FUNCTIONS, AlarmSettings, FunctionSettings, PipelineConfig
from icegate.constants import HANDLERS, LOAD, PARSE


def _config(**context: Any) -> PipelineConfig:
    return PipelineConfig.from_context(App(context=context).node)


def test_cdk_json_runs_app_py_and_its_context_is_all_known() -> None:
    # GIVEN cdk.json
    cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    context = cdk_json["context"]
    # WHEN we read it
    # THEN the CLI runs app.py, and every key is a stack setting, the stack name or a CDK feature flag
    assert cdk_json["app"] == "python3 app.py"
    known = {f for f in PipelineConfig.__dataclass_fields__} | {"stack_name"}
    unknown = {k for k in context if k not in known and not k.startswith("@aws-cdk")}
    assert unknown == set(), f"typo in cdk.json context? {unknown}"
    # AND its values are the code's defaults (one source of truth for what an empty context means)
    assert _config(**context) == PipelineConfig()
    assert context["landing_buckets"] == []
    assert context["namespace"] == "instagram_db"


def test_context_strings_from_the_command_line_are_parsed() -> None:
    # GIVEN context given as `cdk synth -c key=value`, i.e. strings
    # WHEN the stack reads it
    config = _config(
        landing_buckets="scraper-posts, scraper-restaurants",
        landing_enable_eventbridge="false",
        processing_expiry_days="3",
        functions='{"load": {"memory_mb": "4096"}}',
        alarms='{"period_minutes": 1, "topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"}',
    )
    # THEN lists, booleans, numbers and objects come out typed, with unset values kept at their defaults
    assert config.landing_buckets == ("scraper-posts", "scraper-restaurants")
    assert config.landing_enable_eventbridge is False
    assert config.processing_expiry_days == 3
    assert config.functions[LOAD] == FunctionSettings(
        memory_mb=4096, timeout_seconds=DEFAULT_FUNCTIONS[LOAD].timeout_seconds
    )
    assert config.functions[PARSE] == DEFAULT_FUNCTIONS[PARSE]
    assert config.alarms == AlarmSettings(period_minutes=1, topic_arn="arn:aws:sns:eu-west-1:123456789012:t")
    assert _config(landing_buckets='["a", "b", "a"]').landing_buckets == ("a", "b")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        pytest.param({"functions": {"lod": {}}}, "unknown stages", id="unknown-stage"),
        pytest.param({"functions": {"load": {"memory_mb": 64}}}, "memory_mb", id="memory-too-small"),
        pytest.param({"functions": {"load": {"timeout_seconds": 901}}}, "timeout_seconds", id="timeout-over-15-min"),
        pytest.param({"processing_expiry_days": 0}, "processing_expiry_days", id="no-expiry"),
        pytest.param({"event_max_age_hours": 48}, "event_max_age_hours", id="event-age-over-a-day"),
        pytest.param({"landing_buckets": ["lake"], "lake_bucket_name": "lake"}, "cannot also be", id="lake-is-landing"),
        pytest.param({"namespace": "Instagram-DB"}, "namespace", id="bad-namespace"),
        pytest.param({"lambda_architecture": "sparc"}, "lambda_architecture", id="bad-architecture"),
        pytest.param({"alarms": {"topic": "x"}}, "unknown keys", id="unknown-alarm-setting"),
        pytest.param({"processing_expiry_days": "seven"}, "whole number", id="not-a-number"),
    ],
)
def test_invalid_context_is_refused_with_the_key_named(context: dict[str, Any], message: str) -> None:
    # GIVEN a context with one wrong value
    # WHEN the stack reads it
    # THEN it refuses, naming what is wrong
    with pytest.raises(ValueError, match=message):
        _config(**context)


def test_log_retention_must_be_one_cloudwatch_accepts() -> None:
    # GIVEN a retention CloudWatch Logs does not offer
    from app import build_app

    # WHEN the stack is built
    # THEN it refuses before synthesis
    with pytest.raises(ValueError, match="log_retention_days"):
        build_app({"log_retention_days": 10}, nag=False)


def test_every_stage_has_default_function_settings() -> None:
    # GIVEN the stage list
    # WHEN we compare it with the default function settings
    # THEN each stage has memory and a timeout
    assert set(DEFAULT_FUNCTIONS) == set(HANDLERS)
