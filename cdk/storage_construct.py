"""Buckets: the landing bucket(s) the scrapers write to, the lake, and the access-log bucket."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.nag import suppress
from icegate.constants import DLQ_PREFIX, PROCESSING_PREFIX, WAREHOUSE_PREFIX

#: Server access logs are for audits and incident reviews; a year covers both.
_ACCESS_LOG_EXPIRY = Duration.days(365)
#: Multipart uploads a writer abandoned (a Lambda timed out mid-upload) are invisible but billed.
_ABORT_INCOMPLETE_UPLOADS = Duration.days(7)


class StorageConstruct(Construct):
    """The landing bucket(s), new or imported by name, and the lake bucket.

    The lake holds ``processing/`` (per-run intermediates, expired by lifecycle), ``warehouse/``
    (Iceberg data and metadata) and ``dlq/`` (dead-lettered sources and their ``error.json``). S3
    prefixes need no creation: each appears with its first object.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        landing_bucket_names: Sequence[str],
        enable_eventbridge_on_imported: bool,
        lake_bucket_name: str,
        processing_expiry_days: int,
        noncurrent_expiry_days: int = 7,
        import_lake: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_log_bucket = self._build_access_log_bucket()
        self.lake_bucket: s3.IBucket = (
            self._import_lake_bucket(lake_bucket_name)
            if import_lake
            else self._build_lake_bucket(lake_bucket_name, processing_expiry_days, noncurrent_expiry_days)
        )
        if landing_bucket_names:
            self.landing_buckets = self._import_landing_buckets(landing_bucket_names, enable_eventbridge_on_imported)
        else:
            self.landing_buckets = [self._build_landing_bucket()]

    def lake_objects_arn(self, prefix: str) -> str:
        """ARN of every object under one top-level prefix of the lake (``processing`` -> ``.../processing/*``)."""
        return self.lake_bucket.arn_for_objects(f"{prefix}/*")

    def _secure_bucket(
        self,
        construct_id: str,
        *,
        log_prefix: str | None,
        versioned: bool = False,
        bucket_name: str | None = None,
        lifecycle_rules: Sequence[s3.LifecycleRule] = (),
    ) -> s3.Bucket:
        """A bucket with the settings every icegate bucket shares; ``log_prefix=None`` means no access logs."""
        return s3.Bucket(
            self,
            construct_id,
            bucket_name=bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            lifecycle_rules=list(lifecycle_rules) or None,
            server_access_logs_bucket=self.access_log_bucket if log_prefix else None,
            server_access_logs_prefix=log_prefix,
            # The data outlives the stack: deleting the stack must not delete scraped files or tables.
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _build_access_log_bucket(self) -> s3.Bucket:
        bucket = self._secure_bucket(
            "AccessLogBucket",
            log_prefix=None,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=_ACCESS_LOG_EXPIRY)],
        )
        suppress(
            bucket,
            "AwsSolutions-S1",
            "This bucket is the server access log destination of the other buckets; logging it to itself "
            "would create a log record for every log delivery, forever.",
        )
        return bucket

    def _build_lake_bucket(self, name: str, processing_expiry_days: int, noncurrent_expiry_days: int) -> s3.Bucket:
        # Versioned: a file that snapshot expiry, orphan removal or compaction deletes (warehouse/), or a
        # duplicate rejected-rows file the dead-letter stage removes (dlq/), only gets a delete marker and
        # stays billed as a noncurrent version forever unless a rule expires it. The window is the time
        # to undo a wrong delete.
        noncurrent = [
            s3.LifecycleRule(
                id=f"expire-noncurrent-{prefix}",
                prefix=f"{prefix}/",
                noncurrent_version_expiration=Duration.days(noncurrent_expiry_days),
                # Once its last noncurrent version is gone, the delete marker is clutter that slows listings.
                expired_object_delete_marker=True,
            )
            for prefix in (WAREHOUSE_PREFIX, DLQ_PREFIX)
        ]
        return self._secure_bucket(
            "LakeBucket",
            log_prefix="lake/",
            bucket_name=name or None,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-processing",
                    prefix=f"{PROCESSING_PREFIX}/",
                    expiration=Duration.days(processing_expiry_days),
                    # Versioned: expiry only adds a delete marker; this frees the bytes a day later.
                    noncurrent_version_expiration=Duration.days(1),
                ),
                *noncurrent,
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=_ABORT_INCOMPLETE_UPLOADS,
                ),
            ],
        )

    def _import_lake_bucket(self, name: str) -> s3.IBucket:
        """The lake an earlier deployment created and ``cdk destroy`` kept, with its data and settings.

        Versioning, encryption, lifecycle and public-access block are properties of the bucket and were
        kept with it; its bucket policy was a resource of the old stack and went, so the SSL-only rule
        is put back here.
        """
        bucket = s3.Bucket.from_bucket_name(self, "ImportedLake", name)
        policy = s3.BucketPolicy(self, "ImportedLakePolicy", bucket=bucket)
        policy.document.add_statements(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:*"],
                resources=[bucket.bucket_arn, bucket.arn_for_objects("*")],
                conditions={"Bool": {"aws:SecureTransport": "false"}},
            )
        )
        return bucket

    def _build_landing_bucket(self) -> s3.Bucket:
        bucket = self._secure_bucket("LandingBucket", log_prefix="landing/", versioned=True)
        # ``event_bridge_enabled=True`` would go through CDK's BucketNotifications custom resource (a
        # Lambda with s3:PutBucketNotification on "*"). CloudFormation can set it on a bucket it owns.
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(event_bridge_enabled=True)
        )
        return bucket

    def _import_landing_buckets(self, names: Sequence[str], enable_eventbridge: bool) -> list[s3.IBucket]:
        """Existing buckets the scrapers already write to; their settings stay theirs.

        A stack cannot change an imported bucket's properties. Its owner must keep it versioned (the
        parser reads the exact version the event names; without versioning the etag is the only
        identity) and must turn on "Send notifications to Amazon EventBridge". With
        ``landing_enable_eventbridge`` (the default) the stack does the latter through CDK's
        BucketNotifications custom resource: a Lambda that merges ``EventBridgeConfiguration`` into the
        bucket's existing notification configuration (existing SQS/SNS/Lambda notifications are kept)
        and leaves it on when the stack is deleted. With it off, run once per bucket (this call
        *replaces* the configuration, so include any existing notifications in it)::

            aws s3api put-bucket-notification-configuration --bucket <name> \\
                --notification-configuration '{"EventBridgeConfiguration": {}}'
        """
        buckets: list[s3.IBucket] = []
        for index, name in enumerate(names):
            bucket = s3.Bucket.from_bucket_name(self, f"ImportedLanding{index}", name)
            if enable_eventbridge:
                bucket.enable_event_bridge_notification()
            buckets.append(bucket)
        if enable_eventbridge:
            self._suppress_notifications_handler()
        return buckets

    def _suppress_notifications_handler(self) -> None:
        stack = Stack.of(self)
        # A stack-wide singleton that CDK creates next to the stack's own resources.
        handler = stack.node.try_find_child("BucketNotificationsHandler050a0587b7544547bf325f094a3db834")
        if handler is None:
            return
        # Both findings are on its role: the managed policy, and an inline s3:PutBucketNotification on "*".
        role = handler.node.find_child("Role")
        suppress(
            role,
            "AwsSolutions-IAM4",
            "CDK's BucketNotifications handler (switches EventBridge on for the imported landing buckets) "
            "uses AWSLambdaBasicExecutionRole only to write its own CloudWatch logs; its role is CDK-owned.",
            applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            "CDK's BucketNotifications handler is granted s3:PutBucketNotification on '*' (an inline policy of "
            "its role) by CDK itself; it only ever calls it on the landing buckets named in this stack.",
            applies_to=["Resource::*"],
        )
