"""The stage Lambdas: one container image, one function per stage, each with only the grants it needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import CfnOutput, Duration, Size, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.catalog_construct import CatalogConstruct
from cdk.config import FunctionSettings
from cdk.nag import default_policy, nag_resource, suppress
from cdk.storage_construct import StorageConstruct
from icegate.constants import (
    DEAD_LETTER,
    DLQ_PREFIX,
    ENV_CATALOG_TYPE,
    ENV_LAKE_ROOT,
    ENV_MAX_BYTES,
    ENV_MAX_STREAM_BYTES,
    ENV_MAX_UNCOMPRESSED_BYTES,
    ENV_NAMESPACE,
    ENV_WAREHOUSE,
    HANDLERS,
    LOAD,
    PARSE,
    PROCESSING_PREFIX,
    REPORTS_PREFIX,
    SCORE,
    VALIDATE,
    WAITING_FOLDER,
    WAREHOUSE_PREFIX,
)
from icegate.sizing import EPHEMERAL_STORAGE_MB, max_stream_bytes

#: The build context is the repository root (the image needs pyproject.toml, src/ and stages/);
#: ``.dockerignore`` there keeps everything else out of the context and out of the synthesised asset.
REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "stages/Dockerfile"

SERVICE_NAME = "icegate"
#: The stages that read the landing buckets (the source object).
LANDING_READERS = (PARSE, DEAD_LETTER)

_READ = ("s3:GetObject",)
#: The parser and the dead-letter handler read the exact version the event names.
_READ_VERSIONS = ("s3:GetObject", "s3:GetObjectVersion")
#: AbortMultipartUpload lets a writer clean up after itself when a large upload fails.
_WRITE = ("s3:PutObject", "s3:AbortMultipartUpload")
#: The lake is versioned, so a delete only adds a delete marker; DeleteObjectVersion (permanent) is never granted.
_DELETE = ("s3:DeleteObject",)
#: What pyiceberg's Glue catalog calls to load, create and commit a table (the loader never lists tables,
#: and never creates the database: the stack does). tests/integration/test_iam_enforced.py runs on exactly these.
_GLUE_TABLE_ACTIONS = ("glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable")
#: Reading a table through pyiceberg's Glue catalog: its entry, then its metadata and data files.
_GLUE_READ_ACTIONS = ("glue:GetDatabase", "glue:GetTable")

ARCHITECTURES = {
    "x86_64": (lambda_.Architecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
    "arm64": (lambda_.Architecture.ARM_64, ecr_assets.Platform.LINUX_ARM64),
}

_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def retention(days: int) -> logs.RetentionDays:
    """The CloudWatch Logs retention for a number of days (one CloudWatch accepts)."""
    try:
        return _RETENTION[days]
    except KeyError:
        raise ValueError(f"context 'log_retention_days' must be one of {sorted(_RETENTION)}, got {days}") from None


def function_id(stage: str) -> str:
    """``stages.quality_scorer.handler`` -> ``QualityScorer``: the construct id of a stage's function."""
    module = HANDLERS[stage].split(".")[-2]
    return "".join(part.capitalize() for part in module.split("_"))


#: The roles that call Glue, whose Lake Formation permissions an administrator grants where Lake Formation governs
#: the catalog (README, "Accounts governed by Lake Formation"): the stack output naming each. The validator never
#: touches the catalog, so it needs none.
LAKE_FORMATION_ROLE_OUTPUTS: Mapping[str, tuple[str, str]] = {
    PARSE: ("ParserRoleArn", "answers 'already loaded?' from the tables: SELECT, DESCRIBE on all tables"),
    SCORE: ("QualityScorerRoleArn", "the trend gate reads the ledger: SELECT, DESCRIBE on table icegate_loads"),
    LOAD: ("LoaderRoleArn", "creates and commits to the dataset tables: CREATE_TABLE on the database and more"),
    DEAD_LETTER: ("DeadLetterRoleArn", "records dead letters in the ledger: CREATE_TABLE and more on icegate_loads"),
}


