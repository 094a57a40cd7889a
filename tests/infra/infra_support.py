"""Helpers for the CDK tests: synthesise the stack and read what matters from its template.

Nothing here hard-codes a logical id: resources are found through the stack's own constructs
(``stack.resolve(construct.attr)``) or by their properties (a function's handler ``CMD``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # app.py and cdk/ live at the repository root, outside src/
# jsii's banner about the local Node version is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk.assertions import Annotations, Template  # noqa: E402

from app import build_app  # noqa: E402
from cdk.pipeline_stack import PipelineStack  # noqa: E402

#: The deployment the scrapers need: two existing landing buckets, imported by name.
IMPORTED_CONTEXT: Mapping[str, Any] = {
    "stack_name": "IcegateTest",
    "landing_buckets": ["scraper-posts", "scraper-restaurants"],
    "lake_bucket_name": "icegate-lake-test",
    "namespace": "instagram_db",
    "processing_expiry_days": 5,
    "noncurrent_version_expiry_days": 3,
    "log_retention_days": 14,
    "functions": {"load": {"memory_mb": 4096, "timeout_seconds": 600}},
    "alarms": {"topic_arn": "arn:aws:sns:eu-west-1:123456789012:icegate-alarms"},
}
#: The default: the stack creates its own landing bucket.
CREATED_CONTEXT: Mapping[str, Any] = {"stack_name": "IcegateDefault"}

ACCOUNT = "123456789012"
REGION = "eu-west-1"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}


@dataclass
class Synth:
    """One synthesised stack and readers over its template."""

    stack: PipelineStack
    template: Template
    annotations: Annotations
    doc: dict[str, Any] = field(repr=False)
    #: The cloud assembly directory (staged assets live here).
    outdir: Path = field(default=Path("."))

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.doc["Resources"].items() if v["Type"] == resource_type}

    def logical_id(self, token: str) -> str:
        """The logical id behind a ``Ref``/``Fn::GetAtt`` token of one of the stack's constructs."""
        resolved = self.stack.resolve(token)
        if "Ref" in resolved:
            return str(resolved["Ref"])
        return str(resolved["Fn::GetAtt"][0])

    def render(self, value: Any) -> str:
        """A template value as text: ``{"Fn::GetAtt": ["Lake1", "Arn"]}`` -> ``<Lake1.Arn>``."""
        return render(value)

    @cached_property
    def functions_by_stage(self) -> dict[str, str]:
        """Stage -> logical id of its Lambda, found by the handler in the function's image CMD."""
        from icegate.constants import HANDLERS

        stage_of_handler = {handler: stage for stage, handler in HANDLERS.items()}
        found: dict[str, str] = {}
        for logical_id, resource in self.resources("AWS::Lambda::Function").items():
            command = resource["Properties"].get("ImageConfig", {}).get("Command", [])
            if command and command[0] in stage_of_handler:
                found[stage_of_handler[command[0]]] = logical_id
        return found

    @cached_property
    def maintainer(self) -> str:
        """Logical id of the scheduled maintainer's Lambda, found by its handler in the image CMD."""
        from icegate.constants import MAINTAIN, UPKEEP_HANDLERS

        (found,) = [
            logical_id
            for logical_id, resource in self.resources("AWS::Lambda::Function").items()
            if resource["Properties"].get("ImageConfig", {}).get("Command", [None])[0] == UPKEEP_HANDLERS[MAINTAIN]
        ]
        return found

    def role_statements(self, role_logical_id: str) -> list[dict[str, Any]]:
        """Every statement of every policy attached to a role, with actions and resources as lists of text."""
        statements = []
        for policy in self.resources("AWS::IAM::Policy").values():
            roles = [r.get("Ref") for r in policy["Properties"].get("Roles", [])]
            if role_logical_id not in roles:
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                resources = statement["Resource"]
                statements.append(
                    {
                        "Effect": statement["Effect"],
                        "Action": [actions] if isinstance(actions, str) else list(actions),
                        "Resource": [render(r) for r in (resources if isinstance(resources, list) else [resources])],
                        "Condition": statement.get("Condition"),
                    }
                )
        return statements

    def function_statements(self, stage: str) -> list[dict[str, Any]]:
        function = self.doc["Resources"][self.functions_by_stage[stage]]
        return self.role_statements(function["Properties"]["Role"]["Fn::GetAtt"][0])

    def grants(self, stage: str) -> set[tuple[str, str]]:
        """(action, resource) pairs the stage's function is allowed."""
        return {
            (action, resource)
            for statement in self.function_statements(stage)
            if statement["Effect"] == "Allow"
            for action in statement["Action"]
            for resource in statement["Resource"]
        }

    @cached_property
    def state_machine(self) -> dict[str, Any]:
        """The ingestion state machine's properties."""
        logical_id = self.logical_id(self.stack.pipeline.state_machine.state_machine_arn)
        return dict(self.doc["Resources"][logical_id]["Properties"])

    @cached_property
    def definition(self) -> dict[str, Any]:
        """The ingestion state machine's definition as JSON, with placeholder ARNs where the template has references."""
        return dict(json.loads(substitute(self.state_machine["DefinitionString"], self.doc["Resources"])))

    @cached_property
    def backfill_state_machine(self) -> dict[str, Any]:
        logical_id = self.logical_id(self.stack.backfill.state_machine.state_machine_arn)
        return dict(self.doc["Resources"][logical_id]["Properties"])

    @cached_property
    def backfill_definition(self) -> dict[str, Any]:
        """The backfill state machine's definition, with placeholder ARNs and bucket names."""
        return dict(json.loads(substitute(self.backfill_state_machine["DefinitionString"], self.doc["Resources"])))

    @cached_property
    def input_transformer(self) -> dict[str, Any]:
        """The EventBridge rule target's InputTransformer: how an S3 event becomes the execution input."""
        (rule,) = self.resources("AWS::Events::Rule").values()
        (target,) = rule["Properties"]["Targets"]
        return dict(target["InputTransformer"])


