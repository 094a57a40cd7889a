"""Upkeep that runs itself: EventBridge Scheduler invokes the maintainer Lambda, which maintains every table.

Why EventBridge Scheduler and not an EventBridge rule with a schedule: cron in a named time zone (a rule's
cron is UTC only), its own retry policy on delivery, and it is the service AWS develops schedules on; it
needs no rule on the default bus beside the trigger's.

Why a Lambda running ``icegate.lake.maintain`` and not AWS's optimizers: the Glue Data Catalog table
optimizers do run on self-managed Iceberg tables in a general-purpose bucket (a role they assume, plus Lake
Formation permissions where it governs the catalog), but their snapshot retention expires snapshots without
carrying icegate's source markers into table properties (``markers.ledger_entries``), so an old file would
no longer be recognised as "already loaded"; their compaction is binpack unless the table declares a sort
order, and starts only past ``minInputFiles`` (100) small files, where ours keeps files key-sorted for the
loader's key-range pruning; and they are billed per DPU-hour. S3 Tables' automatic maintenance exists only
for tables in S3 table buckets. Ours is the code ``icegate maintain`` runs locally, tested the same way.
"""

from __future__ import annotations

from aws_cdk import Duration, TimeZone
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk.catalog_construct import CatalogConstruct
from cdk.config import MaintenanceSettings
from cdk.functions_construct import ARCHITECTURES, DOCKERFILE, REPO_ROOT, retention
from cdk.nag import default_policy, nag_resource, suppress
from cdk.storage_construct import StorageConstruct
from icegate.constants import MAINTAIN, REFRESH_REPORT, REPORTS_PREFIX, UPKEEP_HANDLERS, WAREHOUSE_PREFIX

#: What ``maintain`` does to warehouse/: reads manifests and data, writes compacted files and metadata,
#: deletes what expired snapshots alone used and orphans (a delete marker: the lake is versioned).
_WAREHOUSE_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject")
#: pyiceberg's Glue catalog: list the namespace's tables, load each, commit (never create: the loader does).
_GLUE_ACTIONS = ("glue:GetDatabase", "glue:GetTables", "glue:GetTable", "glue:UpdateTable")


