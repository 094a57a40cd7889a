"""The stages as functions of typed payloads, and the local runner that chains them.

Each ``run_*`` function is what one Lambda does: read its input objects, call the pure module
(``parse``, ``validate``, ``quality``, ``lake``), write its outputs, return its payload. The local
runner executes them in-process with the state machine's semantics: transient errors are retried
with backoff, anything else — and a failed quality gate — goes to the dead-letter stage, which
copies the source to ``dlq/<dataset>/<run_id>/`` beside an ``error.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import pyarrow as pa

from icegate import constants as c
from icegate import streamed
from icegate.datasets import NormalizeContext, detect_dataset, get_dataset
from icegate.errors import (
    FileTooLarge,
    NoValidRows,
    QualityGateFailed,
    SourceNotFound,
    StorageUnavailable,
    TransientError,
    UnknownDataset,
)
from icegate.locations import parse_location
from icegate.parse import ParsedTable, check_size, format_for, parse_bytes
from icegate.payloads import (
    MAX_MESSAGE_CHARS,
    DeadLettered,
    ErrorInfo,
    Job,
    Loaded,
    LoadSummary,
    Parsed,
    Payload,
    PriorLoad,
    QualitySummary,
    Scored,
    SourceObject,
    Validated,
    bounded_list,
    bounded_text,
)
from icegate.quality import QualityTally, resolve_floors, resolve_weights
from icegate.settings import Settings
from icegate.storage import ObjectInfo, Storage, join
from icegate.transient import as_transient
from icegate.trend import baseline, trend_failures
from icegate.validate import no_rejected_rows, validate_table
from icegate.waiting import Alone, InProcessQueue, ObjectQueue, WaitingLoad, WaitingLoads

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from icegate.datasets import Dataset
    from icegate.lake import SourceIdentity
    from icegate.lake.commit import Incoming

P = TypeVar("P", bound=Payload)
J = TypeVar("J", bound=Job)
R = TypeVar("R")
A = ParamSpec("A")
UNKNOWN_DATASET = c.UNKNOWN_DATASET
log = logging.getLogger(__name__)


def new_run_id(now: datetime | None = None) -> str:
    """A local run id, sortable by time (the cloud uses the execution name)."""
    return f"local-{(now or datetime.now(UTC)):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def _extend(cls: type[P], base: Payload, **values: Any) -> P:
    inherited = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    return cls(**{**inherited, **values})


def processing_uri(settings: Settings, run_id: str, name: str) -> str:
    return join(settings.lake_path(c.PROCESSING_PREFIX), run_id, name)


def dlq_folder(settings: Settings, dataset: str, run_id: str) -> str:
    return join(settings.lake_path(c.DLQ_PREFIX), dataset, run_id)


def dlq_copy_name(name: str) -> str:
    """The name of a dead-lettered file's copy in its DLQ folder: its own, unless it is one of the records
    written in that folder (``constants.DLQ_RECORDS``), which the copy would overwrite or be overwritten by.

    Compared ignoring case: a local lake may sit on a case-insensitive file system (``ERROR.JSON``).
    """
    return f"{c.DLQ_COPY_PREFIX}{name}" if name.lower() in c.DLQ_RECORDS else name


def resolve_source(source: SourceObject, storage: Storage) -> tuple[SourceObject, ObjectInfo]:
    """The object an event names, under the key it really has (``SourceObject.key_candidates``).

    The source returned says its key is raw, so a later stage that resolves it again never decodes it again,
    and names one version in a versioned bucket (``_pinned``).
    """
    candidates = source.key_candidates()
    replaced: SourceNotFound | None = None
    for key in candidates:
        candidate = dataclasses.replace(source, key=key, raw_key=bool(source.bucket))
        try:
            info = storage.stat(candidate.uri, source.version_id)
        except SourceNotFound:
            continue
        try:
            return _pinned(candidate, info, storage)
        except SourceNotFound as exc:  # no version with the input's ETag: maybe another object, try the next key
            replaced = replaced or exc
    if replaced is not None:
        raise replaced
    version = f"version {source.version_id} of " if source.version_id else ""
    keys = " nor under the key as the event gave it ".join(repr(key) for key in candidates)
    raise SourceNotFound(
        f"there is no {version}the object {keys}: it was deleted (or that version removed) since the event",
        file=f"s3://{source.bucket}" if source.bucket else None,
    )


def _pinned(source: SourceObject, info: ObjectInfo, storage: Storage) -> tuple[SourceObject, ObjectInfo]:
    """The source with the version id it is read under, so every later read and the DLQ copy take the same bytes.

    An input without a version id (a Backfill listing: bucket, key, etag) would otherwise be read afresh by
    each stage, and a re-upload between them would be loaded, or dead-lettered under another file's error.
    The version is the one whose ETag the input gives — looked up among the key's versions when the object was
    replaced since — else the current one. The dead-letter step after a failed parse gets the input, not what
    the parse learned: the ETag is what makes both take the same version. An unversioned bucket (or an object
    written before versioning, version ``null``) has no version to pin: the input's ETag is what names its upload,
    and every read is conditional on it (``Storage.read_bytes``); another upload there now is not this run's.
    """
    if source.version_id or not source.bucket:
        return source, info
    wanted, now = (source.etag or "").strip('"'), (info.etag or "").strip('"')
    replaced = bool(wanted) and wanted != now
    if info.version_id in (None, "null"):
        if replaced:
            raise SourceNotFound(
                f"the object was replaced since its ETag {wanted} was taken (it is now {now}), and an unversioned "
                "bucket keeps no earlier bytes; the upload there now is a file of its own",
                file=source.uri,
            )
        return source, info
    if replaced:
        listed = storage.find_version(source.uri, wanted)
        if listed is None:
            raise SourceNotFound(
                f"no version with ETag {wanted} is left: the object was replaced since its ETag was taken (it is "
                f"now {now}) and that version removed",
                file=source.uri,
            )
        info = listed
    return dataclasses.replace(source, version_id=info.version_id), info


def _stage(run: Callable[A, R]) -> Callable[A, R]:
    """A stage raises the transient errors of the libraries underneath as the retried ``TransientError``s.

    One place for the Lambdas and the local runner alike, since both retry by class name: a corrupt
    catalog is retried, then filed as ``CatalogUnavailable``, never as "DatabaseError at load" of a good file.
    """

    @functools.wraps(run)
    def staged(*args: A.args, **kwargs: A.kwargs) -> R:
        try:
            return run(*args, **kwargs)
        except Exception as exc:
            source = getattr(args[0] if args else None, "source", None)
            transient = as_transient(exc, file=source.uri if isinstance(source, SourceObject) else None)
            if transient is not None:
                raise transient from exc
            # The Lambda runtime puts str(exc) into the Catch's Cause, which travels in the state: an
            # unforeseen error quoting a whole row or header must not push the state over 256 KB.
            if len(message := str(exc)) > MAX_MESSAGE_CHARS:
                exc.args = (bounded_text(message),)
            raise

    return staged


@_stage
def open_catalog(settings: Settings) -> Catalog:
    """The catalog the settings name; one that cannot be opened is a retried ``CatalogUnavailable``."""
    from icegate.lake import build_catalog  # pyiceberg + sqlalchemy: only the stages that commit pay for them

    return build_catalog(settings)


# --- the stages -------------------------------------------------------------------------------


def _resolve(catalog: Catalog | Callable[[], Catalog] | None, settings: Settings) -> Catalog:
    """The catalog given, opened on demand (a callable), or the settings' one."""
    from icegate.lake import build_catalog  # see open_catalog

    if catalog is None:
        return build_catalog(settings)
    return catalog() if callable(catalog) else catalog