def transform_event(transformer: Mapping[str, Any], event: Mapping[str, Any]) -> Any:
    """What EventBridge sends the target: each <var> replaced by its JSON value (strings quoted, numbers bare)."""
    values = {}
    for var, path in transformer["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        values[var] = value
    text = re.sub(r"<([\w.-]+)>", lambda m: json.dumps(values[m.group(1)]), transformer["InputTemplate"])
    return json.loads(text)


def render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Fn::Join" in value:
            delimiter, parts = value["Fn::Join"]
            return str(delimiter).join(render(part) for part in parts)
        if "Fn::GetAtt" in value:
            return "<{}.{}>".format(*value["Fn::GetAtt"])
        if "Ref" in value:
            return f"<{value['Ref']}>"
    return json.dumps(value)


def placeholder_arn(logical_id: str, resources: Mapping[str, Any]) -> str:
    resource_type = resources.get(logical_id, {}).get("Type", "")
    service = {
        "AWS::Lambda::Function": f"lambda:{REGION}:{ACCOUNT}:function:{logical_id}",
        "AWS::S3::Bucket": f"s3:::{logical_id.lower()}",
        "AWS::SQS::Queue": f"sqs:{REGION}:{ACCOUNT}:{logical_id}",
        "AWS::Logs::LogGroup": f"logs:{REGION}:{ACCOUNT}:log-group:{logical_id}:*",
        "AWS::IAM::Role": f"iam::{ACCOUNT}:role/{logical_id}",
    }.get(resource_type, f"states:{REGION}:{ACCOUNT}:resource:{logical_id}")
    return f"arn:aws:{service}"


def substitute(value: Any, resources: Mapping[str, Any]) -> Any:
    """Resolve ``Fn::Join``/``Fn::GetAtt``/``Ref`` with placeholder values, leaving plain JSON."""
    if isinstance(value, list):
        return [substitute(item, resources) for item in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return str(delimiter).join(str(substitute(part, resources)) for part in parts)
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return placeholder_arn(logical_id, resources) if attribute == "Arn" else f"{logical_id}-{attribute}"
    if "Ref" in value:
        ref = value["Ref"]
        if resources.get(ref, {}).get("Type") == "AWS::StepFunctions::StateMachine":
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{ref}"  # a state machine's Ref is its ARN
        return PSEUDO.get(ref) or (ref.lower() if ref in resources else ref)
    return {key: substitute(item, resources) for key, item in value.items()}


def for_moto(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as moto 5's ASL grammar takes it: ``ToleratedFailurePercentage`` as a decimal (``10.0``).

    AWS (and cfn-lint) take any number 0-100; moto's parser rejects an integer there (and ignores the
    value when it runs: "ToleratedFailurePercentage declarations currently have no effect").
    """
    text = re.sub(r'("ToleratedFailurePercentage":\s*)(\d+)(?=[,}])', r"\1\2.0", json.dumps(definition))
    result: dict[str, Any] = json.loads(text)
    return result


#: Let cdk-nag's errors reach the assertions (test_infra_nag) instead of failing synthesis for every test.
REPORT_VALIDATION_ERRORS = {"@aws-cdk/core:failSynthOnValidationErrors": False}


def synthesise(context: Mapping[str, Any], outdir: Path) -> Synth:
    _, stack = build_app({**context, **REPORT_VALIDATION_ERRORS}, outdir=str(outdir))
    template = Template.from_stack(stack)
    return Synth(
        stack=stack,
        template=template,
        annotations=Annotations.from_stack(stack),
        doc=template.to_json(),
        outdir=outdir,
    )
