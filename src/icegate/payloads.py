"""The typed payloads that travel between stages.

They are small JSON documents (references, counts, ids — never rows): Step Functions caps a state at
256 KB. Each stage returns its input extended with its own result, so any state carries everything
the dead-letter handler needs to report on. Standard library only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final, Self, Union
from urllib.parse import unquote_plus

#: Bounds that keep every state far below Step Functions' 256 KB whatever the input (see ``bounded_*``).
MAX_LIST_ITEMS: Final = 50
MAX_ITEM_CHARS: Final = 200
MAX_MESSAGE_CHARS: Final = 4_000


class Payload:
    """JSON round-trip for the dataclasses below (unknown keys are ignored, so that states may grow)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls, data: typing.Mapping[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                values[f.name] = _decode(hints[f.name], data[f.name])
        return cls(**values)


def bounded_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to at most about ``limit`` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def bounded_list(items: typing.Sequence[str], limit: int = MAX_LIST_ITEMS) -> list[str]:
    """The first ``limit`` items, each bounded to ``MAX_ITEM_CHARS``; the caller carries the full count."""
    return [bounded_text(item, MAX_ITEM_CHARS) for item in items[:limit]]


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if isinstance(hint, type) and issubclass(hint, Payload):
        return hint.from_dict(value)
    return value


@dataclass(frozen=True)
class SourceObject(Payload):
    """The file that started a run: the execution input of the state machine.

    ``bucket`` is empty for a local file, whose ``key`` is then its path. ``raw_key`` says that ``key`` is the
    object's key exactly (a bucket listing, a hand-started execution, a key already resolved), not the
    URL-encoded form of an S3 event.
    """

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    raw_key: bool = False

    def __post_init__(self) -> None:
        # An object of a bucket whose versioning is suspended (or written before it was enabled) has version
        # "null", which every such upload of the key shares: it names none of them, their ETags do.
        if self.version_id == "null":
            object.__setattr__(self, "version_id", None)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket else self.key

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def version(self) -> str | None:
        """What identifies this upload among others of the same key."""
        return self.version_id or (self.etag.strip('"') if self.etag else None)

    def key_candidates(self) -> tuple[str, ...]:
        """The keys this object may have, most likely first.

        S3 event notifications URL-encode the key (``"red flower.jpg"`` -> ``"red+flower.jpg"``); Powertools
        decodes it with ``unquote_plus`` and so do we. A key that was already decoded (a rerun started by
        hand) may not survive a second decoding (``a+b.csv``), hence the raw key as the fallback. A key said
        to be raw is only itself: decoding ``a+b.csv`` would read ``a b.csv`` whenever that exists too. A local
        path is never encoded.
        """
        if not self.bucket or self.raw_key:
            return (self.key,)
        decoded = unquote_plus(self.key)
        return (decoded, self.key) if decoded != self.key else (self.key,)


@dataclass(frozen=True)
class Job(Payload):
    """The state after the state machine's first step: the source plus the run id."""

    source: SourceObject
    run_id: str
    #: ISO-8601 time the first stage started, and seconds each stage took (for the ledger).
    started_at: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: The run whose dead-lettered file (or rejected rows) this run replays (``icegate replay``); else "".
    replay_of: str = ""


@dataclass(frozen=True)
class PriorLoad(Payload):
    """The ledger's record of an earlier load of the same content into the same table."""

    run_id: str
    snapshot_id: int | None = None
    #: Content hash of what was loaded (known without reading the object when found by its version).
    sha256: str = ""
    quality_score: float | None = None
    quality_threshold: float | None = None
    dimensions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed(Job):
    dataset: str = ""
    format: str = ""
    #: Content hash of the raw object: the idempotency key of the load.
    sha256: str = ""
    #: ISO-8601 time the object was uploaded (S3 LastModified, local mtime).
    uploaded_at: str = ""
    rows: int = 0
    #: What the parsed rows take in memory (Arrow bytes; 0 for a streamed file): what a loader holds for this
    #: file, and what a group commit weighs it by (a gzip or a workbook holds far more than it stores).
    rows_bytes: int = 0
    columns: list[str] = field(default_factory=list)
    #: Source headers that match no contract column, so are not loaded (reported, never silent): the
    #: first ``MAX_LIST_ITEMS``, each cut to ``MAX_ITEM_CHARS`` (a header can be anything).
    ignored_columns: list[str] = field(default_factory=list)
    #: How many headers were ignored in all; the full list is at ``ignored_columns_uri`` when it was cut.
    ignored_columns_count: int = 0
    ignored_columns_uri: str = ""
    parsed_uri: str = ""
    #: Too big to hold: every stage reads and writes it a slice at a time (``icegate.streamed``).
    streamed: bool = False
    #: Set when the ledger shows this content already loaded: the later stages pass the file through.
    prior_load: PriorLoad | None = None


@dataclass(frozen=True)
class Validated(Parsed):
    valid_uri: str = ""
    rejected_uri: str = ""
    rows_valid: int = 0
    rows_rejected: int = 0
    #: Failed check name -> number of rows that failed it.
    failed_checks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QualitySummary(Payload):
    score: float
    threshold: float
    passed: bool
    dimensions: dict[str, float]
    report_uri: str
    #: Why the gate failed, when it did (score under threshold, dimensions under their floors).
    reason: str = ""


@dataclass(frozen=True)
class Scored(Validated):
    quality: QualitySummary | None = None


@dataclass(frozen=True)
class LoadSummary(Payload):
    table: str
    strategy: str
    inserted: int
    updated: int
    #: Rows whose key the table already held (``insert_new``) or held newer (``upsert``).
    skipped: int
    #: Rows dropped because a later row of the same file has the same key.
    duplicates_in_file: int
    snapshot_id: int | None
    already_loaded: bool = False


@dataclass(frozen=True)
class Loaded(Scored):
    load: LoadSummary | None = None


@dataclass(frozen=True)
class ErrorInfo(Payload):
    """What a Step Functions Catch puts at ``$.error``: the error name and its cause."""

    Error: str
    Cause: str = ""


@dataclass(frozen=True)
class DeadLettered(Payload):
    run_id: str
    dataset: str
    stage: str
    error_type: str
    message: str
    dlq_uri: str
    error_uri: str
    #: The earlier run whose entry this one reuses: same content, same stage, same error (a rerun).
    duplicate_of: str = ""
    #: Why the source could not be copied to ``dlq_uri`` (error.json says it too); empty when it was.
    copy_error: str = ""
