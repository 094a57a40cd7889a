"""The icegate pipeline stack: storage, catalog, functions, state machine, trigger, monitoring."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from cdk.backfill_construct import BackfillConstruct
from cdk.catalog_construct import CatalogConstruct
from cdk.config import PipelineConfig
from cdk.functions_construct import FunctionsConstruct, retention
from cdk.maintenance_construct import MaintenanceConstruct
from cdk.monitoring_construct import MonitoringConstruct
from cdk.state_machine_construct import StateMachineConstruct
from cdk.storage_construct import StorageConstruct
from cdk.trigger_construct import TriggerConstruct
from icegate.constants import DEAD_LETTER, LOAD


class PipelineStack(Stack):
    """Everything one icegate deployment needs; settings come from CDK context (see ``cdk.json``)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: PipelineConfig | None = None, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config or PipelineConfig.from_context(self.node)
        self.storage = self._build_storage()
        self.catalog = self._build_catalog()
        self.functions = self._build_functions()
        self.pipeline = self._build_state_machine()
        self.trigger = self._build_trigger()
        self.monitoring = self._build_monitoring()
        self.maintenance = self._build_maintenance()
        self.backfill = self._build_backfill()
        self._build_outputs()

    def _build_storage(self) -> StorageConstruct:
        return StorageConstruct(
            self,
            "Storage",
            landing_bucket_names=self.config.landing_buckets,
            enable_eventbridge_on_imported=self.config.landing_enable_eventbridge,
            lake_bucket_name=self.config.lake_bucket_name,
            import_lake=self.config.import_lake,
            processing_expiry_days=self.config.processing_expiry_days,
            noncurrent_expiry_days=self.config.noncurrent_version_expiry_days,
        )

    def _build_catalog(self) -> CatalogConstruct:
        return CatalogConstruct(
            self,
            "Catalog",
            database_name=self.config.namespace,
            lake_bucket=self.storage.lake_bucket,
            create=not self.config.import_lake,
        )

    def _build_functions(self) -> FunctionsConstruct:
        return FunctionsConstruct(
            self,
            "Functions",
            storage=self.storage,
            catalog=self.catalog,
            settings=self.config.functions,
            architecture=self.config.lambda_architecture,
            log_retention_days=self.config.log_retention_days,
            max_file_bytes=self.config.max_file_bytes,
            landing_kms_key_arns=self.config.landing_kms_key_arns,
            reserved_concurrency={
                LOAD: self.config.loader_concurrency,
                DEAD_LETTER: self.config.dead_letter_concurrency,
            },
        )

    def _build_state_machine(self) -> StateMachineConstruct:
        return StateMachineConstruct(
            self,
            "Pipeline",
            functions=self.functions.functions,
            log_retention=retention(self.config.log_retention_days),
            timeout=Duration.minutes(self.config.execution_timeout_minutes),
        )

    def _build_trigger(self) -> TriggerConstruct:
        return TriggerConstruct(
            self,
            "Trigger",
            landing_buckets=self.storage.landing_buckets,
            state_machine=self.pipeline.state_machine,
            max_event_age=Duration.hours(self.config.event_max_age_hours),
            retry_attempts=self.config.event_retry_attempts,
        )

    def _build_monitoring(self) -> MonitoringConstruct:
        return MonitoringConstruct(
            self,
            "Monitoring",
            state_machine=self.pipeline.state_machine,
            functions=self.functions.functions,
            undelivered_events=self.trigger.dead_letter_queue,
            settings=self.config.alarms,
        )

    def _build_maintenance(self) -> MaintenanceConstruct:
        return MaintenanceConstruct(
            self,
            "Maintenance",
            storage=self.storage,
            catalog=self.catalog,
            settings=self.config.maintenance,
            environment=self.functions.environment,
            architecture=self.config.lambda_architecture,
            log_retention_days=self.config.log_retention_days,
            alarm_topic_arn=self.config.alarms.topic_arn,
        )

    def _build_backfill(self) -> BackfillConstruct:
        return BackfillConstruct(
            self,
            "Backfill",
            landing_buckets=self.storage.landing_buckets,
            lake_bucket=self.storage.lake_bucket,
            ingestion=self.pipeline.state_machine,
            settings=self.config.backfill,
            log_retention=retention(self.config.log_retention_days),
            # A backfill of months of files runs for a long time; a Standard execution may run a year.
            timeout=Duration.days(7),
        )

    def _build_outputs(self) -> None:
        CfnOutput(self, "LakeBucketName", value=self.storage.lake_bucket.bucket_name)
        CfnOutput(
            self,
            "LandingBucketNames",
            value=",".join(bucket.bucket_name for bucket in self.storage.landing_buckets),
        )
        CfnOutput(self, "StateMachineArn", value=self.pipeline.state_machine.state_machine_arn)
        CfnOutput(
            self,
            "BackfillStateMachineArn",
            value=self.backfill.state_machine.state_machine_arn,
            description='Start with --input \'{"bucket": "<landing bucket>", "prefix": "<optional prefix>"}\'',
        )
        CfnOutput(self, "GlueDatabaseName", value=self.catalog.database_name)
        CfnOutput(
            self,
            "MaxFileBytes",
            value=str(self.config.max_file_bytes),
            description="The largest file the stages' memory takes; larger ones are dead-lettered as FileTooLarge",
        )
        CfnOutput(
            self,
            "MaintainerRoleArn",
            value=self.maintenance.role.role_arn,
            description="The scheduled maintainer also calls Glue: grant it Lake Formation permissions like the loader",
        )
        CfnOutput(self, "UndeliveredEventsQueueUrl", value=self.trigger.dead_letter_queue.queue_url)
