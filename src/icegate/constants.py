"""Names shared by the library, the Lambda handlers and the CDK app.

Standard library only: ``cdk/`` imports this module, and CDK synthesis must never pull in the
data libraries.
"""

from __future__ import annotations

from typing import Final

#: The stages in execution order, as the state machine and the local runner name them.
PARSE: Final = "parse"
VALIDATE: Final = "validate"
SCORE: Final = "score"
GATE: Final = "gate"
LOAD: Final = "load"
DEAD_LETTER: Final = "dead_letter"

#: Lambda handler of each stage, named by string so that CDK never imports the stages.
HANDLERS: Final[dict[str, str]] = {
    PARSE: "stages.parser.handler",
    VALIDATE: "stages.validator.handler",
    SCORE: "stages.quality_scorer.handler",
    LOAD: "stages.loader.handler",
    DEAD_LETTER: "stages.dead_letter.handler",
}

#: Table upkeep, outside the ingestion state machine: a scheduled function on the same image.
MAINTAIN: Final = "maintain"
#: Handlers that run on a schedule rather than as an ingestion stage (kept apart from ``HANDLERS``, which the
#: state machine, the stage sizing and the per-stage settings are built from).
UPKEEP_HANDLERS: Final[dict[str, str]] = {MAINTAIN: "stages.maintainer.handler"}

#: File suffixes the pipeline accepts (the EventBridge rule filters on these too). A copy of the parser
#: registry's (``icegate.parse.FORMATS`` plus ``.gz``), which cdk/ cannot import; a test ties the two.
SUPPORTED_SUFFIXES: Final = (".csv", ".tsv", ".xlsx", ".json", ".ndjson", ".jsonl", ".parquet", ".gz")

#: Prefixes inside the lake root (a local folder or ``s3://<lake bucket>``).
PROCESSING_PREFIX: Final = "processing"
#: Under ``processing/``: the loads waiting for their table's next group commit (``icegate.waiting``).
WAITING_FOLDER: Final = "_waiting"
WAREHOUSE_PREFIX: Final = "warehouse"
DLQ_PREFIX: Final = "dlq"
#: Where the backfill state machine's ResultWriter puts each run's results (in the lake bucket).
BACKFILL_RESULTS_PREFIX: Final = "backfill-results"
LANDING_PREFIX: Final = "landing"
#: ``icegate backfill --workers``: files run at once by default, and at most.
BACKFILL_DEFAULT_WORKERS: Final = 4
BACKFILL_MAX_WORKERS: Final = 64
#: Where the HTML quality report is published, under the lake root.
REPORTS_PREFIX: Final = "reports"
#: The ingestion ledger, an Iceberg table in the namespace (cdk grants the stages that touch it).
LEDGER_TABLE: Final = "icegate_loads"
#: The embedded SQLite catalog, directly under a local lake root.
CATALOG_DB: Final = "catalog.db"
#: What the dead-letter and validate stages write beside a dead-lettered file.
DLQ_RECORDS: Final = ("error.json", "rejected.parquet")
#: Under dlq/<dataset>/: one small object per (content, stage, error) already filed, naming its entry.
DLQ_INDEX: Final = "_index"

#: Error names the state machine retries before it gives up: exactly the ``TransientError`` classes of
#: ``icegate.errors`` (which refuses a transient class missing here), matched by name by the local runner too.
TRANSIENT_ERRORS: Final = ("CommitConflict", "StorageUnavailable", "CatalogUnavailable")

#: Environment variables read by ``icegate.settings`` (set by CDK on every function).
ENV_PREFIX: Final = "ICEGATE_"
ENV_LAKE_ROOT: Final = "ICEGATE_LAKE_ROOT"
ENV_CATALOG_TYPE: Final = "ICEGATE_CATALOG_TYPE"
ENV_WAREHOUSE: Final = "ICEGATE_WAREHOUSE"
ENV_NAMESPACE: Final = "ICEGATE_NAMESPACE"
#: The parser's size limits (``icegate.settings.Limits``), which CDK derives from the functions' memory.
ENV_MAX_BYTES: Final = "ICEGATE_MAX_BYTES"
ENV_MAX_UNCOMPRESSED_BYTES: Final = "ICEGATE_MAX_UNCOMPRESSED_BYTES"

#: Retry of transient errors, shared by the state machine's Retry and the local runner: this many
#: retries after the first attempt (Step Functions' MaxAttempts), waits growing from the interval by
#: the rate up to the cap, each drawn with full jitter.
TRANSIENT_RETRIES: Final = 5
TRANSIENT_RETRY_INTERVAL_SECONDS: Final = 5
TRANSIENT_RETRY_BACKOFF_RATE: Final = 2.0
TRANSIENT_RETRY_MAX_DELAY_SECONDS: Final = 120
