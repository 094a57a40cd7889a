"""Names shared by the library, the Lambda handlers and the CDK app.

Standard library only: ``cdk/`` imports this module, and CDK synthesis must never pull in the
data libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
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
#: The key of the maintainer's other scheduled event, ``{"refresh_report": true}``: rebuild the HTML report if
#: the ledger moved since it was drawn (``icegate.report.refresh``), maintain nothing.
REFRESH_REPORT: Final = "refresh_report"
#: Handlers that run on a schedule rather than as an ingestion stage (kept apart from ``HANDLERS``, which the
#: state machine, the stage sizing and the per-stage settings are built from).
UPKEEP_HANDLERS: Final[dict[str, str]] = {MAINTAIN: "stages.maintainer.handler"}

#: The dataset of a file whose name matches no contract: its DLQ folder (``dlq/unknown/``) and its ledger rows.
UNKNOWN_DATASET: Final = "unknown"

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
#: Every ``outcome`` a ledger row may have: what ``icegate history --outcome`` offers and the ledger documents.
#: ``rolled_back``: a load undone by ``icegate rollback``, under the run id of the ``loaded`` row it undoes.
ROLLED_BACK: Final = "rolled_back"
LEDGER_OUTCOMES: Final = ("loaded", "already_loaded", "dead_lettered", ROLLED_BACK)
#: The embedded SQLite catalog, directly under a local lake root.
CATALOG_DB: Final = "catalog.db"
#: What the dead-letter and validate stages write beside a dead-lettered file.
DLQ_RECORDS: Final = ("error.json", "rejected.parquet")
#: Put before a dead-lettered file's name when its copy would otherwise take the name of one of the records.
DLQ_COPY_PREFIX: Final = "source-"
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
ENV_MAX_STREAM_BYTES: Final = "ICEGATE_MAX_STREAM_BYTES"


@dataclass(frozen=True)
class RetryBudget:
    """One retry policy: ``retries`` after the first attempt (Step Functions' MaxAttempts), each wait drawn
    with full jitter from ``[0, min(interval * rate ** n, max_delay)]``.

    With full jitter the waits of many retries add up to about half their ceilings, tightly: the sum of 50
    waits capped at 60 s is 25 min +- 2 min. ``expected_wait_seconds`` is therefore how long a retrier
    really rides out a condition before it gives up, ``longest_wait_seconds`` its bound.
    """

    retries: int
    interval_seconds: int
    backoff_rate: float
    max_delay_seconds: int

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (0 = the first retry)."""
        return float(min(self.interval_seconds * self.backoff_rate**retry, self.max_delay_seconds))

    @property
    def longest_wait_seconds(self) -> float:
        return sum(self.ceiling(retry) for retry in range(self.retries))

    @property
    def expected_wait_seconds(self) -> float:
        return self.longest_wait_seconds / 2


# Retry budgets, all in one place (README "Bursts" explains the sizing; tests/infra pins the state machine to
# these and the local runner uses TRANSIENT_RETRY).

#: The Lambda service refusing an invoke because the function's reserved concurrency (the loader's
#: ``loader_concurrency``) or the account's is in use: in a burst this is the *queue*. A throttled task waits
#: until a slot frees, so the budget covers draining a burst: 1 000 files through 10 loaders at ~15 s each
#: take ~25 min; 120 retries ride out ~58 min (at most ~1 h 56 min). A retry is one state transition.
LAMBDA_THROTTLING_ERRORS: Final = ("Lambda.TooManyRequestsException",)
LAMBDA_THROTTLING_RETRY: Final = RetryBudget(retries=120, interval_seconds=2, backoff_rate=2.0, max_delay_seconds=60)
#: Errors of the Lambda service itself (not of our code), which a burst makes likelier (scaling out, the
#: invoke call timing out): a few minutes of retries (~4 min expected, at most ~8 min).
LAMBDA_SERVICE_ERRORS: Final = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
)
LAMBDA_SERVICE_RETRY: Final = RetryBudget(retries=12, interval_seconds=2, backoff_rate=2.0, max_delay_seconds=60)

#: Retry of transient errors (``TRANSIENT_ERRORS``), shared by the state machine's Retry and the local
#: runner: ~77 s expected over 5 retries (at most 155 s). Each retry of a CommitConflict is another
#: COMMIT_ATTEMPTS inside the loader, so a file gets (5 + 1) x 8 = 48 commit attempts against at most
#: ``loader_concurrency`` - 1 rivals.
TRANSIENT_RETRY: Final = RetryBudget(retries=5, interval_seconds=5, backoff_rate=2.0, max_delay_seconds=120)
TRANSIENT_RETRIES: Final = TRANSIENT_RETRY.retries
TRANSIENT_RETRY_INTERVAL_SECONDS: Final = TRANSIENT_RETRY.interval_seconds
TRANSIENT_RETRY_BACKOFF_RATE: Final = TRANSIENT_RETRY.backoff_rate
TRANSIENT_RETRY_MAX_DELAY_SECONDS: Final = TRANSIENT_RETRY.max_delay_seconds

#: The loader's own commit loop (``ICEGATE_COMMIT_ATTEMPTS``, ``icegate.lake.commit``): attempts before it
#: raises CommitConflict, and the first backoff (doubling, full jitter, capped at 2 s by the commit loop).
COMMIT_ATTEMPTS: Final = 8
COMMIT_BACKOFF_SECONDS: Final = 0.05
#: Below this every whole number has a double of its own; from it on neighbours share one, so a count read
#: from a double (a spreadsheet cell, a Parquet float) or past it in text cannot be trusted to its last digit.
FLOAT_EXACT: Final = float(2**53)
#: The column of rejected.parquet naming the file its rows came from (``validate``; ``icegate dlq`` reads it
#: without loading the validator's libraries).
SOURCE_FILE: Final = "source_file"
