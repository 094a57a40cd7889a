"""Redeploy after ``cdk destroy``: what the stack keeps on delete never collides with what it creates again.

CloudFormation keeps every resource with ``DeletionPolicy: Retain`` when the stack is deleted. If such a
resource has a fixed physical name, deploying the stack again fails ("already exists"). So a retained
resource has a generated name, or one unique to the stack instance (its stack id), or — the Glue database,
whose name is the namespace, and a lake bucket given a name — ``import_lake`` takes it over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Capture, Match
from infra_support import Synth, synthesise

from cdk.config import PipelineConfig
from icegate.constants import ENV_LAKE_ROOT, ENV_NAMESPACE, LOAD, WAREHOUSE_PREFIX

#: Properties that set a resource's physical name, by resource type.
NAME_PROPERTIES = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
}
OLD_LAKE = "icegate-lake-kept"


def _fixed_name(resource: dict[str, Any]) -> str | None:
    """The physical name a resource would always get, or None (generated, or unique to the stack instance)."""
    properties = resource.get("Properties", {})
    if resource["Type"] == "AWS::Glue::Database":
        name = properties["DatabaseInput"]["Name"]
    else:
        name = properties.get(NAME_PROPERTIES.get(resource["Type"], ""))
    if name is None or "AWS::StackId" in repr(name):
        return None
    return str(name)


def _retained(synth: Synth) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in synth.doc["Resources"].items() if r.get("DeletionPolicy") in ("Retain", "Snapshot")}


@pytest.fixture(scope="module")
def redeployed(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The stack deployed again after `cdk destroy`, taking over the lake and the database it kept."""
    context = {"stack_name": "IcegateAgain", "import_lake": True, "lake_bucket_name": OLD_LAKE}
    return synthesise(context, tmp_path_factory.mktemp("cdk-redeployed"))


def test_retained_resources_with_fixed_names_are_only_those_import_lake_takes_over(any_synth: Synth) -> None:
    # GIVEN what the stack keeps when it is deleted
    retained = _retained(any_synth)
    # WHEN we look for the physical names a second deployment would create again
    fixed = {r["Type"]: _fixed_name(r) for r in retained.values() if _fixed_name(r)}
    # THEN the only ones are the Glue database (its name is the namespace) and the lake bucket when named
    expected = {"AWS::Glue::Database": any_synth.stack.config.namespace}
    if any_synth.stack.config.lake_bucket_name:
        expected["AWS::S3::Bucket"] = any_synth.stack.config.lake_bucket_name
    assert fixed == expected


def test_state_machine_log_group_is_kept_under_a_name_unique_to_the_stack_instance(any_synth: Synth) -> None:
    # GIVEN the state machine's log destination
    destination = Capture()
    any_synth.template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {"LoggingConfiguration": {"Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": destination}}]}},
    )
    log_group_id = destination.as_object()["Fn::GetAtt"][0]
    log_group = any_synth.doc["Resources"][log_group_id]
    # WHEN we read the group's name and deletion policy
    name = log_group["Properties"]["LogGroupName"]
    # THEN it is kept on delete, under the vended-logs prefix, named after this stack's id (new on redeploy)
    assert log_group["DeletionPolicy"] == "Retain"
    delimiter, (prefix, suffix) = name["Fn::Join"]
    assert delimiter == ""
    assert prefix == f"/aws/vendedlogs/states/{any_synth.stack.stack_name}-pipeline-"
    assert suffix == {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}


def test_import_lake_creates_neither_the_lake_bucket_nor_the_database(redeployed: Synth) -> None:
    # GIVEN the stack deployed again with import_lake
    template = redeployed.template
    # WHEN we look for the resources the first deployment kept
    # THEN none is created again: no Glue database, no bucket of the lake's name
    template.resource_count_is("AWS::Glue::Database", 0)
    assert not [r for r in redeployed.resources("AWS::S3::Bucket").values() if _fixed_name(r) == OLD_LAKE]
    assert not {r["Type"] for r in _retained(redeployed).values() if _fixed_name(r)}
    # AND the kept lake refuses plain HTTP again (its bucket policy went with the old stack)
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": OLD_LAKE,
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )


def test_import_lake_points_the_functions_at_the_kept_lake_and_database(redeployed: Synth) -> None:
    # GIVEN the loader of the redeployed stack
    loader = redeployed.doc["Resources"][redeployed.functions_by_stage[LOAD]]["Properties"]
    # WHEN we read its environment and grants
    env = loader["Environment"]["Variables"]
    resources = {resource for _, resource in redeployed.grants(LOAD)}
    # THEN it loads into the kept lake and the kept database, by name
    assert redeployed.render(env[ENV_LAKE_ROOT]) == f"s3://{OLD_LAKE}"
    assert env[ENV_NAMESPACE] == "instagram_db"
    assert f"arn:<AWS::Partition>:s3:::{OLD_LAKE}/{WAREHOUSE_PREFIX}/*" in resources
    assert "arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>:database/instagram_db" in resources


def test_import_lake_without_the_lake_bucket_name_is_refused(tmp_path: Path) -> None:
    # GIVEN import_lake but no lake bucket named
    app = App(context={"import_lake": "true"})
    # WHEN the stack reads the context
    # THEN it refuses, saying which name is missing and where to find it
    with pytest.raises(ValueError, match=r"lake_bucket_name.*LakeBucketName"):
        PipelineConfig.from_context(app.node)


def test_redeployed_stack_has_no_unsuppressed_aws_solutions_findings(redeployed: Synth) -> None:
    # GIVEN the stack that takes over the kept lake, synthesised with AwsSolutionsChecks
    # WHEN we collect cdk-nag's errors and warnings
    findings = [
        *redeployed.annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*")),
        *redeployed.annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*")),
    ]
    # THEN there are none
    assert [f"{f.id}: {f.entry.data}" for f in findings] == []
