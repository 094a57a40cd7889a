"""``icegate replay``: run dead-lettered files, or the rejected rows of loaded files, again after a fix.

A dead-lettered file is replayed from its copy in ``dlq/<dataset>/<run_id>/`` through the normal
runner; the rejected rows of a loaded file (``dlq/<dataset>/<run_id>/rejected.parquet`` without an
``error.json``) through validate → score → load. Both are idempotent: content already loaded is
"already loaded" (the ledger and the table's snapshot marker), and a row is merged by the dataset's
keys, so it never lands twice. The DLQ entry stays as the record; the ledger row of the replay names
the run it replays in ``replay_of``, and ``error.json`` lists its replays under ``replays``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal

from icegate import constants as c
from icegate.datasets import get_dataset
from icegate.errors import NoValidRows
from icegate.payloads import Job, Parsed, SourceObject
from icegate.pipeline import (
    LocalRunner,
    _with_retries,
    new_run_id,
    passes_gate,
    processing_uri,
    run_load,
    run_score,
    run_validate,
)
from icegate.storage import is_s3, split_s3

Kind = Literal["dead_lettered", "rejected_rows"]
#: ``still_rejected``: the rejected rows fail again (no DLQ entry is filed: they are in the DLQ already);
#: ``skipped``: nothing to replay (the entry has no copy of its source).
ReplayResult = Literal["loaded", "already_loaded", "dead_lettered", "failed", "still_rejected", "skipped"]
#: The counts of ``rows`` in ``replay --json``: each always present, null when the replay did not reach it.
ROW_COUNTS = ("read", "valid", "rejected", "inserted", "updated", "skipped")
REJECTED_FILE = "rejected.parquet"
ERROR_FILE = "error.json"


@dataclass(frozen=True)
class Entry:
    """One thing in ``dlq/`` that can be replayed."""

    kind: Kind
    dataset: str
    run_id: str
    #: The source copy (dead_lettered) or rejected.parquet (rejected_rows).
    uri: str
    error_type: str = ""
    error_uri: str = ""


@dataclass(frozen=True)
class Replayed:
    """What one replay did (the ``replay --json`` document of one entry, see the README)."""

    entry: Entry
    run_id: str
    outcome: ReplayResult
    rows: dict[str, int | None] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.entry.kind,
            "dataset": self.entry.dataset,
            "replay_of": self.entry.run_id,
            "source": self.entry.uri,
            "error_type": self.entry.error_type or None,
            "run_id": self.run_id,
            "outcome": self.outcome,
            "rows": {name: self.rows.get(name) for name in ROW_COUNTS},
            "message": self.message or None,
            "seconds": round(self.seconds, 3),
        }


def find_entries(
    runner: LocalRunner,
    *,
    run_ids: Iterable[str] = (),
    dataset: str | None = None,
    error_type: str | None = None,
    rejected: bool = False,
) -> list[Entry]:
    """The DLQ entries to replay: dead-lettered files, or with ``rejected`` the rejected rows of loaded files.

    Every filter given must match (no filter: all). A damaged ``error.json`` is skipped, not a crash.
    """
    wanted_runs = set(run_ids)
    listed = list(runner.storage.list(runner.settings.lake_path(c.DLQ_PREFIX)))
    present = set(listed)
    found: list[Entry] = []
    for uri in listed:
        parts = uri.split("/")
        if len(parts) < 3 or parts[-3] == c.DLQ_INDEX or parts[-2] == c.DLQ_INDEX:
            continue
        folder = "/".join(parts[:-1])
        entry: Entry | None = None
        if rejected and parts[-1] == REJECTED_FILE and f"{folder}/{ERROR_FILE}" not in present:
            entry = Entry("rejected_rows", parts[-3], parts[-2], uri)
        elif not rejected and parts[-1] == ERROR_FILE:
            entry = _dead_lettered(runner, uri)
        if entry is None:
            continue
        if wanted_runs and entry.run_id not in wanted_runs:
            continue
        if dataset and entry.dataset != dataset:
            continue
        if error_type and entry.error_type != error_type:
            continue
        found.append(entry)
    return found


def _dead_lettered(runner: LocalRunner, error_uri: str) -> Entry | None:
    try:
        error = runner.storage.read_json(error_uri)
        copied = (error.get("copy") or {}).get("status") == "copied"
        return Entry(
            "dead_lettered",
            str(error["dataset"]),
            str(error["run_id"]),
            str(error["dead_letter_uri"]) if copied else "",
            str(error["error_type"]),
            error_uri,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def replay(runner: LocalRunner, entry: Entry) -> Replayed:
    """Replay one entry; recorded in the ledger (``replay_of``) and, for a file, in its ``error.json``."""
    started = time.perf_counter()
    if entry.kind == "rejected_rows":
        try:
            return _replay_rejected(runner, entry, started)
        except Exception as exc:  # this entry failed; the others are still replayed
            return Replayed(entry, "", "failed", message=f"{type(exc).__name__}: {exc}", seconds=_since(started))
    if not entry.uri:
        return Replayed(entry, "", "skipped", message="the DLQ entry holds no copy of its source (see error.json)")
    if is_s3(entry.uri):
        bucket, key = split_s3(entry.uri)
        source = SourceObject(bucket=bucket, key=key, raw_key=True)  # a key as listed, never URL-encoded
    else:
        source = SourceObject(bucket="", key=entry.uri)
    outcome = runner.run(source, replay_of=entry.run_id)
    state: Any = outcome.state
    load = getattr(state, "load", None)
    rows: dict[str, int | None] = {
        "read": state.rows if getattr(state, "format", "") else None,  # a format: the file was decoded
        "valid": state.rows_valid if getattr(state, "valid_uri", "") else None,
        "rejected": state.rows_rejected if getattr(state, "valid_uri", "") else None,
        "inserted": load.inserted if load else None,
        "updated": load.updated if load else None,
        "skipped": load.skipped if load else None,
    }
    entry_again = outcome.dead_letter
    message = outcome.error or (f"{entry_again.error_type}: {entry_again.message}" if entry_again else "")
    result = Replayed(entry, outcome.run_id, outcome.outcome, rows, message, time.perf_counter() - started)
    _note_in_entry(runner, entry, result)
    return result


def _note_in_entry(runner: LocalRunner, entry: Entry, result: Replayed) -> None:
    """The entry stays in dlq/ as the record of what failed; it notes each replay and how it ended."""
    try:
        document = runner.storage.read_json(entry.error_uri)
        replays = [*document.get("replays", []), {"run_id": result.run_id, "outcome": result.outcome}]
        document["replays"] = replays[-20:]  # bounded, as the reruns are
        runner.storage.write_json(entry.error_uri, document)
    except Exception:  # the replay's outcome stands, and the ledger has it
        return


def _replay_rejected(runner: LocalRunner, entry: Entry, started: float) -> Replayed:
    """Validate → score → load the rejected rows of a loaded file, as a file of their own."""
    settings, storage = runner.settings, runner.storage
    dataset = get_dataset(entry.dataset)
    data = storage.read_bytes(entry.uri)
    table = storage.read_parquet(entry.uri)
    # Only the contract's columns go in again: row numbers, lines and failed checks are the record's.
    table = table.select([name for name in dataset.column_names if name in table.column_names])
    run_id = new_run_id()
    parsed_uri = processing_uri(settings, run_id, "parsed.parquet")
    storage.write_parquet(parsed_uri, table)
    if is_s3(entry.uri):
        bucket, key = split_s3(entry.uri)
        source = SourceObject(bucket=bucket, key=key, raw_key=True)
    else:
        source = SourceObject(bucket="", key=entry.uri)
    job = Job(source=source, run_id=run_id, replay_of=entry.run_id)
    parsed = Parsed(
        **{k: getattr(job, k) for k in ("source", "run_id", "replay_of")},
        dataset=dataset.name,
        format="parquet",
        uploaded_at=storage.stat(entry.uri).last_modified.astimezone(UTC).isoformat(),
        rows=table.num_rows,
        columns=list(table.column_names),
        parsed_uri=parsed_uri,
    )
    rows: dict[str, int | None] = {"read": table.num_rows}
    try:
        validated = _with_retries(lambda: run_validate(parsed, settings, storage))
        rows.update(valid=validated.rows_valid, rejected=validated.rows_rejected)
        # The load's identity: these rows under this validation. The same rows replayed again are
        # "already loaded"; after a further fix that lets more through, they are new content.
        outcome_of_checks = json.dumps(validated.failed_checks, sort_keys=True).encode()
        validated = dataclasses.replace(validated, sha256=hashlib.sha256(data + b"\0" + outcome_of_checks).hexdigest())
        scored = _with_retries(lambda: run_score(validated, settings, storage, runner.catalog))
        # Rows still rejected are in the original rejected.parquet: no second copy under this run.
        if validated.rejected_uri:
            storage.delete(validated.rejected_uri)
        scored = dataclasses.replace(scored, rejected_uri=entry.uri if validated.rows_rejected else "")
        if not passes_gate(scored):
            reason = scored.quality.reason if scored.quality else ""
            return Replayed(entry, run_id, "still_rejected", rows, f"quality gate: {reason}", _since(started))
        loaded = _with_retries(lambda: run_load(scored, settings, storage, runner.catalog))
    except NoValidRows:
        if validated.rejected_uri and storage.exists(validated.rejected_uri):
            storage.delete(validated.rejected_uri)
        message = f"none of the {table.num_rows} rows passes the contract yet"
        return Replayed(entry, run_id, "still_rejected", rows, message, _since(started))
    finally:
        runner._clean(run_id, False, storage)
    load = loaded.load
    assert load is not None
    rows.update(inserted=load.inserted, updated=load.updated, skipped=load.skipped)
    return Replayed(entry, run_id, "already_loaded" if load.already_loaded else "loaded", rows, seconds=_since(started))


def _since(started: float) -> float:
    return time.perf_counter() - started


__all__ = ["Entry", "Replayed", "find_entries", "replay"]