class MaintenanceConstruct(Construct):
    """The maintainer function (same image as the stages), its role, and its schedule."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: StorageConstruct,
        catalog: CatalogConstruct,
        settings: MaintenanceSettings,
        environment: dict[str, str],
        architecture: str,
        log_retention_days: int,
        alarm_topic_arn: str = "",
    ) -> None:
        super().__init__(scope, construct_id)
        handler = UPKEEP_HANDLERS[MAINTAIN]
        lambda_architecture, platform = ARCHITECTURES[architecture]
        self.role = iam.Role(
            self,
            "MaintainerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"icegate table maintenance ({handler})",
        )
        log_group = logs.LogGroup(self, "MaintainerLogs", retention=retention(log_retention_days))
        log_group.grant_write(self.role)
        self.function = lambda_.DockerImageFunction(
            self,
            "MaintainerFunction",
            description=f"icegate table maintenance: {handler}",
            # The same asset as the stages (same context, file and platform): the image is built once.
            code=lambda_.DockerImageCode.from_image_asset(
                str(REPO_ROOT), file=DOCKERFILE, cmd=[handler], platform=platform
            ),
            architecture=lambda_architecture,
            memory_size=settings.memory_mb,
            timeout=Duration.seconds(settings.timeout_seconds),
            environment=environment,
            role=self.role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            # One run at a time: two maintainers would fight over the same commits.
            reserved_concurrent_executions=1,
            # The scheduler invokes asynchronously; one retry covers a run that lost its commits to loads.
            retry_attempts=1,
        )
        self._grant(storage, catalog)
        # Our own role (not CDK's stack-wide singleton), so that its one grant and suppression live here.
        scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
            description="EventBridge Scheduler: invoke the icegate maintainer",
        )
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description="icegate: compact, expire snapshots and remove orphans in every table of the namespace",
            schedule=scheduler.ScheduleExpression.expression(
                settings.schedule, TimeZone.of(settings.schedule_timezone)
            ),
            target=targets.LambdaInvoke(
                self.function,
                input=scheduler.ScheduleTargetInput.from_object(settings.request()),
                role=scheduler_role,
                retry_attempts=3,
                max_event_age=Duration.hours(1),
            ),
        )
        self.report_schedule = (
            scheduler.Schedule(
                self,
                "ReportSchedule",
                description="icegate: bring the HTML quality report up to date with the ledger, if it moved",
                schedule=scheduler.ScheduleExpression.expression(
                    settings.report_schedule, TimeZone.of(settings.schedule_timezone)
                ),
                target=targets.LambdaInvoke(
                    self.function,
                    input=scheduler.ScheduleTargetInput.from_object({REFRESH_REPORT: True}),
                    role=scheduler_role,
                    retry_attempts=3,
                    # The next run does the same: an old refresh event is worth nothing.
                    max_event_age=Duration.minutes(15),
                ),
            )
            if settings.report_schedule
            else None
        )
        suppress(
            default_policy(scheduler_role),
            "AwsSolutions-IAM5",
            "CDK's grant_invoke allows lambda:InvokeFunction on the maintainer and its versions/aliases "
            "('<function arn>:*'); the role can invoke nothing else.",
            applies_to=[nag_resource(self, f"{self.function.function_arn}:*")],
        )
        self.alarm = self._build_alarm(alarm_topic_arn)

    def _build_alarm(self, topic_arn: str) -> cw.Alarm:
        """A failed run (after the asynchronous retry) is the only sign that upkeep stopped: alarm on it."""
        alarm = cw.Alarm(
            self,
            "MaintenanceFailed",
            metric=self.function.metric_errors(period=Duration.hours(1), statistic=cw.Stats.SUM),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,  # no run this hour is not a failure
            alarm_description="icegate: scheduled table maintenance (or report refresh) failed; its log says why",
        )
        if topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", topic_arn)
            alarm.add_alarm_action(cw_actions.SnsAction(topic))
            alarm.add_ok_action(cw_actions.SnsAction(topic))
        return alarm

    def _grant(self, storage: StorageConstruct, catalog: CatalogConstruct) -> None:
        role = self.role
        role.add_to_policy(
            iam.PolicyStatement(
                actions=list(_WAREHOUSE_ACTIONS), resources=[storage.lake_objects_arn(WAREHOUSE_PREFIX)]
            )
        )
        # Orphan removal lists the table folders; and without ListBucket a missing key is a 403, not a 404.
        role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[storage.lake_bucket.bucket_arn]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=list(_GLUE_ACTIONS), resources=[catalog.catalog_arn, catalog.database_arn, catalog.tables_arn]
            )
        )
        suppress(
            default_policy(role),
            "AwsSolutions-IAM5",
            "The maintainer rewrites and deletes Iceberg data, manifest and metadata files with generated names "
            "under warehouse/ of every table, and lists and commits the tables of the icegate database, whose "
            "names the loader chooses at run time.",
            applies_to=[
                nag_resource(self, storage.lake_objects_arn(WAREHOUSE_PREFIX)),
                nag_resource(self, catalog.tables_arn),
            ],
            apply_to_children=True,
        )
        # The report refresh: read the page (which ledger snapshot it shows), write it anew.
        reports = storage.lake_bucket.arn_for_objects(f"{REPORTS_PREFIX}/*")
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:PutObject"], resources=[reports]))
        suppress(
            default_policy(role),
            "AwsSolutions-IAM5",
            "The report refresh reads and rewrites the HTML quality report under reports/ only.",
            applies_to=[nag_resource(self, reports)],
            apply_to_children=True,
        )
        suppress(
            default_policy(role),
            "AwsSolutions-IAM5",
            "X-Ray tracing (active): xray:PutTraceSegments and xray:PutTelemetryRecords do not support "
            "resource-level permissions, so CDK grants them on '*'.",
            applies_to=["Resource::*"],
            apply_to_children=True,
        )
