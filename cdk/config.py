"""The stack's settings, read once from CDK context (``cdk.json`` defaults, ``cdk synth -c key=value``).

Values given with ``-c`` arrive as strings, so every reader accepts the string form too: a list as
JSON or comma-separated, a number as digits, a nested object as JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, TypeVar

from constructs import Node

from icegate.constants import (
    DEAD_LETTER,
    HANDLERS,
    LAMBDA_THROTTLING_RETRY,
    LOAD,
    PARSE,
    SCORE,
    TRANSIENT_RETRIES,
    VALIDATE,
)
from icegate.sizing import DEFAULT_MEMORY_MB, MB, limiting_stage, max_input_bytes

_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")

#: Lambda limits (memory in MB, timeout in seconds).
_MEMORY_RANGE = (128, 10_240)
_TIMEOUT_RANGE = (1, 900)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"context {name!r} must be between {low} and {high}, got {value}")


@dataclass(frozen=True)
class FunctionSettings:
    memory_mb: int
    timeout_seconds: int

    def __post_init__(self) -> None:
        _check_range("memory_mb", self.memory_mb, *_MEMORY_RANGE)
        _check_range("timeout_seconds", self.timeout_seconds, *_TIMEOUT_RANGE)


#: Every data stage holds a decoded file in memory, so memory sets the largest file a deployment takes
#: (``icegate.sizing``, which also holds the default memory). The loader merges against the table, so it
#: gets the most time; the dead-letter stage copies server-side and needs little of either.
_DEFAULT_TIMEOUT_SECONDS = {PARSE: 300, VALIDATE: 300, SCORE: 300, LOAD: 900, DEAD_LETTER: 120}
DEFAULT_FUNCTIONS: Mapping[str, FunctionSettings] = MappingProxyType(
    {
        stage: FunctionSettings(memory_mb=DEFAULT_MEMORY_MB[stage], timeout_seconds=timeout)
        for stage, timeout in _DEFAULT_TIMEOUT_SECONDS.items()
    }
)


@dataclass(frozen=True)
class AlarmSettings:
    period_minutes: int = 5
    evaluation_periods: int = 1
    #: Failed executions per period that raise the alarm (every dead-lettered file fails its execution).
    failed_executions_threshold: int = 1
    #: Files routed to the dead-letter path per period that raise the alarm.
    dead_letter_threshold: int = 1
    #: An existing SNS topic the alarms notify; empty means alarms only change state.
    topic_arn: str = ""

    def __post_init__(self) -> None:
        for name in ("period_minutes", "evaluation_periods", "failed_executions_threshold", "dead_letter_threshold"):
            _check_range(name, getattr(self, name), 1, 10_000)


#: The youngest unreferenced file a scheduled orphan removal may delete (``icegate.lake.maintain.MIN_ORPHAN_AGE``,
#: which cdk/ cannot import): a load writes its files before it commits them, and loads run during maintenance.
MIN_ORPHAN_DAYS = 1


@dataclass(frozen=True)
class MaintenanceSettings:
    """The scheduled upkeep of every table of the namespace (``stages.maintainer``)."""

    #: EventBridge Scheduler expression: ``cron(...)``, ``rate(...)``; evaluated in ``schedule_timezone``.
    schedule: str = "cron(0 3 * * ? *)"
    schedule_timezone: str = "UTC"
    #: How often the maintainer brings the HTML report up to date with the ledger (the stages rebuild it at
    #: most once per ICEGATE_REPORT_MIN_INTERVAL_SECONDS, so the end of a burst waits for this); a run with
    #: nothing new costs one catalog call. Empty: no refresh schedule (the next file refreshes the report).
    report_schedule: str = "rate(15 minutes)"
    #: Snapshots older than this (beyond the ``retain_last`` newest) expire; their files are deleted.
    expire_after_days: int = 7
    retain_last: int = 10
    #: Unreferenced files older than this are deleted (never below a day: loads write before they commit).
    orphan_after_days: int = 3
    #: Compaction merges small files into files of this size; loads write each table's own
    #: ``write.target-file-size-bytes`` (128 MB when icegate created the table): keep the two equal.
    target_file_size_mb: int = 128
    #: Compaction holds a partition's small files in memory (and writes files of the target size).
    memory_mb: int = 4096
    timeout_seconds: int = 900

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(cron|rate|at)\(.+\)", self.schedule):
            raise ValueError(
                f"context 'maintenance.schedule' must be cron(...), rate(...) or at(...): {self.schedule!r}"
            )
        if self.report_schedule and not re.fullmatch(r"(cron|rate)\(.+\)", self.report_schedule):
            raise ValueError(
                "context 'maintenance.report_schedule' must be cron(...) or rate(...), or empty for none: "
                f"{self.report_schedule!r}"
            )
        _check_range("maintenance.expire_after_days", self.expire_after_days, 0, 3650)
        _check_range("maintenance.retain_last", self.retain_last, 1, 10_000)
        _check_range("maintenance.orphan_after_days", self.orphan_after_days, MIN_ORPHAN_DAYS, 3650)
        _check_range("maintenance.target_file_size_mb", self.target_file_size_mb, 1, 10_240)
        _check_range("maintenance.memory_mb", self.memory_mb, *_MEMORY_RANGE)
        _check_range("maintenance.timeout_seconds", self.timeout_seconds, *_TIMEOUT_RANGE)

    def request(self) -> dict[str, int]:
        """The maintainer's event (``icegate.lake.maintain.MaintenanceRequest``)."""
        return {
            "expire_after_days": self.expire_after_days,
            "retain_last": self.retain_last,
            "orphan_after_days": self.orphan_after_days,
            "target_file_size_bytes": self.target_file_size_mb * 1024 * 1024,
        }