def _timed(stage: str) -> Callable[[Callable[..., P]], Callable[..., P]]:
    """Record when the run started and how long this stage took, in the payload (for the ledger)."""

    def decorate(run: Callable[..., P]) -> Callable[..., P]:
        @functools.wraps(run)
        def timed(state: Job, *args: Any, **kwargs: Any) -> P:
            started, clock = datetime.now(UTC), time.perf_counter()
            result = run(state, *args, **kwargs)
            return dataclasses.replace(
                result,  # type: ignore[type-var]
                started_at=state.started_at or started.isoformat(),
                stage_seconds={**state.stage_seconds, stage: round(time.perf_counter() - clock, 4)},
            )

        return timed

    return decorate


def _prior_load(
    settings: Settings,
    catalog: Catalog | Callable[[], Catalog] | None,
    table: str,
    *,
    sha256: str | None = None,
    version: tuple[str, str, str] | None = None,
) -> PriorLoad | None:
    """The ledger's record of this content (or S3 object version) already loaded into ``table``; ``None``
    also when the ledger cannot be read — the loader's snapshot-marker check still keeps the load exactly-once."""
    from pyiceberg.exceptions import NoSuchTableError

    from icegate import ledger  # the ledger is an Iceberg table: see open_catalog
    from icegate.lake import find_loaded, surely_never_loaded

    try:
        catalog = _resolve(catalog, settings)
        try:
            data_table = catalog.load_table(tuple(table.rsplit(".", 1)))
        except NoSuchTableError:
            return None
        source = (SourceObject(bucket=version[0], key=version[1]).uri, version[2]) if version is not None else None
        if surely_never_loaded(data_table, sha256=sha256, source=source):
            return None  # the table's markers are all its loads: no need to read the ledger
        prior = ledger.find_prior_load(catalog, settings.namespace, table, sha256=sha256, version=version)
        if prior is None or not prior.sha256:
            return None
        # The ledger tells what the load was; the table's own marker confirms (a ledger row cannot outlive the data).
        snapshot_id = find_loaded(data_table, prior.sha256)
    except CatalogNotOpened:
        raise  # not the ledger's failure: the runner stops on it
    except Exception:
        log.warning("could not read the ledger; parsing the file in full", exc_info=True)
        return None
    return dataclasses.replace(prior, snapshot_id=snapshot_id) if snapshot_id is not None else None


@_stage
@_timed(c.PARSE)
def run_parse(
    job: Job,
    settings: Settings,
    storage: Storage,
    catalog: Catalog | Callable[[], Catalog] | None = None,
    inline: streamed.Inline | None = None,
) -> Parsed:
    """Parse the job's file into ``parsed.parquet`` (or find its content loaded already).

    A streamed file is validated and tallied as it is parsed when ``inline`` is given (the three stages run
    in this process): :func:`run_validate` and :func:`run_score` then take their results from it.
    """
    if inline is not None:
        inline.reset()  # a retry: what an earlier attempt took is not this one's
    source, info = resolve_source(job.source, storage)
    # Its size as stored, also when the event did not say it.
    source = dataclasses.replace(source, size=source.size if source.size is not None else info.size)
    job = dataclasses.replace(job, source=source)
    dataset = detect_dataset(source.key)
    streamable = streamed.streams(format_for(source.key).name, dataset)
    big = streamable and info.size > min(settings.limits.stream_above_bytes, settings.limits.max_bytes)
    if not big:
        check_size(info.size, source.uri, settings.limits)  # before downloading it into memory
    # A rerun of content already loaded is answered from the ledger, before any parsing: an S3 object
    # version is immutable, so a loaded one is known before downloading it; other files by their hash.
    table = f"{settings.namespace}.{dataset.table}"
    prior = None
    if source.version_id:
        prior = _prior_load(settings, catalog, table, version=(source.bucket, source.key, source.version_id))
    if prior is not None:
        return _already_parsed(job, dataset.name, info, prior)
    if big:
        streamed.check_size(info.size, source.uri, settings.limits)  # before reading it
        return _parse_streamed(job, info, settings, storage, catalog, inline)
    data = storage.read_bytes(source.uri, source.version_id, etag=source.etag)

    def lookup() -> tuple[str, PriorLoad | None]:
        digest = hashlib.sha256(data).hexdigest()
        return digest, _prior_load(settings, catalog, table, sha256=digest)

    parse = functools.partial(
        parse_bytes,
        data,
        source.key,
        dataset,
        limits=settings.limits,
        encoding=settings.source_encoding,
        normalize=NormalizeContext(phone_region=settings.phone_region),
    )
    try:
        if callable(catalog):  # the catalog is not open yet
            (sha256, prior), parsed = _parse_beside(lookup, parse)
        else:
            (sha256, prior), parsed = lookup(), None
        if prior is not None:
            return _already_parsed(job, dataset.name, info, prior)
        parsed = parsed or parse()
    except FileTooLarge:
        if not streamable:
            raise
        parsed = None  # bigger than the limits once decoded (a gzip, many short rows): streamed below
    if parsed is None:
        del data, parse, lookup  # the streamed parse holds a block at a time, not the whole file beside it
        return _parse_streamed(job, info, settings, storage, catalog, inline)
    parsed_uri = processing_uri(settings, job.run_id, "parsed.parquet")
    storage.write_parquet(parsed_uri, parsed.with_lines())  # lines: where a rejected row is in the file
    columns = (parsed.format, parsed.table.num_rows, parsed.table.column_names, parsed.ignored_columns)
    return _parsed(
        job, dataset.name, info, sha256, *columns, parsed_uri, settings, storage, rows_bytes=parsed.table.nbytes
    )