class FunctionsConstruct(Construct):
    """One ``DockerImageFunction`` per stage from a single image asset (``stages/Dockerfile``).

    pyarrow + polars + pyiceberg + pandera exceed the 250 MB limit of a zip package, hence the image;
    the five functions differ only in their ``CMD`` (the handler), so the image is built and pushed
    once. ``cdk synth`` only fingerprints the build context; ``cdk deploy`` builds it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: StorageConstruct,
        catalog: CatalogConstruct,
        settings: Mapping[str, FunctionSettings],
        architecture: str,
        log_retention_days: int,
        max_file_bytes: int,
        landing_kms_key_arns: Sequence[str] = (),
        reserved_concurrency: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._storage = storage
        self._catalog = catalog
        lambda_architecture, platform = ARCHITECTURES[architecture]
        lake = storage.lake_bucket.bucket_name
        #: What every function of the deployment reads (icegate.settings); the maintainer gets it too.
        self.environment = environment = {
            ENV_LAKE_ROOT: f"s3://{lake}",
            ENV_CATALOG_TYPE: "glue",
            ENV_WAREHOUSE: f"s3://{lake}/{WAREHOUSE_PREFIX}",
            ENV_NAMESPACE: catalog.database_name,
            # Derived from the functions' memory (PipelineConfig.max_file_bytes), so the two cannot drift:
            # a larger file is dead-lettered as FileTooLarge instead of running a stage out of memory.
            ENV_MAX_BYTES: str(max_file_bytes),
            ENV_MAX_UNCOMPRESSED_BYTES: str(max_file_bytes),
            # A bigger CSV/TSV streams through the stages' /tmp instead (icegate.streamed), sized the same way.
            ENV_MAX_STREAM_BYTES: str(max_stream_bytes(EPHEMERAL_STORAGE_MB)),
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": SERVICE_NAME,
        }
        self.functions: dict[str, lambda_.DockerImageFunction] = {}
        self.roles: dict[str, iam.Role] = {}
        for stage, handler in HANDLERS.items():
            self.functions[stage] = self._build_function(
                stage,
                handler,
                settings[stage],
                environment=environment,
                architecture=lambda_architecture,
                platform=platform,
                log_retention=retention(log_retention_days),
                # The loader and the dead-letter stage commit to shared tables: in a burst of N files, N of them
                # would race N commits (each loss re-plans the merge). Bounded, the rest of the burst waits in
                # the state machine's throttling Retry, costing state transitions, not compute. 0: unreserved.
                reserved_concurrency=(reserved_concurrency or {}).get(stage) or None,
            )
        self._grant_parser()
        self._grant_validator()
        self._grant_quality_scorer()
        self._grant_loader()
        self._grant_dead_letter()
        self._grant_landing_decrypt(landing_kms_key_arns)
        self._build_role_outputs()

    def _build_role_outputs(self) -> None:
        """An output per role that needs Lake Formation permissions, so the README's grants can name them."""
        for stage, (name, why) in LAKE_FORMATION_ROLE_OUTPUTS.items():
            output = CfnOutput(
                self, name, value=self.roles[stage].role_arn, description=f"Grant Lake Formation permissions: {why}"
            )
            # The output's key is the stack's interface (the README's describe-stacks queries): not a path hash.
            output.override_logical_id(name)

    def _build_function(
        self,
        stage: str,
        handler: str,
        settings: FunctionSettings,
        *,
        environment: Mapping[str, str],
        architecture: lambda_.Architecture,
        platform: ecr_assets.Platform,
        log_retention: logs.RetentionDays,
        reserved_concurrency: int | None = None,
    ) -> lambda_.DockerImageFunction:
        name = function_id(stage)
        # An own role per function (no AWSLambdaBasicExecutionRole): logs go to this function's log
        # group only, and the S3/Glue grants below are the whole of what it may do.
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"icegate {stage} stage ({handler})",
        )
        log_group = logs.LogGroup(self, f"{name}Logs", retention=log_retention)
        log_group.grant_write(role)
        function = lambda_.DockerImageFunction(
            self,
            f"{name}Function",
            description=f"icegate {stage} stage: {handler}",
            code=lambda_.DockerImageCode.from_image_asset(
                str(REPO_ROOT),
                file=DOCKERFILE,
                cmd=[handler],
                platform=platform,
            ),
            architecture=architecture,
            memory_size=settings.memory_mb,
            # A streamed file's scratch Parquet passes through /tmp (the dead-letter stage copies, holds nothing).
            ephemeral_storage_size=Size.mebibytes(EPHEMERAL_STORAGE_MB if stage != DEAD_LETTER else 512),
            timeout=Duration.seconds(settings.timeout_seconds),
            environment=dict(environment),
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
        )
        suppress(
            default_policy(role),
            "AwsSolutions-IAM5",
            "X-Ray tracing (active): xray:PutTraceSegments and xray:PutTelemetryRecords do not support "
            "resource-level permissions, so CDK grants them on '*'.",
            applies_to=["Resource::*"],
            apply_to_children=True,
        )
        self.roles[stage] = role
        return function

    def _allow(self, stage: str, actions: Sequence[str], resources: Sequence[str], wildcard_reason: str = "") -> None:
        """Add one statement to a stage's role; a wildcard resource needs the reason cdk-nag will record."""
        role = self.roles[stage]
        role.add_to_policy(iam.PolicyStatement(actions=list(actions), resources=list(resources)))
        wildcards = [finding for finding in (nag_resource(self, r) for r in resources) if "*" in finding]
        if wildcards:
            if not wildcard_reason:
                raise ValueError(f"{stage}: a wildcard resource needs a reason: {wildcards}")
            suppress(
                default_policy(role), "AwsSolutions-IAM5", wildcard_reason, applies_to=wildcards, apply_to_children=True
            )

    @property
    def _landing_objects(self) -> list[str]:
        return [bucket.arn_for_objects("*") for bucket in self._storage.landing_buckets]

    @property
    def _landing_buckets(self) -> list[str]:
        return [bucket.bucket_arn for bucket in self._storage.landing_buckets]

    def _allow_read_landing(self, stage: str) -> None:
        self._allow(
            stage,
            _READ_VERSIONS,
            self._landing_objects,
            "Scrapers write new keys all the time: the stage reads whichever object (and version) the S3 "
            "event names, in the landing buckets only, read-only.",
        )
        # Without s3:ListBucket, S3 answers 403 instead of 404 for a key that was deleted since the event,
        # and the pipeline could not tell SourceNotFound from a permissions fault. ListBucketVersions finds the
        # version a Backfill listed (by its ETag) when the key was re-uploaded since. Names only, no data.
        self._allow(stage, ("s3:ListBucket", "s3:ListBucketVersions"), self._landing_buckets)

    def _grant_parser(self) -> None:
        self._allow_read_landing(PARSE)
        self._allow(
            PARSE,
            _WRITE,
            [self._storage.lake_objects_arn(PROCESSING_PREFIX)],
            "Writes processing/<run id>/parsed.parquet; the run id is the execution name, known only at run time.",
        )
        # A rerun of content already loaded is answered before parsing: the dataset table's snapshot markers
        # (and the ledger, once snapshots expired) say so. Read-only.
        self._allow_read_tables(
            PARSE,
            [self._catalog.tables_arn],
            [self._storage.lake_objects_arn(WAREHOUSE_PREFIX)],
            "Reads the ledger and the dataset table it names (created by the loader on first load, so their "
            "names are not known to the stack) to answer a rerun of loaded content before parsing; read-only.",
        )

    def _grant_validator(self) -> None:
        self._allow(
            VALIDATE,
            (*_READ, *_WRITE),
            [self._storage.lake_objects_arn(PROCESSING_PREFIX)],
            "Reads processing/<run id>/parsed.parquet and writes valid.parquet beside it; the run id "
            "is known only at run time.",
        )
        self._allow(
            VALIDATE,
            _WRITE,
            [self._storage.lake_objects_arn(DLQ_PREFIX)],
            "Keeps rejected rows in dlq/<dataset>/<run id>/rejected.parquet, where they outlive processing/'s "
            "expiry; dataset and run id are known only at run time.",
        )

    def _grant_quality_scorer(self) -> None:
        self._allow(
            SCORE,
            (*_READ, *_WRITE),
            [self._storage.lake_objects_arn(PROCESSING_PREFIX)],
            "Reads processing/<run id>/*.parquet and writes quality.json beside them; the run id is known "
            "only at run time.",
        )
        self._allow(
            SCORE,
            _READ,
            [self._storage.lake_objects_arn(DLQ_PREFIX)],
            "Reads the rejected rows of its run, dlq/<dataset>/<run id>/rejected.parquet, to score them.",
        )
        # The trend gate compares a file with the dataset's recent loads in the ledger. Read-only.
        self._allow_read_tables(
            SCORE,
            [self._catalog.ledger_table_arn],
            [self._storage.lake_objects_arn(self._catalog.ledger_prefix)],
            "Reads the ledger table's metadata and data files, whose names Iceberg generates.",
        )

    def _grant_loader(self) -> None:
        storage, catalog = self._storage, self._catalog
        self._allow(
            LOAD,
            _READ,
            [storage.lake_objects_arn(PROCESSING_PREFIX)],
            "Reads processing/<run id>/valid.parquet and quality.json; the run id is known only at run time.",
        )
        self._allow(
            LOAD,
            (*_WRITE, *_DELETE),
            [storage.lake_objects_arn(f"{PROCESSING_PREFIX}/{WAITING_FOLDER}")],
            "Announces its file under processing/_waiting/<dataset>/ for the next group commit, and removes the "
            "entries of the files it committed (names carry the run id, known only at run time).",
        )
        self._allow(
            LOAD,
            (*_READ, *_WRITE, *_DELETE),
            [storage.lake_objects_arn(WAREHOUSE_PREFIX)],
            "Iceberg writes new data, manifest and metadata files with generated names under warehouse/, "
            "reads the table's existing ones and deletes what it no longer needs (files of a lost commit "
            "attempt; metadata.json beyond write.metadata.previous-versions-max); the loader is the only "
            "writer of the warehouse.",
        )
        # pyiceberg checks whether a file exists with a HEAD: without ListBucket a missing key is a 403.
        self._allow(LOAD, ("s3:ListBucket",), [storage.lake_bucket.bucket_arn])
        self._allow(
            LOAD,
            _GLUE_TABLE_ACTIONS,
            [catalog.catalog_arn, catalog.database_arn, catalog.tables_arn],
            "Tables are created by the loader on first load (one per dataset), so their names are not known "
            "to the stack; the grant is limited to the tables of the icegate database.",
        )
        self._allow_publish_report(LOAD)

    def _grant_dead_letter(self) -> None:
        self._allow_read_landing(DEAD_LETTER)
        self._allow(
            DEAD_LETTER,
            _READ,
            [self._storage.lake_objects_arn(PROCESSING_PREFIX)],
            "Reads processing/<run id>/quality.json to put the quality report into error.json.",
        )
        self._allow(
            DEAD_LETTER,
            _WRITE,
            [self._storage.lake_objects_arn(DLQ_PREFIX)],
            "Copies the source to dlq/<dataset>/<run id>/<name> and writes error.json beside it; dataset and "
            "run id are known only at run time.",
        )
        self._allow(
            DEAD_LETTER,
            _READ,
            [self._storage.lake_objects_arn(DLQ_PREFIX)],
            "A rerun that fails the same way reuses the first entry: reads dlq/<dataset>/_index/<fingerprint>.json "
            "and that entry's error.json to note the rerun in it.",
        )
        # Without s3:ListBucket a missing index object answers 403, not 404 (names only, no data).
        self._allow(DEAD_LETTER, ("s3:ListBucket",), [self._storage.lake_bucket.bucket_arn])
        self._allow(
            DEAD_LETTER,
            ("s3:DeleteObject",),
            [self._storage.lake_bucket.arn_for_objects(f"{DLQ_PREFIX}/*/rejected.parquet")],
            "A rerun that reuses the first entry removes the duplicate rejected rows the validator filed under "
            "the rerun's id (dlq/<dataset>/<run id>/rejected.parquet); it can delete nothing else.",
        )
        self._allow(
            DEAD_LETTER,
            ("s3:DeleteObject",),
            [self._storage.lake_objects_arn(f"{PROCESSING_PREFIX}/{WAITING_FOLDER}")],
            "A loader killed by its runtime (timed out, out of memory) leaves its file waiting for a group commit "
            "under processing/_waiting/<dataset>/; the dead letter of that load deletes the entry so that no other "
            "loader commits the file (names carry the run id, known only at run time).",
        )
        # It records the dead-lettered outcome in the ledger: that table only, never a dataset's.
        catalog = self._catalog
        self._allow(
            DEAD_LETTER,
            _GLUE_TABLE_ACTIONS,
            [catalog.catalog_arn, catalog.database_arn, catalog.ledger_table_arn],
        )
        self._allow(
            DEAD_LETTER,
            (*_READ, *_WRITE, *_DELETE),
            [self._storage.lake_objects_arn(catalog.ledger_prefix)],
            "Appends its row to the ledger table: Iceberg writes data, manifest and metadata files with generated "
            "names under the ledger's own prefix, and deletes those of a lost commit attempt.",
        )
        self._allow_publish_report(DEAD_LETTER)

    def _allow_read_tables(
        self, stage: str, table_arns: Sequence[str], object_arns: Sequence[str], wildcard_reason: str
    ) -> None:
        catalog = self._catalog
        self._allow(
            stage, _GLUE_READ_ACTIONS, [catalog.catalog_arn, catalog.database_arn, *table_arns], wildcard_reason
        )
        self._allow(stage, _READ, object_arns, wildcard_reason)
        # pyiceberg checks whether a file exists with a HEAD: without ListBucket a missing key is a 403.
        self._allow(stage, ("s3:ListBucket",), [self._storage.lake_bucket.bucket_arn])

    def _allow_publish_report(self, stage: str) -> None:
        """The stages that end a file's story rewrite the HTML report (see icegate.report), unless it is younger
        than ICEGATE_REPORT_MIN_INTERVAL_SECONDS: a HEAD (s3:GetObject) tells its age."""
        self._allow(
            stage,
            (*_READ, *_WRITE),
            [self._storage.lake_bucket.arn_for_objects(f"{REPORTS_PREFIX}/*")],
            "Rewrites the HTML quality report under reports/ after a file, when the report is older than a "
            "minimum interval (a HEAD of the report tells).",
        )

    def _grant_landing_decrypt(self, key_arns: Sequence[str]) -> None:
        """kms:Decrypt on the customer keys of imported landing buckets, for the stages that read landing.

        S3 decrypts an SSE-KMS object (GetObject, and the dead-letter CopyObject's source) as the caller, so
        without this the first read is AccessDenied. Only through S3 in this region (kms:ViaService).
        """
        if not key_arns:
            return
        via_s3 = {"StringEquals": {"kms:ViaService": f"s3.{Stack.of(self).region}.amazonaws.com"}}
        for stage in LANDING_READERS:
            self.roles[stage].add_to_policy(
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=list(key_arns), conditions=via_s3)
            )