@dataclass(frozen=True)
class BackfillSettings:
    """The backfill state machine's Distributed Map: how many files at once, how many may fail."""

    #: Ingestion executions running at once; they commit to the same tables, so more mostly adds retries.
    max_concurrency: int = 10
    #: Share of files that may fail (dead-lettered files fail their execution) before the backfill stops.
    tolerated_failure_percentage: int = 10

    def __post_init__(self) -> None:
        # Distributed Map's own limits.
        _check_range("backfill.max_concurrency", self.max_concurrency, 1, 10_000)
        _check_range("backfill.tolerated_failure_percentage", self.tolerated_failure_percentage, 0, 100)


@dataclass(frozen=True)
class PipelineConfig:
    #: Existing landing buckets to import by name; empty means the stack creates one.
    landing_buckets: tuple[str, ...] = ()
    #: Customer-managed KMS keys (key ARNs) that encrypt objects in imported landing buckets: the roles
    #: that read landing (parser, dead-letter) get kms:Decrypt on them, through S3 only.
    landing_kms_key_arns: tuple[str, ...] = ()
    #: For imported landing buckets: let the stack switch their EventBridge notifications on (a CDK
    #: custom resource that merges into the bucket's existing notification configuration).
    landing_enable_eventbridge: bool = True
    #: Physical name of the lake bucket the stack creates (or imports); empty lets CloudFormation name it.
    lake_bucket_name: str = ""
    #: Use the lake bucket ``lake_bucket_name`` and the Glue database ``namespace`` that already exist
    #: (kept by an earlier deployment's ``cdk destroy``, as both are retained) instead of creating them.
    import_lake: bool = False
    #: Glue database = Iceberg namespace.
    namespace: str = "instagram_db"
    functions: Mapping[str, FunctionSettings] = field(default_factory=lambda: DEFAULT_FUNCTIONS)
    processing_expiry_days: int = 7
    #: Days a deleted or overwritten object under the lake's warehouse/ and dlq/ stays restorable (as a
    #: noncurrent version) before lifecycle removes it for good.
    noncurrent_version_expiry_days: int = 7
    log_retention_days: int = 30
    lambda_architecture: str = "x86_64"
    #: Generous on purpose: with retries a run can legitimately take hours (in a burst the load may wait
    #: ~2 h for a loader slot, then run 6 x 15 min); a timed-out run ends in neither the lake nor dlq/ (it is
    #: alarmed and redrivable). Refused below :attr:`longest_load_minutes`.
    execution_timeout_minutes: int = 240
    #: Reserved concurrency of the loader: at most this many loads (and commits) run at once, the rest of
    #: a burst waits in the state machine's throttling Retry. 0 leaves it unreserved (the account's pool).
    loader_concurrency: int = 10
    #: The same for the dead-letter stage, which commits a row to the ledger table per file: a burst of bad
    #: files (a scraper's format change) would otherwise race a thousand ledger commits, and a row that loses
    #: every attempt is missing from the ledger (the file is still in dlq/). 0 leaves it unreserved.
    dead_letter_concurrency: int = 10
    event_max_age_hours: int = 24
    event_retry_attempts: int = 185
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    backfill: BackfillSettings = field(default_factory=BackfillSettings)

    def __post_init__(self) -> None:
        if set(self.functions) != set(HANDLERS):
            raise ValueError(f"context 'functions' must configure exactly the stages {sorted(HANDLERS)}")
        if self.landing_kms_key_arns and not self.landing_buckets:
            raise ValueError(
                "context 'landing_kms_key_arns' is for imported landing buckets ('landing_buckets'); the landing "
                "bucket the stack creates is encrypted with S3-managed keys"
            )
        for arn in self.landing_kms_key_arns:
            if not _KMS_KEY_ARN.fullmatch(arn):
                raise ValueError(
                    f"context 'landing_kms_key_arns' takes key ARNs (arn:aws:kms:<region>:<account>:key/<id>; "
                    f"IAM cannot grant on an alias), got {arn!r}"
                )
        if self.lake_bucket_name and self.lake_bucket_name in self.landing_buckets:
            # The lake receives .parquet files under processing/: the rule would trigger on them forever.
            raise ValueError(f"the lake bucket {self.lake_bucket_name!r} cannot also be a landing bucket")
        if self.import_lake and not self.lake_bucket_name:
            raise ValueError(
                "context 'import_lake' needs 'lake_bucket_name': the lake bucket to use (the LakeBucketName "
                "output of the deployment that created it)"
            )
        if not self.namespace.replace("_", "").isalnum() or self.namespace != self.namespace.lower():
            raise ValueError(f"context 'namespace' must be lower-case letters, digits and '_': {self.namespace!r}")
        if self.lambda_architecture not in ("x86_64", "arm64"):
            raise ValueError(f"context 'lambda_architecture' must be x86_64 or arm64: {self.lambda_architecture!r}")
        _check_range("processing_expiry_days", self.processing_expiry_days, 1, 3650)
        _check_range("noncurrent_version_expiry_days", self.noncurrent_version_expiry_days, 1, 3650)
        _check_range("execution_timeout_minutes", self.execution_timeout_minutes, 1, 525_600)
        # 0 = unreserved. Lambda keeps 100 of the account's concurrency unreserved, so a value near the
        # account's quota fails at deploy time; this catches only what can never work.
        _check_range("loader_concurrency", self.loader_concurrency, 0, 10_000)
        _check_range("dead_letter_concurrency", self.dead_letter_concurrency, 0, 10_000)
        if self.execution_timeout_minutes < self.longest_load_minutes:
            raise ValueError(
                f"context 'execution_timeout_minutes' ({self.execution_timeout_minutes}) is shorter than a load may "
                f"legitimately take in a burst: {self.longest_load_minutes} min (up to "
                f"{LAMBDA_THROTTLING_RETRY.longest_wait_seconds / 60:.0f} min throttled while other loads hold the "
                f"loader's concurrency, then {TRANSIENT_RETRIES + 1} attempts of functions.load.timeout_seconds="
                f"{self.functions[LOAD].timeout_seconds}); raise it, or lower the loader's timeout"
            )
        # EventBridge's own limits for a target's retry policy.
        _check_range("event_max_age_hours", self.event_max_age_hours, 1, 24)
        _check_range("event_retry_attempts", self.event_retry_attempts, 0, 185)
        if self.max_file_bytes < MB:
            stage = limiting_stage(self.memory_mb)
            raise ValueError(
                f"context 'functions.{stage}.memory_mb' ({self.memory_mb[stage]}) leaves no room for a file of "
                "even 1 MB; give that stage more memory"
            )

    @property
    def longest_load_minutes(self) -> int:
        """The longest a Load state may legitimately take: its throttling Retry's bound, then every attempt
        its transient Retry allows running to the function's timeout."""
        seconds = LAMBDA_THROTTLING_RETRY.longest_wait_seconds
        seconds += (TRANSIENT_RETRIES + 1) * self.functions[LOAD].timeout_seconds
        return math.ceil(seconds / 60)

    @property
    def memory_mb(self) -> Mapping[str, int]:
        return {stage: settings.memory_mb for stage, settings in self.functions.items()}

    @property
    def max_file_bytes(self) -> int:
        """The largest file this deployment's memory takes (the parser refuses larger ones as FileTooLarge)."""
        return max_input_bytes(self.memory_mb)

    @classmethod
    def from_context(cls, node: Node) -> PipelineConfig:
        """Read every known key from the construct tree's context; absent keys keep their defaults."""
        config = cls()
        changes: dict[str, Any] = {}
        for f in fields(cls):
            raw = node.try_get_context(f.name)
            if raw is None:
                continue
            if f.name in ("landing_buckets", "landing_kms_key_arns"):
                changes[f.name] = _as_names(f.name, raw)
            elif f.name == "functions":
                changes[f.name] = _as_functions(raw)
            elif f.name == "alarms":
                changes[f.name] = _as_alarms(raw)
            elif f.name == "maintenance":
                changes[f.name] = _as_settings(f.name, MaintenanceSettings, raw)
            elif f.name == "backfill":
                changes[f.name] = _as_settings(f.name, BackfillSettings, raw)
            elif isinstance(getattr(config, f.name), bool):
                changes[f.name] = _as_bool(f.name, raw)
            elif isinstance(getattr(config, f.name), int):
                changes[f.name] = _as_int(f.name, raw)
            else:
                changes[f.name] = str(raw)
        return replace(config, **changes)