def _parse_streamed(
    job: Job,
    info: ObjectInfo,
    settings: Settings,
    storage: Storage,
    catalog: Catalog | Callable[[], Catalog] | None,
    inline: streamed.Inline | None,
) -> Parsed:
    """Parse a file too big to hold (``icegate.streamed``), a block at a time, hashing it on the way.

    An object without a version id is also hashed by a second read beside the parse, and the ledger asked
    with that hash (opening the catalog if need be): content found loaded stops the parse at its next
    block, and its parse error with it, as in :func:`_parse_beside`; if the two hashes differ, the object
    was replaced meanwhile and is read again rather than loaded under the other's identity. A pinned
    version cannot change, and the ledger was asked for it already: its content is looked up once parsed.
    The side read is only a shortcut: if it fails, the parse's own hash is looked up.
    """
    source = job.source
    dataset = detect_dataset(source.key)
    table = f"{settings.namespace}.{dataset.table}"

    def lookup() -> tuple[str, PriorLoad | None] | None:
        try:
            digest = storage.sha256(source.uri, source.version_id, etag=source.etag)
        except Exception:
            log.warning("could not hash %s beside its parse; looking it up once parsed", source.uri, exc_info=True)
            return None
        return digest, _prior_load(settings, catalog, table, sha256=digest)

    def side_answer() -> tuple[str, PriorLoad | None] | None:
        return found.result() if found is not None else None

    def found_loaded() -> bool:
        return found is not None and found.done() and (answer := found.result()) is not None and answer[1] is not None

    parsed_uri = processing_uri(settings, job.run_id, "parsed.parquet")
    if inline is not None:
        inline.start(
            storage,
            valid_uri=processing_uri(settings, job.run_id, "valid.parquet"),
            rejected_uri=_rejected_uri(settings, dataset.name, job.run_id),
            dataset=dataset,
            file=source.uri,
            tally=_tally(dataset, source, info.last_modified.isoformat()),
        )
        parsed_uri = ""  # not written: each block went to the validator as it was parsed
    # What the stages apart write under processing/ is left to expire with it (the parser may not delete
    # there); what was validated as it was parsed is removed unless this returns the file parsed.
    validated = False
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="icegate-ledger") as pool:
            found = None if source.version_id else pool.submit(lookup)
            try:
                parsed = streamed.parse(
                    storage,
                    uri=source.uri,
                    version_id=source.version_id,
                    etag=source.etag,
                    name=source.key,
                    dataset=dataset,
                    parsed_uri=parsed_uri,
                    limits=settings.limits,
                    encoding=settings.source_encoding,
                    normalize=NormalizeContext(phone_region=settings.phone_region),
                    stop=found_loaded,
                    inline=inline,
                )
            except Exception:
                if (answer := side_answer()) is not None and answer[1] is not None:
                    return _already_parsed(job, dataset.name, info, answer[1])
                raise
            answer = side_answer()
        if answer is None:  # no side read (a pinned version), or it failed: the parse's own hash asks
            prior = _prior_load(settings, catalog, table, sha256=parsed.sha256)
        elif answer[0] != parsed.sha256:
            raise StorageUnavailable("the object changed while it was read; it will be read again", file=source.uri)
        else:
            prior = answer[1]
        if prior is not None:
            return _already_parsed(job, dataset.name, info, prior)
        validated = True
    finally:
        if inline is not None and not validated:
            inline.discard()  # validated for nothing: the content is loaded, to be read again, or failed
    columns = (parsed.format, parsed.rows, parsed.columns, parsed.ignored_columns)
    return dataclasses.replace(
        _parsed(job, dataset.name, info, parsed.sha256, *columns, parsed_uri, settings, storage), streamed=True
    )


def _already_parsed(job: Job, dataset: str, info: ObjectInfo, prior: PriorLoad) -> Parsed:
    """A file whose content the ledger shows loaded: the later stages pass it through."""
    return _extend(
        Parsed, job, dataset=dataset, sha256=prior.sha256, uploaded_at=info.last_modified.isoformat(), prior_load=prior
    )


def _parsed(
    job: Job,
    dataset: str,
    info: ObjectInfo,
    sha256: str,
    format_name: str,
    rows: int,
    columns: Sequence[str],
    ignored: list[str],
    parsed_uri: str,
    settings: Settings,
    storage: Storage,
    *,
    rows_bytes: int = 0,
) -> Parsed:
    shown = bounded_list(ignored)
    ignored_uri = ""
    if shown != ignored:  # a header can be anything: the payload names a few, the full list is an object
        ignored_uri = processing_uri(settings, job.run_id, "ignored_columns.json")
        storage.write_json(ignored_uri, ignored)
    return _extend(
        Parsed,
        job,
        dataset=dataset,
        format=format_name,
        sha256=sha256,
        uploaded_at=info.last_modified.isoformat(),
        rows=rows,
        rows_bytes=rows_bytes,
        columns=list(columns),
        ignored_columns=shown,
        ignored_columns_count=len(ignored),
        ignored_columns_uri=ignored_uri,
        parsed_uri=parsed_uri,
    )


