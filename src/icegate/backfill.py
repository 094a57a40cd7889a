"""``icegate backfill``: load the files already in a folder or an S3 prefix, skipping what the ledger says is done.

S3 events fire only for new objects, so the history in the landing buckets never loads by itself. A
backfill lists the source (oldest first), reads the ledger once, and runs through the local runner only
the files whose latest outcome is not "loaded": a rerun of the same command resumes where an interrupted
one stopped. The ledger is the fast answer, not the proof: a file committed just before a kill (its ledger
row never written) runs again and the parse stage's marker check reports it "already loaded".

In the cloud the Backfill state machine (``cdk/backfill_construct.py``) does the same per object.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote_plus

from icegate import constants as c
from icegate.errors import IcegateError
from icegate.payloads import SourceObject
from icegate.storage import LIST_PAGE_SIZE, ObjectInfo, Storage, is_s3, split_s3

if TYPE_CHECKING:
    import polars as pl
    from pyiceberg.catalog import Catalog

    from icegate.pipeline import FileOutcome, LocalRunner
    from icegate.settings import Settings

#: What a file's latest ledger outcome makes of it: ``loaded`` and ``dead_lettered`` are skipped (the
#: latter unless retried), ``new`` runs.
Status = Literal["new", "loaded", "dead_lettered"]
OnDone = Callable[["FileOutcome"], None]


@dataclass(frozen=True)
class Candidate:
    """One listed file: where it is, what the runner is given, and what the ledger said of it."""

    uri: str
    source: SourceObject
    info: ObjectInfo
    status: Status = "new"
    #: The run of the ledger row that decided ``status`` (``loaded``/``dead_lettered``).
    prior_run_id: str | None = None


@dataclass
class Plan:
    """What a backfill of ``source`` runs and skips, oldest file first."""

    source: str
    #: Every object found under the source (icegate's own lake files excepted).
    listed: int
    to_run: list[Candidate]
    #: Skipped: the ledger says loaded / dead-lettered (without ``retry_dead_lettered``).
    loaded: list[Candidate]
    dead_lettered: list[Candidate]
    #: Not a format the pipeline reads, or not one of the ``--suffix`` filters.
    unsupported: list[str]
    other_suffix: list[str]
    #: Local: files icegate wrote itself under a lake (never ingested), with where.
    own: list[tuple[str, str]]
    #: Runnable, but past ``limit``: left for the next backfill.
    over_limit: list[Candidate]
    #: Of ``to_run``: dead-lettered before and run again (``retry_dead_lettered``).
    retried_dead_lettered: int = 0
    listing_seconds: float = 0.0

    def uri_of(self, outcome: FileOutcome) -> str:
        """The listed URI of a file run (the runner's source holds an S3 key URL-encoded)."""
        return self._uris.get(outcome.source, outcome.source.uri)

    @cached_property
    def _uris(self) -> dict[SourceObject, str]:
        return {x.source: x.uri for x in self.to_run}


@dataclass
class Result:
    """What a backfill did: the plan, each file run (in the order they finished), and whether it was cut short."""

    plan: Plan
    outcomes: list[FileOutcome] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def files_per_second(self) -> float:
        return len(self.outcomes) / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """130 (as a shell reports SIGINT) when interrupted; 1 when a file was dead-lettered or failed; else 0."""
        if self.interrupted:
            return 130
        return 1 if any(o.outcome in ("dead_lettered", "failed") for o in self.outcomes) else 0

    def to_dict(self, *, dry_run: bool = False) -> dict[str, Any]:
        """The ``backfill --json`` document (keys in the README, 'Scripting')."""
        plan = self.plan
        done = {o.source: o for o in self.outcomes}
        files: list[tuple[Candidate, dict[str, Any]]] = []
        for candidate in plan.loaded + plan.dead_lettered:
            status = "skipped_loaded" if candidate.status == "loaded" else "skipped_dead_lettered"
            files.append((candidate, _file_document(candidate, status, candidate.prior_run_id)))
        for candidate in plan.to_run:
            outcome = done.get(candidate.source)
            if outcome is not None:
                error = outcome.dead_letter.error_type if outcome.dead_letter else outcome.error or None
                files.append(
                    (candidate, {**_file_document(candidate, outcome.outcome, outcome.run_id), "error": error})
                )
            else:
                files.append((candidate, _file_document(candidate, "would_run" if dry_run else "not_run", None)))
        files.extend((candidate, _file_document(candidate, "over_limit", None)) for candidate in plan.over_limit)
        files.sort(key=lambda entry: _oldest_first(entry[0]))
        return {
            "source": plan.source,
            "dry_run": dry_run,
            "listed": plan.listed,
            "skipped": {
                "already_loaded": len(plan.loaded),
                "dead_lettered_earlier": len(plan.dead_lettered),
                "unsupported": len(plan.unsupported),
                "other_suffix": len(plan.other_suffix),
                "lake_files": len(plan.own),
            },
            "to_run": len(plan.to_run),
            "retried_dead_lettered": plan.retried_dead_lettered,
            "over_limit": len(plan.over_limit),
            "ran": len(self.outcomes),
            "loaded": self.count("loaded"),
            "already_loaded": self.count("already_loaded"),
            "dead_lettered": self.count("dead_lettered"),
            "failed": self.count("failed"),
            "interrupted": self.interrupted,
            "listing_seconds": round(plan.listing_seconds, 3),
            "seconds": round(self.seconds, 3),
            "files_per_second": round(self.files_per_second, 3),
            "files": [document for _, document in files],
            "exit_code": 0 if dry_run else self.exit_code,
        }


def _oldest_first(candidate: Candidate) -> tuple[datetime, str]:
    return candidate.info.last_modified, candidate.uri


def _file_document(candidate: Candidate, status: str, run_id: str | None) -> dict[str, Any]:
    return {
        "source": candidate.uri,
        "status": status,
        "run_id": run_id,
        "last_modified": candidate.info.last_modified.isoformat(),
        "size": candidate.info.size,
    }


def normalise_suffixes(suffixes: Iterable[str]) -> tuple[str, ...]:
    """``--suffix`` values as lower-case ``.ext``; each must end in a supported suffix (``csv.gz`` is fine)."""
    result = []
    for raw in suffixes:
        suffix = raw.strip().lower()
        suffix = suffix if suffix.startswith(".") else f".{suffix}"
        if not suffix.endswith(c.SUPPORTED_SUFFIXES):
            raise ValueError(f"{raw!r} is not a supported suffix ({', '.join(c.SUPPORTED_SUFFIXES)})")
        result.append(suffix)
    return tuple(result)


def plan(
    settings: Settings,
    source: str,
    catalog: Catalog | None,
    *,
    storage: Storage | None = None,
    suffixes: Sequence[str] = (),
    retry_dead_lettered: bool = False,
    limit: int | None = None,
    page_size: int | None = None,
) -> Plan:
    """List ``source`` (a local folder or ``s3://bucket/prefix``) and sort its files into run and skip.

    ``catalog`` None: there is no lake yet, so no ledger and nothing done. ``page_size`` bounds each S3
    listing request (tests use a small one to cross pages).
    """
    started = time.perf_counter()
    storage = storage or Storage(settings.s3_endpoint)
    wanted = normalise_suffixes(suffixes)
    if is_s3(source):
        bucket = split_s3(source)[0]
        if not bucket:
            raise ValueError(f"{source!r} names no bucket: give s3://bucket[/prefix]")
        listed = storage.list_objects(source, page_size=page_size or LIST_PAGE_SIZE)
        objects = [
            (o.uri, SourceObject(bucket, _event_key(o.key), o.info.version_id, o.info.etag, o.info.size), o.info)
            for o in listed
        ]
        own: list[tuple[str, str]] = []
        unsupported = [uri for uri, _, _ in objects if not _supported(uri)]
        objects = [entry for entry in objects if _supported(entry[0])]
    else:
        from icegate.pipeline import local_sources  # polars/pyarrow: not for `icegate --help`

        folder = Path(source)
        if not folder.exists():
            raise ValueError(f"{source!r} does not exist: give a local folder or s3://bucket[/prefix]")
        bucket = ""
        found = local_sources([folder], settings.lake_path() if settings.is_local else None)
        own, unsupported = found.own, found.unsupported
        paths = [str(Path(f.key).resolve()) for f in found.files]
        objects = [(path, SourceObject("", path), storage.stat(path)) for path in paths]
    other_suffix = [uri for uri, _, _ in objects if wanted and not uri.lower().endswith(wanted)]
    objects = [entry for entry in objects if not wanted or entry[0].lower().endswith(wanted)]
    # Oldest first, then by key: the order the files were written in, the same on every rerun.
    objects.sort(key=lambda entry: (entry[2].last_modified, entry[0]))

    ledger = _Ledger(catalog, settings.namespace, bucket)
    candidates = ledger.loaded_since([ledger.judge(Candidate(uri, obj, info), storage) for uri, obj, info in objects])
    loaded = [x for x in candidates if x.status == "loaded"]
    dead = [x for x in candidates if x.status == "dead_lettered"]
    runnable = [x for x in candidates if x.status == "new" or (retry_dead_lettered and x.status == "dead_lettered")]
    to_run, over_limit = (runnable[:limit], runnable[limit:]) if limit is not None else (runnable, [])
    return Plan(
        source=source,
        listed=len(objects) + len(other_suffix) + len(unsupported),
        to_run=to_run,
        loaded=loaded,
        dead_lettered=[] if retry_dead_lettered else dead,
        unsupported=unsupported,
        other_suffix=other_suffix,
        own=own,
        over_limit=over_limit,
        retried_dead_lettered=sum(1 for x in to_run if x.status == "dead_lettered"),
        listing_seconds=time.perf_counter() - started,
    )


def _supported(uri: str) -> bool:
    return uri.lower().endswith(c.SUPPORTED_SUFFIXES)


def _event_key(key: str) -> str:
    """The key as an S3 event names it (URL-encoded): the runner decodes it back to exactly this key.

    A raw key would be decoded too (``a+b.csv`` → ``a b.csv``) and, were there such an object, read instead.
    """
    return quote_plus(key, safe="/")


def run(
    backfill: Plan,
    runner: LocalRunner,
    *,
    workers: int = c.BACKFILL_DEFAULT_WORKERS,
    on_done: OnDone | None = None,
) -> Result:
    """Run the plan's files. A ``KeyboardInterrupt`` (Ctrl-C, or raised by ``on_done``) ends it cleanly: the
    result says which files finished (the ones running at the interrupt finish too) and ``interrupted``; the
    ledger lets the same backfill resume."""
    from icegate.pipeline import RunInterrupted

    result = Result(backfill)
    started = time.perf_counter()

    def done(outcome: FileOutcome) -> None:
        result.outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    try:
        runner.run_many([x.source for x in backfill.to_run], workers=workers, on_done=done)
    except KeyboardInterrupt as interrupt:
        result.interrupted = True
        if isinstance(interrupt, RunInterrupted):
            # The files under way finished after it, never handed to ``done``: their rows are committed, so they count.
            reported = {o.run_id for o in result.outcomes}
            result.outcomes += [o for o in interrupt.outcomes if o.run_id not in reported]
    result.seconds = time.perf_counter() - started
    return result


class _Ledger:
    """The ledger's outcomes for one bucket (or local files), read in one scan, matched to listed files.

    A file's status is its latest matching row: ``loaded``/``already_loaded`` (unless rolled back since),
    ``dead_lettered``, or ``rolled_back`` (runs again). Matching a row to a file:

    - S3: same bucket and key (the ledger may hold the key URL-encoded, as an event gave it), and the same
      version id, or the same ETag (and size, when the row has one) — rows of the cloud Backfill state
      machine carry no version id, and a marker-rebuilt row keeps the ETag as its version;
    - local: the same file (path resolved) and content hash; a dead-lettered row without a hash (the file
      failed before it was read: its name or size) matches while the file has not changed since that run.

    A file last ``dead_lettered`` whose content has a live load under another source since counts as loaded
    (:meth:`loaded_since`).
    """

    def __init__(self, catalog: Catalog | None, namespace: str, bucket: str) -> None:
        from icegate import ledger  # the ledger is an Iceberg table: pyiceberg only once needed
        from icegate.lake.ledger import ROLLED_BACK

        self._catalog, self._namespace = catalog, namespace
        self._bucket = bucket
        #: Candidate URI -> content hash of its deciding ``dead_lettered`` row (what ``loaded_since`` looks up).
        self._dead_content: dict[str, str] = {}
        #: Candidate URI -> its content hash, once read.
        self._hashes: dict[str, str] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._undone_runs: set[tuple[str, str]] = set()
        self._undone_content: dict[tuple[str, str], datetime] = {}
        if catalog is None:
            return
        frame: pl.DataFrame = ledger.source_outcomes(catalog, namespace, bucket)
        for row in frame.to_dicts():
            if row["outcome"] == ROLLED_BACK:
                self._undone_runs.add((row["run_id"], row["table_name"]))
                if row["source_sha256"]:
                    content = (row["table_name"], row["source_sha256"])
                    moment = _moment(row["finished_at"])
                    self._undone_content[content] = max(moment, self._undone_content.get(content, moment))
            if (row["source_bucket"] or "") == bucket and row["source_key"]:
                self._rows.setdefault(self._key(row["source_key"]), []).append(row)

    def _key(self, key: str) -> str:
        return key if self._bucket else os.path.realpath(key)

    def judge(self, candidate: Candidate, storage: Storage) -> Candidate:
        """The candidate with its status from the ledger (``new`` when no row matches)."""
        if self._bucket:
            key = candidate.uri.removeprefix(f"s3://{self._bucket}/")
            encoded = _event_key(key)
            rows = [*self._rows.get(key, []), *(self._rows.get(encoded, []) if encoded != key else [])]
        else:
            rows = self._rows.get(self._key(candidate.uri), [])
        matching = self._matching(rows, candidate, storage) if rows else []
        if not matching:
            return candidate
        latest = max(matching, key=lambda r: _moment(r["finished_at"]))
        status: Status = "new"
        if latest["outcome"] in ("loaded", "already_loaded") and not self._undone(latest):
            status = "loaded"
        elif latest["outcome"] == "dead_lettered":
            status = "dead_lettered"
            # A file refused before its content was hashed (at parse: a limit, an encoding) is hashed now.
            try:
                content = latest["source_sha256"] or self._sha256(candidate, storage)
            except (IcegateError, OSError):  # gone or unreadable since it was listed: it stays dead-lettered
                content = None
            if content:
                self._dead_content[candidate.uri] = content
        return Candidate(candidate.uri, candidate.source, candidate.info, status, latest["run_id"])

    def loaded_since(self, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates, each dead-lettered one whose content has loaded since under another source made
        ``loaded``: a file retried from its DLQ copy (as the README says to) is recorded under the copy's
        path, yet the table holds it. One more ledger scan, of those contents only."""
        from icegate import ledger

        if self._catalog is None or not self._dead_content:
            return candidates
        loads = ledger.content_loads(self._catalog, self._namespace, self._dead_content.values()).to_dicts()
        live: dict[str, dict[str, Any]] = {}
        for row in loads:
            if self._undone(row):
                continue
            known = live.get(row["source_sha256"])
            if known is None or _moment(row["finished_at"]) > _moment(known["finished_at"]):
                live[row["source_sha256"]] = row
        result = []
        for candidate in candidates:
            load = live.get(self._dead_content.get(candidate.uri, "")) if candidate.status == "dead_lettered" else None
            if load is not None:
                candidate = Candidate(candidate.uri, candidate.source, candidate.info, "loaded", load["run_id"])
            result.append(candidate)
        return result

    def _matching(self, rows: list[dict[str, Any]], candidate: Candidate, storage: Storage) -> list[dict[str, Any]]:
        info = candidate.info
        if self._bucket:
            etag = (info.etag or "").strip('"')

            def same_object(row: dict[str, Any]) -> bool:
                if info.version_id and row["source_version"] == info.version_id:
                    return True
                same_etag = bool(etag) and etag in (row["source_etag"], row["source_version"])
                return same_etag and row["source_size"] in (None, info.size)

            return [row for row in rows if same_object(row)]
        sha256 = self._sha256(candidate, storage)  # only for files the ledger knows: cheaper than parsing
        return [
            row
            for row in rows
            if row["source_sha256"] == sha256
            or (
                row["source_sha256"] is None
                and row["outcome"] == "dead_lettered"
                and _moment(row["finished_at"]) >= info.last_modified
            )
        ]

    def _sha256(self, candidate: Candidate, storage: Storage) -> str:
        """The candidate's content hash, read once however many rows ask (a file is read whole to hash it)."""
        if (known := self._hashes.get(candidate.uri)) is None:
            known = self._hashes[candidate.uri] = storage.sha256(candidate.source.uri, candidate.source.version_id)
        return known

    def _undone(self, row: dict[str, Any]) -> bool:
        """A load rolled back since: by its run, or (an ``already_loaded`` answer) by its content."""
        if (row["run_id"], row["table_name"]) in self._undone_runs:
            return True
        rolled_back = self._undone_content.get((row["table_name"], row["source_sha256"] or ""))
        return rolled_back is not None and rolled_back > _moment(row["finished_at"])


def _moment(value: datetime | None) -> datetime:
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


__all__ = ["Candidate", "Plan", "Result", "normalise_suffixes", "plan", "run"]