def _as_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"context {name!r} must be a whole number, got {raw!r}")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"context {name!r} must be a whole number, got {raw!r}") from None


def _as_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"context {name!r} must be true or false, got {raw!r}")


def _as_object(name: str, raw: Any) -> Mapping[str, Any]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, Mapping):
        raise ValueError(f"context {name!r} must be an object, got {raw!r}")
    return value


def _as_names(name: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        text = raw.strip()
        raw = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(raw, list | tuple):
        raise ValueError(f"context {name!r} must be a list of names, got {raw!r}")
    names = tuple(dict.fromkeys(str(name).strip() for name in raw if str(name).strip()))
    return names


def _as_functions(raw: Any) -> Mapping[str, FunctionSettings]:
    overrides = _as_object("functions", raw)
    unknown = set(overrides) - set(HANDLERS)
    if unknown:
        raise ValueError(f"context 'functions' names unknown stages {sorted(unknown)}; known: {sorted(HANDLERS)}")
    merged = dict(DEFAULT_FUNCTIONS)
    for stage, values in overrides.items():
        current = merged[stage]
        settings = _as_object(f"functions.{stage}", values)
        merged[stage] = FunctionSettings(
            memory_mb=_as_int(f"functions.{stage}.memory_mb", settings.get("memory_mb", current.memory_mb)),
            timeout_seconds=_as_int(
                f"functions.{stage}.timeout_seconds", settings.get("timeout_seconds", current.timeout_seconds)
            ),
        )
    return MappingProxyType(merged)


_Settings = TypeVar("_Settings", "MaintenanceSettings", "BackfillSettings")


def _as_settings(name: str, cls: type[_Settings], raw: Any) -> _Settings:
    """A nested settings object from context: known keys only, numbers as numbers, the rest as text."""
    values = _as_object(name, raw)
    defaults = cls()
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"context {name!r} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
    typed: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        typed[key] = _as_int(f"{name}.{key}", value) if isinstance(default, int) else str(value)
    return cls(**typed)


def _as_alarms(raw: Any) -> AlarmSettings:
    values = _as_object("alarms", raw)
    known = {f.name for f in fields(AlarmSettings)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"context 'alarms' has unknown keys {sorted(unknown)}; known: {sorted(known)}")
    defaults = AlarmSettings()
    return AlarmSettings(
        period_minutes=_as_int("alarms.period_minutes", values.get("period_minutes", defaults.period_minutes)),
        evaluation_periods=_as_int(
            "alarms.evaluation_periods", values.get("evaluation_periods", defaults.evaluation_periods)
        ),
        failed_executions_threshold=_as_int(
            "alarms.failed_executions_threshold",
            values.get("failed_executions_threshold", defaults.failed_executions_threshold),
        ),
        dead_letter_threshold=_as_int(
            "alarms.dead_letter_threshold", values.get("dead_letter_threshold", defaults.dead_letter_threshold)
        ),
        topic_arn=str(values.get("topic_arn", defaults.topic_arn)),
    )