def _parse_beside(
    lookup: Callable[[], tuple[str, PriorLoad | None]], parse: Callable[[], ParsedTable]
) -> tuple[tuple[str, PriorLoad | None], ParsedTable | None]:
    """The content's hash and the ledger's answer for it, and the parse, side by side.

    Hashing the file, opening a catalog (importing pyiceberg and sqlalchemy, ~1 s) and reading the
    ledger take about as long as parsing a big file, and mostly wait in hashlib or need the
    interpreter while the parse mostly runs in Arrow and polars: one waits for the other no more.
    Content found loaded drops its parse, and its parse error with it, as if it had never been parsed.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="icegate-ledger") as pool:
        found = pool.submit(lookup)
        try:
            parsed = parse()
        except Exception:
            if found.result()[1] is not None:
                return found.result(), None
            raise
        return found.result(), parsed


@_stage
@_timed(c.VALIDATE)
def run_validate(
    parsed: Parsed, settings: Settings, storage: Storage, inline: streamed.Inline | None = None
) -> Validated:
    """Split the parsed rows into valid and rejected ones (a streamed file's, if ``inline`` took them: its counts)."""
    if parsed.prior_load is not None:
        return _extend(Validated, parsed)
    dataset = get_dataset(parsed.dataset)
    valid_uri = processing_uri(settings, parsed.run_id, "valid.parquet")
    if parsed.streamed:
        rejected_uri = _rejected_uri(settings, dataset.name, parsed.run_id)
        if inline is not None and inline.started:
            counts = inline.validation()
        else:
            counts = streamed.validate(
                storage,
                parsed_uri=parsed.parsed_uri,
                valid_uri=valid_uri,
                rejected_uri=rejected_uri,
                dataset=dataset,
                file=parsed.source.uri,
            )
        return _extend(
            Validated,
            parsed,
            valid_uri=valid_uri,
            rejected_uri=rejected_uri if counts.rows_rejected else "",
            rows_valid=counts.rows_valid,
            rows_rejected=counts.rows_rejected,
            failed_checks=counts.failed_checks,
        )
    result = validate_table(storage.read_parquet(parsed.parsed_uri), dataset, file=parsed.source.uri)
    storage.write_parquet(valid_uri, result.valid)
    rejected_uri = ""
    if result.rejected.num_rows:
        rejected_uri = _rejected_uri(settings, dataset.name, parsed.run_id)
        storage.write_parquet(rejected_uri, result.rejected)
    return _extend(
        Validated,
        parsed,
        valid_uri=valid_uri,
        rejected_uri=rejected_uri,
        rows_valid=result.valid.num_rows,
        rows_rejected=result.rejected.num_rows,
        failed_checks=result.failed_checks,
    )


@_stage
@_timed(c.SCORE)
def run_score(
    validated: Validated,
    settings: Settings,
    storage: Storage,
    catalog: Catalog | Callable[[], Catalog] | None = None,
    inline: streamed.Inline | None = None,
) -> Scored:
    """Score the validated rows against the quality gate (a streamed file's tally, if ``inline`` took it)."""
    if (prior := validated.prior_load) is not None:
        # The gate lets it through to the loader, which records "already loaded": the score shown
        # is the one the content had when it was loaded.
        quality = QualitySummary(prior.quality_score or 0.0, prior.quality_threshold or 0.0, True, prior.dimensions, "")
        return _extend(Scored, validated, quality=quality)
    dataset = get_dataset(validated.dataset)
    if validated.rows_valid == 0:
        raise _no_valid_rows(validated)
    weights = resolve_weights(dataset, settings.quality_weights)
    floors = resolve_floors(dataset, settings.quality_floors)
    threshold = settings.quality_thresholds.get(dataset.name, dataset.quality_threshold)
    if validated.streamed and inline is not None and inline.started:
        tally = inline.scored()  # every slice was added as it was parsed
    else:
        tally = _tally(dataset, validated.source, validated.uploaded_at)
        if validated.streamed:
            streamed.tally(storage, tally, valid_uri=validated.valid_uri, rejected_uri=validated.rejected_uri)
        else:
            rejected_uri = validated.rejected_uri
            tally.add(
                storage.read_frame(validated.valid_uri),
                storage.read_frame(rejected_uri) if rejected_uri else no_rejected_rows(dataset),
            )
    report = tally.report(weights=weights, floors=floors, threshold=threshold)
    document = report.to_dict()
    if dataset.trend_gate is not None and (failures := _trend_failures(validated, report.score, settings, catalog)):
        document["passed"] = False
        document["reason"] = "; ".join(filter(None, [report.reason, *failures]))
        document["trend_failures"] = failures
    report_uri = processing_uri(settings, validated.run_id, "quality.json")
    storage.write_json(report_uri, document)
    summary = QualitySummary(
        score=report.score,
        threshold=report.threshold,
        passed=document["passed"],
        dimensions=report.dimension_scores(),
        report_uri=report_uri,
        reason=document["reason"],
    )
    return _extend(Scored, validated, quality=summary)


def _rejected_uri(settings: Settings, dataset: str, run_id: str) -> str:
    # Rejected rows outlive processing/ (which expires): they sit with the run's DLQ entry.
    return join(dlq_folder(settings, dataset, run_id), "rejected.parquet")


def _tally(dataset: Dataset, source: SourceObject, uploaded_at: str) -> QualityTally:
    return QualityTally(dataset, file=source.name, upload_date=datetime.fromisoformat(uploaded_at).date())


def _trend_failures(
    validated: Validated, score: float, settings: Settings, catalog: Catalog | Callable[[], Catalog] | None
) -> list[str]:
    """The trend gate against the dataset's last loaded files in the ledger (passes when it cannot be read)."""
    from icegate import ledger  # see open_catalog

    gate = get_dataset(validated.dataset).trend_gate
    assert gate is not None
    try:
        recent = ledger.recent_loaded(_resolve(catalog, settings), settings.namespace, validated.dataset, gate.window)
    except Exception:
        log.warning("could not read the ledger: the trend gate passes this file", exc_info=True)
        return []
    base = baseline(recent["quality_score"].to_list(), recent["rows_read"].to_list())
    return trend_failures(gate, base, dataset=validated.dataset, score=score, rows=validated.rows)


def _no_valid_rows(validated: Validated) -> NoValidRows:
    """A file the schema rejected entirely is dead-lettered as such: a score of it would describe nothing loadable."""
    worst = sorted(validated.failed_checks.items(), key=lambda item: -item[1])[:3]
    checks = ", ".join(f"{name} ({rows} rows)" for name, rows in worst)
    return NoValidRows(
        f"the schema of dataset {validated.dataset!r} rejected all {validated.rows_rejected} rows, so there is "
        f"nothing to load; most failed checks: {checks}; every rejected row with the checks it failed: "
        f"{validated.rejected_uri}",
        file=validated.source.uri,
    )


def passes_gate(scored: Scored) -> bool:
    """The Choice state: load only a file whose quality passed."""
    return scored.quality is not None and scored.quality.passed


@_stage
def run_load(
    scored: Scored,
    settings: Settings,
    storage: Storage,
    catalog: Catalog | None = None,
    waiting: WaitingLoads | None = None,
) -> Loaded:
    """Commit the file's valid rows — with the files ``waiting`` for the same table (``icegate.waiting``) —
    and record each committed file in the ledger, in one append."""
    from icegate import ledger  # see open_catalog
    from icegate.lake import load_group

    clock = time.perf_counter()
    dataset = get_dataset(scored.dataset)
    catalog = catalog or open_catalog(settings)
    if (prior := scored.prior_load) is not None:
        table = f"{settings.namespace}.{dataset.table}"
        already = LoadSummary(table, dataset.strategy, 0, 0, 0, 0, prior.snapshot_id, already_loaded=True)
        loaded = _loaded(scored, already, clock)
        rows = _ledger_rows([(loaded, _report_of(scored, storage))], settings, catalog)
        ledger.record_rows(catalog, settings.namespace, rows)
        return loaded
    if scored.streamed:
        return _load_streamed(scored, settings, storage, catalog, waiting or Alone(), clock)
    incoming = _incoming(scored, storage)
    own = WaitingLoad(scored, _report_of(scored, storage), incoming)
    with (waiting or Alone()).turn(own) as turn:
        if turn.loaded is not None:  # another loader's group commit took this file, and recorded it
            return dataclasses.replace(turn.loaded, stage_seconds=_loaded(scored, None, clock).stage_seconds)
        taken = {own.run_id: own}

        def others() -> list[Incoming]:
            # A streamed file waits without rows: the group's budget never takes it.
            found = [w for w in turn.others() if w.incoming is not None]
            taken.update((w.run_id, w) for w in found)
            return [w.incoming for w in found if w.incoming is not None]

        group = load_group(
            catalog,
            dataset,
            incoming,
            namespace=settings.namespace,
            waiting=others,
            attempts=settings.commit_attempts,
            backoff_seconds=settings.commit_backoff_seconds,
        )
        done = {run_id: _loaded(taken[run_id].scored, load, clock) for run_id, load in group.loads.items()}
        for run_id, reason in group.left_out.items():
            log.warning("left %s out of this group commit (its own load will meet it): %s", run_id, reason)
        rows = _ledger_rows([(done[r], taken[r].report) for r in done], settings, catalog)
        # Only this file's row cannot be there yet. The other files' loaders run on: one that finds its
        # file's marker before this append lands records its row itself, so those are looked for.
        own_row = {scored.run_id} if group.committed else set()
        ledger.record_rows(catalog, settings.namespace, rows, just_committed=own_row)
        turn.finish(done)
    return done[scored.run_id]


def _load_streamed(
    scored: Scored, settings: Settings, storage: Storage, catalog: Catalog, waiting: WaitingLoads, clock: float
) -> Loaded:
    """A file too big to hold commits alone, a slice at a time (a group holds its files' rows together).

    It still takes its table's turn: in one process the turn is a lock, so the group commits of smaller
    files wait for it instead of making it re-plan every slice each time one lands first.
    """
    from icegate import ledger  # see open_catalog

    report = _report_of(scored, storage)
    with waiting.turn(WaitingLoad(scored, report, incoming=None)):
        summary = streamed.load(
            catalog,
            storage,
            valid_uri=scored.valid_uri,
            dataset=get_dataset(scored.dataset),
            identity=_identity(scored),
            namespace=settings.namespace,
            attempts=settings.commit_attempts,
            backoff_seconds=settings.commit_backoff_seconds,
        )
    loaded = _loaded(scored, summary, clock)
    rows = _ledger_rows([(loaded, report)], settings, catalog)
    # Looked for, not appended blindly: a load found committed by this run's earlier attempt (a retried
    # Task) also reports its counts, not "already loaded", and that attempt may have recorded it. One
    # ledger scan is little beside streaming a file too big to hold.
    ledger.record_rows(catalog, settings.namespace, rows)
    return loaded


def object_queue(settings: Settings, storage: Storage) -> ObjectQueue:
    """The loaders' waiting room in the lake (the Lambdas: one process per load)."""
    root = settings.lake_path(c.PROCESSING_PREFIX, c.WAITING_FOLDER)
    read_rows = functools.partial(_incoming, storage=storage)
    return ObjectQueue(storage, root, read_rows, settings.group_max_files, settings.limits.max_bytes)


def _incoming(scored: Scored, storage: Storage) -> Incoming:
    from icegate.lake import prepare  # see open_catalog

    return prepare(get_dataset(scored.dataset), storage.read_frame(scored.valid_uri), _identity(scored))


def _identity(scored: Scored) -> SourceIdentity:
    from icegate.lake import SourceIdentity  # see open_catalog

    return SourceIdentity(
        sha256=scored.sha256, file=scored.source.uri, version=scored.source.version, run_id=scored.run_id
    )


def _loaded(scored: Scored, load: LoadSummary | None, clock: float) -> Loaded:
    return _extend(
        Loaded,
        scored,
        load=load,
        started_at=scored.started_at or datetime.now(UTC).isoformat(),
        stage_seconds={**scored.stage_seconds, c.LOAD: round(time.perf_counter() - clock, 4)},
    )


def _report_of(scored: Scored, storage: Storage) -> Mapping[str, Any] | None:
    if scored.quality is None or not scored.quality.report_uri:
        return None
    try:
        report: Mapping[str, Any] = storage.read_json(scored.quality.report_uri)
    except Exception:
        log.warning("no quality report for the ledger at %s", scored.quality.report_uri, exc_info=True)
        return None
    return report


def _ledger_rows(
    loads: list[tuple[Loaded, Mapping[str, Any] | None]], settings: Settings, catalog: Catalog
) -> list[dict[str, Any]]:
    """The ledger rows of loads into one table (with their quality reports), written after the data commit."""
    from icegate import ledger  # see open_catalog

    table_uuid = None
    if loads and (load := loads[0][0].load) is not None:
        try:
            table_uuid = str(catalog.load_table(tuple(load.table.rsplit(".", 1))).metadata.table_uuid)
        except Exception:
            log.warning("could not read the uuid of %s for the ledger", load.table, exc_info=True)
    return [
        ledger.row_for_load(loaded, namespace=settings.namespace, report=report, table_uuid=table_uuid)
        for loaded, report in loads
    ]


def _recorded_in_ledger(run: Callable[..., DeadLettered]) -> Callable[..., DeadLettered]:
    """After the DLQ entry is filed (or an earlier one reused), its ledger row — never a condition of it."""

    @functools.wraps(run)
    def recorded(
        state: Mapping[str, Any],
        stage: str,
        error: ErrorInfo,
        settings: Settings,
        storage: Storage,
        catalog: Catalog | Callable[[], Catalog] | None = None,
    ) -> DeadLettered:
        from icegate import ledger  # see open_catalog
        from icegate.lake import build_catalog

        entry = run(state, stage, error, settings, storage)
        row = ledger.row_for_dead_letter(state, entry, report=_quality_report(state, storage)[0])
        ledger.record(catalog or (lambda: build_catalog(settings)), settings.namespace, row)
        return entry

    return recorded


def _stop_waiting(settings: Settings, storage: Storage, dataset: str, run_id: str) -> None:
    """A loader killed by its runtime (timed out, out of memory) left its file waiting for a group commit: no
    other loader may commit it once its execution dead-letters it. Filing goes on if this fails."""
    try:
        for uri in object_queue(settings, storage).stop_waiting(dataset, run_id):
            log.warning("removed the waiting entry %s of the failed load", uri)
    except Exception:
        log.exception("could not remove the waiting entries of run %s", run_id)


@_recorded_in_ledger
@_stage
def run_dead_letter(
    state: Mapping[str, Any], stage: str, error: ErrorInfo, settings: Settings, storage: Storage
) -> DeadLettered:
    """Write an ``error.json`` that says what failed, where and why, then copy the source beside it.

    ``error.json`` comes first and is written whatever happens to the copy (the object deleted, its version
    gone, access refused): it then says that the copy failed and why, so a file is never lost without its
    reason. A rerun that fails the same way on the same content reuses the first entry (see
    ``_reuse_earlier_entry``) instead of filing the same file again.
    """
    given = SourceObject.from_dict(state["source"]) if "source" in state else SourceObject.from_dict(state)
    run_id = str(state.get("run_id") or new_run_id())
    error_type, message = _describe(error)
    message = bounded_text(message)
    located: BaseException | None = None
    try:
        source, info = resolve_source(given, storage)
    except Exception as exc:  # gone or unreadable: the reason is still filed, with why the copy failed
        source, info, located = given, None, exc
    dataset = str(state.get("dataset") or _dataset_or_unknown(source.key))
    if stage == c.LOAD:
        _stop_waiting(settings, storage, dataset, run_id)
    fingerprint = _fingerprint(state, source, info, dataset, stage, error_type, message)
    index = join(settings.lake_path(c.DLQ_PREFIX), dataset, c.DLQ_INDEX)
    index_uri = join(index, f"{fingerprint}.json") if fingerprint else ""
    if index_uri and (earlier := _reuse_earlier_entry(index_uri, state, run_id, storage)):
        return earlier

    folder = dlq_folder(settings, dataset, run_id)
    dlq_uri = join(folder, dlq_copy_name(source.name))
    error_uri = join(folder, "error.json")
    report, report_error = _quality_report(state, storage)
    document: dict[str, Any] = {
        "stage": stage,
        "error_type": error_type,
        "message": message,
        # Where in the file, as fields (also stated in the message): line, row, column — or null.
        **parse_location(message),
        "dataset": dataset,
        "run_id": run_id,
        "time": datetime.now(UTC).isoformat(),
        "source": {**source.to_dict(), "uri": source.uri, "sha256": state.get("sha256") or None},
        "dead_letter_uri": dlq_uri,
        "copy": {"status": "pending"},
        "rows": {k: state[k] for k in ("rows", "rows_valid", "rows_rejected") if k in state},
        "rejected_rows_uri": state.get("rejected_uri") or None,
        "quality": report,
        **({"quality_error": report_error} if report_error else {}),
    }
    storage.write_json(error_uri, document)
    copy_error = ""
    try:
        if located is not None:
            raise located
        storage.copy(source.uri, dlq_uri, source.version_id, etag=source.etag)
    except Exception as exc:
        copy_error = bounded_text(f"{type(exc).__name__}: {exc}")
        document["copy"] = {"status": "failed", "error": copy_error}
        storage.write_json(error_uri, document)
        if isinstance(exc, TransientError) or as_transient(exc):
            raise  # retried: the copy may yet succeed, and error.json already says why it has not
    else:
        document["copy"] = {"status": "copied"}
        storage.write_json(error_uri, document)
        if index_uri:
            storage.write_json(index_uri, {"run_id": run_id, "error_uri": error_uri, "dlq_uri": dlq_uri})
    return DeadLettered(run_id, dataset, stage, error_type, message, dlq_uri, error_uri, copy_error=copy_error)


#: How many reruns an entry lists by run id (the count is kept in full).
_MAX_RERUNS_LISTED = 20


def _fingerprint(
    state: Mapping[str, Any],
    source: SourceObject,
    info: ObjectInfo | None,
    dataset: str,
    stage: str,
    error_type: str,
    message: str,
) -> str:
    """Identity of "this content failed this way", or "" when the content cannot be identified.

    What in a message is the run's, not the way it failed, is left out: where this run filed the rejected rows
    (``NoValidRows``), and the file's folder (a replay reads the file from its copy in ``dlq/``).
    """
    if rejected := str(state.get("rejected_uri") or ""):
        message = message.replace(rejected, "<rejected rows>")
    message = message.replace(source.uri, source.name)
    if state.get("sha256"):
        content = f"sha256:{state['sha256']}"
    elif info is not None and info.etag:
        content = f"etag:{info.etag.strip(chr(34))}:{info.size}"  # S3's own content identity, no download
    elif info is not None and not source.bucket:
        content = f"sha256:{Storage().sha256(source.key)}"
    else:
        return ""
    reason = json.dumps([content, dataset, stage, error_type, message], ensure_ascii=False)
    return hashlib.sha256(reason.encode()).hexdigest()


def _reuse_earlier_entry(
    index_uri: str, state: Mapping[str, Any], run_id: str, storage: Storage
) -> DeadLettered | None:
    """The entry an earlier run filed for the same content and reason, now noting this rerun; else None."""
    if not storage.exists(index_uri):
        return None
    index = storage.read_json(index_uri)
    if index.get("run_id") == run_id or not storage.exists(index["error_uri"]):
        return None  # this run's own entry (a retried dead-letter step), or one that is gone: file anew
    entry = storage.read_json(index["error_uri"])
    reruns = [*entry.get("reruns", []), run_id][-_MAX_RERUNS_LISTED:]
    entry.update(reruns=reruns, rerun_count=int(entry.get("rerun_count", 0)) + 1)
    storage.write_json(index["error_uri"], entry)
    # The validator filed this run's rejected rows under its own run id: the first entry has the same rows.
    rejected = str(state.get("rejected_uri") or "")
    if rejected and run_id in rejected and rejected != entry.get("rejected_rows_uri"):
        storage.delete(rejected)
    return DeadLettered(
        run_id,
        str(entry["dataset"]),
        str(entry["stage"]),
        str(entry["error_type"]),
        str(entry["message"]),
        str(index["dlq_uri"]),
        str(index["error_uri"]),
        duplicate_of=str(index["run_id"]),
    )


def _quality_report(state: Mapping[str, Any], storage: Storage) -> tuple[Any, str]:
    """The run's quality report for error.json, and why it could not be read (it must not stop the filing)."""
    quality = state.get("quality") or {}
    if not quality.get("report_uri"):
        return None, ""
    try:
        return storage.read_json(quality["report_uri"]), ""
    except Exception as exc:
        return None, bounded_text(f"{type(exc).__name__}: {exc}")


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as a Step Functions Catch records it (the Lambda error document as the cause)."""
    name = type(exc).__name__
    return ErrorInfo(Error=name, Cause=json.dumps({"errorType": name, "errorMessage": str(exc)}))


def gate_error(scored: Scored) -> ErrorInfo:
    quality = scored.quality
    assert quality is not None
    # The reason already states the score, threshold and floors that failed (the state machine says the same); the
    # file leads, as in every other error's message (IcegateError's ``file=``), so a DLQ message names its file.
    cause = str(QualityGateFailed(f"quality gate failed: {quality.reason}", file=scored.source.uri))
    return ErrorInfo(Error=QualityGateFailed.__name__, Cause=cause)


def _describe(error: ErrorInfo) -> tuple[str, str]:
    """Error type and message from a Catch record (a Lambda cause is a JSON error document)."""
    try:
        cause = json.loads(error.Cause)
    except ValueError:
        return error.Error, error.Cause
    if isinstance(cause, dict):
        return str(cause.get("errorType") or error.Error), str(cause.get("errorMessage") or error.Cause)
    return error.Error, error.Cause


def _dataset_or_none(key: str) -> str | None:
    try:
        return detect_dataset(key).name
    except UnknownDataset:
        return None


def _dataset_or_unknown(key: str) -> str:
    try:
        return detect_dataset(key).name
    except UnknownDataset:
        return UNKNOWN_DATASET


# --- the local runner -------------------------------------------------------------------------

#: ``failed``: even the dead-letter step failed (the file is neither loaded nor filed; ``error`` says why).
Outcome = Literal["loaded", "already_loaded", "dead_lettered", "failed"]


@dataclass(frozen=True)
class FileOutcome:
    source: SourceObject
    run_id: str
    outcome: Outcome
    #: The last payload reached (``Loaded`` on success).
    state: Payload
    dead_letter: DeadLettered | None = None
    seconds: float = 0.0
    error: str = ""


ProgressHook = Callable[[SourceObject, str], None]


class WorkerProcessDied(Exception):
    """A process running files' stages for ``LocalRunner.run_many`` stopped: the run stops, saying so."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or ``on_done`` raising a KeyboardInterrupt) stopped ``LocalRunner.run_many``.

    ``outcomes`` are the files that ended, in the order of the sources: also those that were running at the
    interrupt and finished after it, whose rows are committed and whose ledger rows are written.
    """

    def __init__(self, outcomes: list[FileOutcome]) -> None:
        super().__init__(f"interrupted after {len(outcomes)} files")
        self.outcomes = outcomes


class CatalogNotOpened(Exception):
    """The opener a ``LocalRunner`` was given failed: the run stops with the opener's own error (``error``)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class LocalRunner:
    """Runs files through the stages in-process, with the state machine's retry and catch semantics.

    ``catalog`` is a catalog, or a function that opens one: it is called while the first file
    parses (opening a catalog takes about as long), and if it fails, the run stops with its
    error before any file leaves a trace (the command line's "cannot open the catalog"). Without
    either, the settings' catalog is opened when first needed, and one that is down fails the load.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage | None = None,
        catalog: Catalog | Callable[[], Catalog] | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage or Storage(settings.s3_endpoint)
        self._catalog: Catalog | None = None
        self._opener: Callable[[], Catalog] | None = None
        self._opener_error: Exception | None = None
        self._opening = threading.Lock()
        if callable(catalog):
            self._opener = catalog
        else:
            self._catalog = catalog

    @property
    def catalog(self) -> Catalog:
        with self._opening:  # files on several threads open it once
            if self._catalog is None:
                if self._opener is not None:
                    self._catalog = self._open_once(self._opener)
                else:
                    if self.settings.is_local:
                        Path(self.settings.lake_path()).mkdir(parents=True, exist_ok=True)
                    self._catalog = open_catalog(self.settings)
            return self._catalog

    def _open_once(self, opener: Callable[[], Catalog]) -> Catalog:
        if self._opener_error is None:
            try:
                return opener()
            except Exception as exc:
                self._opener_error = exc
        raise CatalogNotOpened(self._opener_error)

    def _ledger_catalog(self) -> Catalog:
        return self.catalog

    def _parse_catalog(self) -> Catalog | Callable[[], Catalog]:
        """What the parse reads the ledger with: the catalog once open, else what opens it (beside the parse)."""
        return self._catalog if self._catalog is not None else self._ledger_catalog

    def run(
        self,
        source: SourceObject,
        *,
        on_stage: ProgressHook | None = None,
        keep_processing: bool = False,
        replay_of: str = "",
    ) -> FileOutcome:
        return self._run(source, self.storage, Alone(), on_stage, keep_processing, replay_of)

    def run_many(
        self,
        sources: Sequence[SourceObject],
        *,
        workers: int = 1,
        on_stage: ProgressHook | None = None,
        on_done: Callable[[FileOutcome], None] | None = None,
        keep_processing: bool = False,
        group: bool = True,
        processes: int | None = None,
    ) -> list[FileOutcome]:
        """Run files ``workers`` at a time; a table's loads group-commit what waits (``icegate.waiting``).

        Parse, validate and score run in ``processes`` worker processes (by default one per CPU, when more
        than one file runs at a time): they are Python-heavy, and threads of one process would take turns
        on one core. Loads run on ``workers`` threads of this process, where the files waiting for a table
        are committed together. ``processes=0`` runs every stage on the threads.

        Outcomes come back in the order of ``sources``. ``on_done`` is called as each file ends. On Ctrl-C (or
        ``on_done`` raising a KeyboardInterrupt) files not started are not started, the ones running finish,
        and :class:`RunInterrupted` says how every file that ended did. ``group=False`` makes each file commit
        alone, as concurrent loaders did before group commit (the burst benchmark compares the two).
        """
        if workers <= 1:
            outcomes: list[FileOutcome] = []
            try:
                for source in sources:
                    outcomes.append(self.run(source, on_stage=on_stage, keep_processing=keep_processing))
                    if on_done:
                        on_done(outcomes[-1])
            except KeyboardInterrupt:
                raise RunInterrupted(outcomes) from None
            return outcomes
        # In the sources' order, per table: what a run of one file at a time would store.
        order = [(source, _dataset_or_none(source.key)) for source in sources]
        in_order = InProcessQueue(self.settings.group_max_files, self.settings.limits.max_bytes, order)
        queue: WaitingLoads = in_order if group else Alone()
        processes = min(workers, _cpus()) if processes is None else processes
        stages = _StageProcesses(self.settings, processes) if processes > 1 else None
        if stages is not None:
            try:
                self.catalog  # noqa: B018 - an opener that fails stops the run before any file starts
            except CatalogNotOpened as failed:
                stages.close()
                raise failed.error from None
        per_thread = threading.local()

        def run_one(source: SourceObject) -> FileOutcome:
            try:
                return run_file(source)
            finally:
                in_order.ended(source)  # whatever became of it, the files after it may load

        def run_file(source: SourceObject) -> FileOutcome:
            if not hasattr(per_thread, "storage"):
                per_thread.storage = self.storage.fork()
            if stages is None:
                return self._run(source, per_thread.storage, queue, on_stage, keep_processing, "")
            started = time.perf_counter()
            job = Job(source=source, run_id=new_run_id())
            if on_stage:
                on_stage(source, c.PARSE)
            ready = stages.until_load(job, keep_processing)
            if isinstance(ready, FileOutcome):
                return dataclasses.replace(ready, seconds=time.perf_counter() - started)
            return self._load(job, ready, per_thread.storage, queue, on_stage, keep_processing, started)

        results: dict[int, FileOutcome] = {}
        futures: dict[Future[FileOutcome], int] = {}
        pool = ThreadPoolExecutor(workers, thread_name_prefix="icegate-run")
        try:
            for i, source in enumerate(sources):
                futures[pool.submit(run_one, source)] = i
            for future in as_completed(futures):
                results[futures[future]] = outcome = future.result()
                if on_done:
                    on_done(outcome)
        except KeyboardInterrupt:
            # The files under way finish and commit: what they did is known only once they have, and is
            # reported with what ended before the interrupt (else a loaded file would read as never run).
            pool.shutdown(wait=True, cancel_futures=True)
            ended = [f for f in futures if f.done() and not f.cancelled() and f.exception() is None]
            raise RunInterrupted([f.result() for f in ended]) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if stages is not None:
                stages.close()
        return [results[i] for i in sorted(results)]

    def _run(
        self,
        source: SourceObject,
        storage: Storage,
        waiting: WaitingLoads,
        on_stage: ProgressHook | None,
        keep_processing: bool,
        replay_of: str,
    ) -> FileOutcome:
        started = time.perf_counter()
        job = Job(source=source, run_id=new_run_id(), replay_of=replay_of)
        # The stages share this process: processing/ objects pass in memory, never written (unless kept).
        storage.hold(None if keep_processing else processing_uri(self.settings, job.run_id, ""))
        ready = self._until_load(job, storage, on_stage, keep_processing, started)
        if isinstance(ready, FileOutcome):
            return ready
        return self._load(job, ready, storage, waiting, on_stage, keep_processing, started)

    def _until_load(
        self, job: Job, storage: Storage, on_stage: ProgressHook | None, keep_processing: bool, started: float
    ) -> Scored | FileOutcome:
        """Parse, validate and score ``job``'s file: the scored file to load, or how it ended (dead-lettered)."""
        settings = self.settings
        state: Job = job
        stage = c.PARSE
        # One process runs the three stages: a streamed file is validated and tallied as it is parsed.
        inline = streamed.Inline()
        try:
            stage = _enter(job.source, c.PARSE, on_stage)
            # The ledger's catalog is opened only when asked for: a catalog that is down fails the load, not the parse.
            parsed = state = _with_retries(lambda: run_parse(job, settings, storage, self._parse_catalog(), inline))
            if self._opener is not None:
                self.catalog  # noqa: B018 - an opener that failed stops the run before anything is written
            stage = _enter(job.source, c.VALIDATE, on_stage)
            validated = state = _with_retries(lambda: run_validate(parsed, settings, storage, inline))
            storage.forget(parsed.parsed_uri)  # its only reader is done: free the file's raw strings
            stage = _enter(job.source, c.SCORE, on_stage)
            scored = state = _with_retries(
                lambda: run_score(validated, settings, storage, self._ledger_catalog, inline)
            )
        except CatalogNotOpened as failed:
            self._clean(job.run_id, keep_processing, storage)
            raise failed.error from None
        except Exception as exc:  # the state machine's Catch States.ALL
            state = _inline_seconds(state, inline)
            return self._dead_letter(job, state, stage, error_info(exc), started, keep_processing, storage)
        scored = _inline_seconds(scored, inline)
        if not passes_gate(scored):
            return self._dead_letter(job, scored, c.GATE, gate_error(scored), started, keep_processing, storage)
        return scored

    def _load(
        self,
        job: Job,
        scored: Scored,
        storage: Storage,
        waiting: WaitingLoads,
        on_stage: ProgressHook | None,
        keep_processing: bool,
        started: float,
    ) -> FileOutcome:
        try:
            _enter(job.source, c.LOAD, on_stage)
            loaded = _with_retries(lambda: run_load(scored, self.settings, storage, self.catalog, waiting))
        except CatalogNotOpened as failed:
            self._clean(job.run_id, keep_processing, storage)
            raise failed.error from None
        except Exception as exc:  # the state machine's Catch States.ALL
            return self._dead_letter(job, scored, c.LOAD, error_info(exc), started, keep_processing, storage)
        assert loaded.load is not None
        self._clean(job.run_id, keep_processing, storage)
        outcome: Outcome = "already_loaded" if loaded.load.already_loaded else "loaded"
        return FileOutcome(job.source, job.run_id, outcome, loaded, seconds=time.perf_counter() - started)

    def _dead_letter(
        self,
        job: Job,
        state: Payload,
        stage: str,
        error: ErrorInfo,
        started: float,
        keep_processing: bool,
        storage: Storage,
    ) -> FileOutcome:
        document = state.to_dict()
        try:
            entry = _with_retries(
                lambda: run_dead_letter(document, stage, error, self.settings, storage, self._ledger_catalog)
            )
        except Exception as exc:
            # As the state machine's DeadLetter Catch: this file failed loudly, the run goes on with the next.
            reason = f"{_describe(error)[1]} — and the dead-letter step failed too: {type(exc).__name__}: {exc}"
            return FileOutcome(
                job.source, job.run_id, "failed", state, seconds=time.perf_counter() - started, error=reason
            )
        finally:
            self._clean(job.run_id, keep_processing, storage)
        return FileOutcome(job.source, job.run_id, "dead_lettered", state, entry, time.perf_counter() - started)

    def _clean(self, run_id: str, keep: bool, storage: Storage) -> None:
        """Processing files are scratch: locally they go once the file is done (S3 expires them)."""
        storage.release()
        if keep or not self.settings.is_local:
            return
        shutil.rmtree(Path(self.settings.lake_path(c.PROCESSING_PREFIX, run_id)), ignore_errors=True)


def _inline_seconds(state: J, inline: streamed.Inline) -> J:
    """The stage seconds with the validator's and scorer's time inside a streamed parse moved to them (to the
    stages that ended, as when they run apart; the rest stays the parse's)."""
    parsed = isinstance(state, Parsed) and state.streamed and state.prior_load is None
    if not (inline.started and parsed) or c.PARSE not in state.stage_seconds:
        return state
    seconds = dict(state.stage_seconds)
    for stage, spent in inline.seconds.items():
        if stage not in seconds:
            continue
        seconds[c.PARSE] -= spent
        seconds[stage] = round(seconds.get(stage, 0.0) + spent, 4)
    seconds[c.PARSE] = round(seconds[c.PARSE], 4)
    return dataclasses.replace(state, stage_seconds=seconds)


def _with_retries(call: Callable[[], R]) -> R:
    """The state machine's Retry on transient errors: the same names, count, backoff, cap and full jitter."""
    for retry in range(c.TRANSIENT_RETRIES + 1):
        try:
            return call()
        except Exception as exc:
            # By name, as ErrorEquals matches the Lambda's errorType: the same list, by construction.
            if type(exc).__name__ not in c.TRANSIENT_ERRORS or retry == c.TRANSIENT_RETRIES:
                raise
            ceiling = c.TRANSIENT_RETRY_INTERVAL_SECONDS * c.TRANSIENT_RETRY_BACKOFF_RATE**retry
            time.sleep(random.uniform(0, min(ceiling, c.TRANSIENT_RETRY_MAX_DELAY_SECONDS)))
    raise AssertionError("unreachable")


def _enter(source: SourceObject, stage: str, on_stage: ProgressHook | None) -> str:
    # What the last stage freed goes back to the OS: polars' allocator cannot reuse Arrow's free pages,
    # so without this the stages' peaks stack up (1M rows: ~1.1 GB -> ~0.97 GB).
    pa.default_memory_pool().release_unused()
    if on_stage:
        on_stage(source, stage)
    return stage


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (a container's, not the host's)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _StageProcesses:
    """Worker processes that take files through parse, validate and score (``LocalRunner.run_many``).

    Each process opens the settings' catalog for its reads (the ledger, the table's markers) and writes a
    file's processing objects to the lake, where the load in the parent reads them. Processes are
    spawned, not forked: the parent runs threads (and polars' pool), which a fork would copy mid-flight.
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_stage_process_started,
            initargs=(settings,),
        )

    def until_load(self, job: Job, keep_processing: bool) -> Scored | FileOutcome:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._pool.submit(_until_load_in_process, job, keep_processing).result()
        except BrokenProcessPool as exc:
            raise WorkerProcessDied(
                f"a worker process stopped while taking {job.source.uri} through its stages (killed for memory, or "
                "crashed); the run stopped: files that had not finished were left as they were, and running the "
                "same command again takes them (with fewer --workers if memory ran out)"
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_process_runner: LocalRunner | None = None


def _stage_process_started(settings: Settings) -> None:
    import signal

    # Ctrl-C is the parent's to handle: it lets the files under way finish (their stages here included).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _process_runner
    _process_runner = LocalRunner(settings)


def _until_load_in_process(job: Job, keep_processing: bool) -> Scored | FileOutcome:
    assert _process_runner is not None, "started by _stage_process_started"
    # Nothing held in memory: the parent's load reads the validated rows and the report from the lake.
    return _process_runner._until_load(job, _process_runner.storage, None, keep_processing, time.perf_counter())


@dataclass(frozen=True)
class LocalSources:
    """What ``icegate run`` found under the paths it was given."""

    files: list[SourceObject]
    #: Files passed over because their format is not one the pipeline reads.
    unsupported: list[str]
    #: Files icegate wrote itself (a lake's warehouse, processing, DLQ records, catalog), with where.
    own: list[tuple[str, str]]


#: A lake root's own folders: Iceberg files, scratch, and dead letters.
_LAKE_FOLDERS = (c.WAREHOUSE_PREFIX, c.PROCESSING_PREFIX, c.DLQ_PREFIX)


def local_sources(paths: Iterable[str | Path], lake_root: str | Path | None = None) -> LocalSources:
    """Files named directly, plus the supported files found under folders, minus what icegate wrote.

    A folder holding ``catalog.db`` (or ``lake_root``) is a lake: a walk through it skips its
    ``warehouse/``, ``processing/``, ``dlq/`` and catalog. A folder named inside a ``dlq/`` is a
    rerun of what was dead-lettered there: its sources run again, its ``error.json`` and
    ``rejected.parquet`` never do (re-ingesting them would dead-letter icegate's own records).
    """
    lakes = {Path(lake_root).resolve()} if lake_root is not None else set()

    def is_lake(folder: Path) -> bool:
        return folder.resolve() in lakes or (folder / c.CATALOG_DB).is_file()

    found = LocalSources([], [], [])
    for raw in paths:
        path = Path(raw)
        if (where := _inside_lake_folder(path, is_lake)) is not None:
            found.own.extend((str(f), where) for f in _files_under(path))
            continue
        candidates: list[Path] = []
        if path.is_dir():
            for folder, subfolders, names in os.walk(path):
                here = Path(folder)
                if is_lake(here):
                    for name in [n for n in subfolders if n in _LAKE_FOLDERS]:
                        subfolders.remove(name)
                        found.own.extend((str(f), f"{name}/") for f in _files_under(here / name))
                candidates.extend(here / name for name in names if not name.startswith("."))
        else:
            candidates.append(path)
        for file in sorted(candidates):
            if where := _own_file(file, is_lake):
                found.own.append((str(file), where))
            elif file == path or file.name.lower().endswith(c.SUPPORTED_SUFFIXES):
                found.files.append(SourceObject(bucket="", key=str(file)))
            else:
                found.unsupported.append(str(file))
    return found


def _inside_lake_folder(path: Path, is_lake: Callable[[Path], bool]) -> str | None:
    """``warehouse/`` (etc.) when ``path`` lies in a lake's own folder or is its catalog; else None."""
    resolved = path.resolve()
    for ancestor in resolved.parents:
        if is_lake(ancestor):
            first = resolved.relative_to(ancestor).parts[0]
            if first.startswith(c.CATALOG_DB):  # with SQLite's -journal / -wal / -shm files
                return c.CATALOG_DB
            # Inside dlq/ a named folder is a rerun of its sources: only the records are skipped.
            return f"{first}/" if first in _LAKE_FOLDERS and first != c.DLQ_PREFIX else None
    return None


def _own_file(file: Path, is_lake: Callable[[Path], bool]) -> str | None:
    """Where, for a dead-letter record (``dlq/<dataset>/<run_id>/error.json``, ``dlq/<dataset>/_index/…``)
    or a lake's catalog."""
    in_dlq_entry = file.name in c.DLQ_RECORDS and file.parent.parent.parent.name == c.DLQ_PREFIX
    in_dlq_index = file.parent.name == c.DLQ_INDEX and file.parent.parent.parent.name == c.DLQ_PREFIX
    if in_dlq_entry or in_dlq_index:
        return f"{c.DLQ_PREFIX}/"
    if file.name.startswith(c.CATALOG_DB) and is_lake(file.parent):
        return c.CATALOG_DB
    return None


def _files_under(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


__all__ = [
    "CatalogNotOpened",
    "FileOutcome",
    "LocalRunner",
    "LocalSources",
    "RunInterrupted",
    "WorkerProcessDied",
    "error_info",
    "local_sources",
    "new_run_id",
    "passes_gate",
    "run_dead_letter",
    "run_load",
    "run_parse",
    "run_score",
    "run_validate",
]
