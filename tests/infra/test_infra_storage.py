"""Buckets: landing (new or imported), lake, access logs."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match
from infra_support import IMPORTED_CONTEXT, Synth

from icegate.constants import DLQ_PREFIX, PROCESSING_PREFIX, WAREHOUSE_PREFIX


def _bucket_policy_statements(synth: Synth, bucket_id: str) -> list[dict[str, object]]:
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in synth.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    assert len(policies) == 1, f"{bucket_id} should have exactly one bucket policy"
    return list(policies[0])


def test_every_bucket_blocks_public_access_and_encrypts(any_synth: Synth) -> None:
    # GIVEN the synthesised stack (either variant)
    # WHEN we look at every bucket it creates
    # THEN each blocks all public access, encrypts with S3-managed keys and enforces bucket ownership
    any_synth.template.all_resources_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}},
                ]
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    )


def test_every_bucket_refuses_plain_http_and_is_retained(any_synth: Synth) -> None:
    # GIVEN every bucket of the stack
    for bucket_id, bucket in any_synth.resources("AWS::S3::Bucket").items():
        # WHEN we read its bucket policy
        statements = _bucket_policy_statements(any_synth, bucket_id)
        # THEN a Deny on aws:SecureTransport=false covers the bucket and its objects
        assert any(
            s["Effect"] == "Deny"
            and s["Action"] == "s3:*"
            and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ), f"{bucket_id} accepts plain HTTP"
        # AND deleting the stack leaves the bucket (and its data) in place
        assert bucket["DeletionPolicy"] == "Retain"
        assert bucket["UpdateReplacePolicy"] == "Retain"


def test_lake_bucket_is_versioned_logged_and_expires_processing(imported: Synth) -> None:
    # GIVEN the stack with processing_expiry_days=5 and a lake bucket name in context
    lake_id = imported.logical_id(imported.stack.storage.lake_bucket.bucket_arn)
    logs_id = imported.logical_id(imported.stack.storage.access_log_bucket.bucket_arn)
    # WHEN we read the lake bucket
    lake = imported.doc["Resources"][lake_id]["Properties"]
    # THEN it has the configured name, versioning, and server access logs in the access-log bucket
    assert lake["BucketName"] == IMPORTED_CONTEXT["lake_bucket_name"]
    assert lake["VersioningConfiguration"] == {"Status": "Enabled"}
    assert lake["LoggingConfiguration"] == {"DestinationBucketName": {"Ref": logs_id}, "LogFilePrefix": "lake/"}
    # AND objects under processing/ expire after the configured days (their old versions a day later)
    imported.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": IMPORTED_CONTEXT["lake_bucket_name"],
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        {
                            "Id": "expire-processing",
                            "Prefix": f"{PROCESSING_PREFIX}/",
                            "ExpirationInDays": IMPORTED_CONTEXT["processing_expiry_days"],
                            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                            "Status": "Enabled",
                        },
                        Match.object_like({"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}),
                    ]
                )
            },
        },
    )


@pytest.mark.parametrize("prefix", [WAREHOUSE_PREFIX, DLQ_PREFIX])
def test_lake_bucket_expires_noncurrent_versions_of_deleted_lake_files(imported: Synth, prefix: str) -> None:
    # GIVEN the stack with noncurrent_version_expiry_days=3 (the lake is versioned, so deletes leave old versions)
    lake_id = imported.logical_id(imported.stack.storage.lake_bucket.bucket_arn)
    # WHEN we read the lake bucket's lifecycle rules
    rules = imported.doc["Resources"][lake_id]["Properties"]["LifecycleConfiguration"]["Rules"]
    (rule,) = [r for r in rules if r.get("Prefix") == f"{prefix}/"]
    # THEN the prefix's noncurrent versions expire after the configured days, current objects never do,
    # and the delete markers left behind are cleaned up
    assert {k: v for k, v in rule.items() if k != "Id"} == {
        "Prefix": f"{prefix}/",
        "NoncurrentVersionExpiration": {"NoncurrentDays": IMPORTED_CONTEXT["noncurrent_version_expiry_days"]},
        "ExpiredObjectDeleteMarker": True,
        "Status": "Enabled",
    }


def test_access_log_bucket_receives_logs_by_bucket_policy_and_is_not_logged_itself(any_synth: Synth) -> None:
    # GIVEN the access-log bucket
    logs_id = any_synth.logical_id(any_synth.stack.storage.access_log_bucket.bucket_arn)
    bucket = any_synth.doc["Resources"][logs_id]["Properties"]
    # WHEN we read it and its policy
    statements = _bucket_policy_statements(any_synth, logs_id)
    # THEN it does not log to itself, expires old logs, and lets only S3 logging write to it
    assert "LoggingConfiguration" not in bucket
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 365
    assert any(
        s["Effect"] == "Allow"
        and s["Principal"] == {"Service": "logging.s3.amazonaws.com"}
        and s["Action"] == "s3:PutObject"
        for s in statements
    )


def test_created_landing_bucket_is_versioned_and_sends_events_without_a_custom_resource(created: Synth) -> None:
    # GIVEN the default context (no landing_buckets): the stack creates the landing bucket
    (landing,) = created.stack.storage.landing_buckets
    landing_id = created.logical_id(landing.bucket_arn)
    logs_id = created.logical_id(created.stack.storage.access_log_bucket.bucket_arn)
    # WHEN we read it
    props = created.doc["Resources"][landing_id]["Properties"]
    # THEN it is versioned, logged, and has EventBridge notifications on in its own CloudFormation properties
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}
    # AND no notifications custom resource (and its Lambda) is needed
    assert not created.resources("Custom::S3BucketNotifications")
    assert len(created.resources("AWS::S3::Bucket")) == 3


def test_imported_landing_buckets_are_not_created_but_get_eventbridge_switched_on(imported: Synth) -> None:
    # GIVEN two existing landing buckets named in context
    names = IMPORTED_CONTEXT["landing_buckets"]
    # WHEN the stack is synthesised
    # THEN it creates only the lake and access-log buckets
    assert len(imported.resources("AWS::S3::Bucket")) == 2
    # AND switches EventBridge on for each imported bucket, merging with its existing configuration
    notifications = imported.resources("Custom::S3BucketNotifications")
    assert sorted(n["Properties"]["BucketName"] for n in notifications.values()) == sorted(names)
    for notification in notifications.values():
        assert notification["Properties"]["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}
        assert notification["Properties"]["Managed"] is False
