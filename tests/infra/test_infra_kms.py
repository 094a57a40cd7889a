"""Governed accounts: customer KMS keys on imported landing buckets, and the role Lake Formation must grant to."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Capture, Match
from infra_support import IMPORTED_CONTEXT, Synth, synthesise

from cdk.config import PipelineConfig
from icegate.constants import DEAD_LETTER, HANDLERS, LOAD, PARSE, SCORE

KEYS = [
    "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "arn:aws:kms:eu-west-1:210987654321:key/mrk-0123456789abcdef0123456789abcdef",
]


@pytest.fixture(scope="module")
def with_keys(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The imported-landing deployment whose buckets are encrypted with two customer keys."""
    context = {**IMPORTED_CONTEXT, "stack_name": "IcegateKms", "landing_kms_key_arns": KEYS}
    return synthesise(context, tmp_path_factory.mktemp("cdk-kms"))


def _kms_statements(synth: Synth, stage: str) -> list[dict[str, Any]]:
    return [s for s in synth.function_statements(stage) if any(a.startswith("kms:") for a in s["Action"])]


@pytest.mark.parametrize("stage", [PARSE, DEAD_LETTER], ids=["parser", "dead-letter"])
def test_stages_reading_landing_may_decrypt_with_the_landing_keys_through_s3_only(with_keys: Synth, stage: str) -> None:
    # GIVEN imported landing buckets encrypted with customer keys
    # WHEN we read the grants of a stage that reads the source object
    statements = _kms_statements(with_keys, stage)
    # THEN it may decrypt with exactly those keys, and only when S3 asks on its behalf
    assert len(statements) == 1
    (statement,) = statements
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["kms:Decrypt"]
    assert sorted(statement["Resource"]) == sorted(KEYS)
    via = statement["Condition"]["StringEquals"]["kms:ViaService"]
    assert with_keys.render(via) == "s3.<AWS::Region>.amazonaws.com"


@pytest.mark.parametrize("stage", sorted(set(HANDLERS) - {PARSE, DEAD_LETTER}))
def test_stages_that_never_read_landing_get_no_key(with_keys: Synth, stage: str) -> None:
    # GIVEN the same deployment
    # WHEN we read the grants of a stage that only reads the lake
    # THEN it has no KMS permission at all
    assert _kms_statements(with_keys, stage) == []


def test_without_landing_keys_no_role_may_use_kms(any_synth: Synth) -> None:
    # GIVEN the default deployments (S3-managed encryption everywhere)
    # WHEN we look for KMS actions in any policy
    # THEN there are none
    any_synth.template.all_resources_properties(
        "AWS::IAM::Policy",
        {"PolicyDocument": {"Statement": Match.not_(Match.array_with([Match.object_like({"Action": "kms:Decrypt"})]))}},
    )
    assert all(_kms_statements(any_synth, stage) == [] for stage in HANDLERS)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        pytest.param(
            {
                "landing_buckets": ["scraper-posts"],
                "landing_kms_key_arns": ["arn:aws:kms:eu-west-1:123456789012:alias/x"],
            },
            "key ARNs",
            id="alias-not-key",
        ),
        pytest.param({"landing_kms_key_arns": KEYS[:1]}, "imported landing buckets", id="no-imported-landing"),
    ],
)
def test_landing_keys_that_cannot_work_are_refused(context: dict[str, Any], message: str) -> None:
    # GIVEN a landing key option that could never take effect
    # WHEN the stack reads it
    # THEN it refuses, saying why
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_context(App(context=context).node)


def test_landing_keys_from_the_command_line_are_a_comma_separated_list() -> None:
    # GIVEN `-c landing_kms_key_arns=a,b` (a string)
    app = App(context={"landing_buckets": "scraper-posts", "landing_kms_key_arns": ",".join(KEYS)})
    # WHEN the stack reads it
    # THEN both keys come out, in order
    assert PipelineConfig.from_context(app.node).landing_kms_key_arns == tuple(KEYS)


def test_landing_key_grants_raise_no_aws_solutions_finding(with_keys: Synth) -> None:
    # GIVEN the deployment with landing keys, synthesised with AwsSolutionsChecks
    # WHEN we collect cdk-nag's errors and warnings
    findings = [
        *with_keys.annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*")),
        *with_keys.annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*")),
    ]
    # THEN there are none: the grant names its keys, no wildcard
    assert [f"{f.id}: {f.entry.data}" for f in findings] == []


@pytest.mark.parametrize(
    ("stage", "output"),
    [
        (PARSE, "ParserRoleArn"),
        (SCORE, "QualityScorerRoleArn"),
        (LOAD, "LoaderRoleArn"),
        (DEAD_LETTER, "DeadLetterRoleArn"),
    ],
    ids=["parser", "quality-scorer", "loader", "dead-letter"],
)
def test_every_role_the_lake_formation_grants_name_is_an_output(any_synth: Synth, stage: str, output: str) -> None:
    """Regression: the README asks for grants to the parser, scorer and dead-letter roles, yet only the loader's
    (and the maintainer's) role ARN was an output to grant to."""
    # GIVEN the synthesised stack  WHEN we capture the role behind the stage's output
    role = Capture()
    any_synth.template.has_output(output, {"Value": {"Fn::GetAtt": [role, "Arn"]}, "Description": Match.any_value()})

    # THEN it is the role that stage's function runs as
    any_synth.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "ImageConfig": {"Command": [HANDLERS[stage]]},
            "Role": {"Fn::GetAtt": [role.as_string(), "Arn"]},
        },
    )


def test_the_loader_role_is_an_output_for_lake_formation_grants(any_synth: Synth) -> None:
    # GIVEN the stack's outputs
    outputs = any_synth.doc["Outputs"]
    # WHEN we read LoaderRoleArn (the README's Lake Formation commands use it)
    role_id = outputs["LoaderRoleArn"]["Value"]["Fn::GetAtt"][0]
    # THEN it is the role of the loader, the only function that creates or commits to the dataset tables
    loader = any_synth.doc["Resources"][any_synth.functions_by_stage[LOAD]]["Properties"]
    assert loader["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}
    writers = {
        stage
        for stage in HANDLERS
        for action, resource in any_synth.grants(stage)
        if action in ("glue:CreateTable", "glue:UpdateTable") and resource.endswith("/*")
    }
    assert writers == {LOAD}
