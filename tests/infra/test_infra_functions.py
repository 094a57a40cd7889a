"""The stage Lambdas: one image, one handler CMD per function, settings from context."""

from __future__ import annotations

import re
from typing import Any

import pytest
from infra_support import IMPORTED_CONTEXT, REPO_ROOT, Synth

from cdk.config import DEFAULT_FUNCTIONS
from icegate.constants import (
    ENV_CATALOG_TYPE,
    ENV_LAKE_ROOT,
    ENV_NAMESPACE,
    ENV_PREFIX,
    ENV_WAREHOUSE,
    HANDLERS,
    LOAD,
    UPKEEP_HANDLERS,
    WAREHOUSE_PREFIX,
)


def _function(synth: Synth, stage: str) -> dict[str, Any]:
    return dict(synth.doc["Resources"][synth.functions_by_stage[stage]]["Properties"])


def test_one_container_function_per_stage_with_its_own_handler(any_synth: Synth) -> None:
    # GIVEN the synthesised stack
    # WHEN we collect the container-image functions
    images = {k: v for k, v in any_synth.resources("AWS::Lambda::Function").items() if "ImageConfig" in v["Properties"]}
    # THEN there is one per stage and one for the scheduled maintainer, each running its own handler
    handlers = {**HANDLERS, **UPKEEP_HANDLERS}
    assert len(images) == len(handlers) == 6
    assert sorted(v["Properties"]["ImageConfig"]["Command"][0] for v in images.values()) == sorted(handlers.values())
    assert all(v["Properties"]["PackageType"] == "Image" for v in images.values())
    # AND all six run the same image, so it is built and pushed once
    assert len({str(v["Properties"]["Code"]["ImageUri"]) for v in images.values()}) == 1


@pytest.mark.parametrize("stage", sorted(HANDLERS))
def test_function_environment_points_at_the_lake_and_glue(imported: Synth, stage: str) -> None:
    # GIVEN a stage function
    lake_id = imported.logical_id(imported.stack.storage.lake_bucket.bucket_arn)
    # WHEN we read its environment
    env = _function(imported, stage)["Environment"]["Variables"]
    # THEN it reads the lake and the Glue catalog of this stack, as icegate.settings expects
    assert imported.render(env[ENV_LAKE_ROOT]) == f"s3://<{lake_id}>"
    assert imported.render(env[ENV_WAREHOUSE]) == f"s3://<{lake_id}>/{WAREHOUSE_PREFIX}"
    assert env[ENV_CATALOG_TYPE] == "glue"
    assert env[ENV_NAMESPACE] == IMPORTED_CONTEXT["namespace"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "icegate"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "icegate"


@pytest.mark.parametrize("stage", sorted(HANDLERS))
def test_function_size_tracing_and_logs_follow_context(imported: Synth, stage: str) -> None:
    # GIVEN context that overrides the loader's memory and timeout and sets 14 days of logs
    expected = DEFAULT_FUNCTIONS[stage]
    memory, timeout = expected.memory_mb, expected.timeout_seconds
    if stage == LOAD:
        memory, timeout = 4096, 600
    # WHEN we read the function
    props = _function(imported, stage)
    # THEN memory and timeout are the configured ones, X-Ray is active, the architecture explicit
    assert (props["MemorySize"], props["Timeout"]) == (memory, timeout)
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Architectures"] == ["x86_64"]
    # AND it logs to its own log group with the configured retention
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    assert imported.doc["Resources"][log_group_id]["Properties"]["RetentionInDays"] == 14


def test_image_asset_holds_only_what_the_image_needs(imported: Synth) -> None:
    # GIVEN the cloud assembly, where synth staged the image's build context
    (asset_dir,) = [p for p in imported.outdir.iterdir() if p.name.startswith("asset.") and p.is_dir()]
    # WHEN we list it
    top = {p.name for p in asset_dir.iterdir()}
    # THEN it has the library, the stages and their locked dependencies, and nothing else (.dockerignore)
    assert top - {".dockerignore"} == {"src", "stages"}
    assert (asset_dir / "stages" / "Dockerfile").is_file()
    assert (asset_dir / "stages" / "requirements.txt").is_file()
    assert (asset_dir / "src" / "icegate" / "constants.py").is_file()
    assert not top & {".venv", "cdk.out", "lake", "tests", "node_modules", ".git", "cdk", "benchmarks", "samples"}


def test_dockerfile_builds_on_the_lambda_python_image_and_defaults_to_the_parser() -> None:
    # GIVEN the Dockerfile that every stage function runs
    dockerfile = (REPO_ROOT / "stages" / "Dockerfile").read_text()
    # WHEN we read its instructions
    # THEN it starts from the AWS Lambda Python 3.12 image, installs the locked runtime dependencies
    # (hash-checked) into the task root, copies the library and the stages, and defaults to the parser
    assert re.search(r"^ARG BASE_IMAGE=public\.ecr\.aws/lambda/python:3\.12(@sha256:[0-9a-f]{64})?$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.MULTILINE)
    assert re.search(r'pip install .*--require-hashes .*--target "\$\{LAMBDA_TASK_ROOT\}"', dockerfile)
    assert "-r /tmp/requirements.txt" in dockerfile
    assert "COPY src/icegate ${LAMBDA_TASK_ROOT}/icegate" in dockerfile
    assert "COPY stages ${LAMBDA_TASK_ROOT}/stages" in dockerfile
    assert re.search(r'^CMD \["stages\.parser\.handler"\]\s*$', dockerfile, re.MULTILINE)


@pytest.mark.parametrize("stage", sorted(HANDLERS))
def test_every_icegate_variable_a_function_gets_is_a_known_setting(any_synth: Synth, stage: str) -> None:
    # GIVEN the environment the stack gives a stage function
    env = _function(any_synth, stage)["Environment"]["Variables"]
    # WHEN we keep the ICEGATE_* names
    ours = {name for name in env if name.startswith(ENV_PREFIX)}
    # THEN settings know every one: an unknown one is refused, so the function would fail at its first start
    from icegate.settings import known_variables

    assert ours, "the stack configures icegate through ICEGATE_* variables"
    assert ours <= known_variables()
