"""cdk-nag (v2) suppressions, always on one resource, with a rule id and a reason.

IAM5 findings name the wildcard resource they are about (``Resource::<LakeBucket1A2B.Arn>/processing/*``).
:func:`nag_resource` renders a CDK token the way cdk-nag does, so a suppression ``applies_to`` exactly
the wildcard we meant, without hard-coding a logical id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aws_cdk import Stack
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct


def nag_resource(scope: IConstruct, value: str) -> str:
    """``value`` (an ARN, possibly a token) as it appears in an IAM5 finding: ``Resource::...``."""
    return "Resource::" + _flatten(Stack.of(scope).resolve(value))


def default_policy(role: IConstruct) -> IConstruct:
    """The ``DefaultPolicy`` CDK attaches a role's grants to: where IAM5 findings are reported."""
    policy = role.node.try_find_child("DefaultPolicy")
    if policy is None:
        raise ValueError(f"{role.node.path} has no DefaultPolicy yet: suppress after granting")
    return policy


def suppress(
    construct: IConstruct,
    rule: str,
    reason: str,
    *,
    applies_to: Sequence[str] = (),
    apply_to_children: bool = False,
) -> None:
    """Suppress one cdk-nag rule (``AwsSolutions-IAM5``) on one construct, optionally for some findings only."""
    suppression = NagPackSuppression(id=rule, reason=reason, applies_to=list(applies_to) or None)
    NagSuppressions.add_resource_suppressions(construct, [suppression], apply_to_children=apply_to_children)


def _flatten(node: Any) -> str:
    # Mirrors cdk-nag's flattenCfnReference (lib/utils/flatten-cfn-reference.ts).
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))
