"""cfn-lint on the synthesised template, and separately on the state machine definition.

cfn-lint cannot check a ``DefinitionString`` built with ``Fn::Join`` (which is how CDK writes one that
names Lambda ARNs), so the definition is also linted on its own, with placeholder ARNs, as the
``Definition`` object of a small template.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from cfnlint.api import ManualArgs, lint_by_config, lint_file
from infra_support import Synth

REGIONS = ["eu-west-1", "us-east-1"]
#: W3005 (redundant DependsOn): CDK makes each function depend on its role and its role's default
#: policy; the role is also referenced by GetAtt. Harmless, and CDK's to decide.
IGNORED = ["W3005"]


def _lint(path: Path) -> list[str]:
    matches = lint_file(path, config=ManualArgs(regions=REGIONS, ignore_checks=IGNORED))
    return [f"{m.rule.id} {m.message} ({m.filename}:{m.linenumber})" for m in matches]


def _definition_template(definition: dict[str, Any]) -> dict[str, Any]:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "StateMachine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "Definition": definition,
                    "RoleArn": "arn:aws:iam::123456789012:role/placeholder",
                    "StateMachineType": "STANDARD",
                },
            }
        },
    }


def test_synthesised_template_passes_cfn_lint(any_synth: Synth, tmp_path: Path) -> None:
    # GIVEN the synthesised template written to a file
    path = tmp_path / "template.json"
    path.write_text(json.dumps(any_synth.doc))
    # WHEN cfn-lint checks it
    # THEN it finds nothing
    assert _lint(path) == []


def test_state_machine_definition_passes_cfn_lint(imported: Synth, tmp_path: Path) -> None:
    # GIVEN the definition with placeholder ARNs, as a Definition object cfn-lint can see into
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(_definition_template(imported.definition)))
    # WHEN cfn-lint checks it
    # THEN it finds nothing
    assert _lint(path) == []


def test_cfn_lint_does_look_inside_the_definition(imported: Synth, tmp_path: Path) -> None:
    # GIVEN the same definition with one state broken (a Choice without choices, a Task without Resource)
    broken = copy.deepcopy(imported.definition)
    del broken["States"]["Parse"]["Resource"]
    broken["States"]["Gate"]["Choices"] = []
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_definition_template(broken)))
    # WHEN cfn-lint checks it
    matches = lint_by_config(ManualArgs(templates=[str(path)], regions=REGIONS))
    # THEN it reports the definition's errors: the check above is not vacuous
    assert any(m.rule.id.startswith("E36") for m in matches), [str(m) for m in matches]
