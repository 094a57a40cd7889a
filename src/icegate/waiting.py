"""Loads waiting for their table: what lets one loader commit a burst of files in one catalog commit.

A loader announces its file as waiting for its table, then takes a turn: it commits its own file
together with the files waiting beside it (``lake.commit.load_group``: a marker per file, one
catalog commit for all), records their ledger rows in one append, and tells them they are done.
A burst of N files for one table thus costs a handful of contended commits instead of N.

Two queues, one protocol:

- :class:`InProcessQueue` (``icegate run --workers N``): loaders are threads of one process. A
  table's turn is a lock, so there is no wasted work: the thread that gets it commits everything
  waiting, and the threads it committed for find their result when their turn comes. Given the run's
  files in order, it commits a table's files in that order, as a run of one file at a time would: a
  file takes its turn once every file before it (for its table) has ended, and a group takes the files
  waiting right after it, in order — so which of two files sharing a key is stored first (``insert_new``
  keeps it) does not depend on which finished parsing first.
- :class:`ObjectQueue` (the Lambda loader): loaders are separate processes. A waiting file is a
  small object under ``processing/_waiting/<table>/`` holding its ``Scored`` payload and quality
  report; a loader lists the objects, reads the files' validated rows and commits them with its
  own. Turns are not exclusive — two loaders may group the same file — but the commit asserts the
  table's head and every file carries its marker, so one wins and the other re-plans without the
  files now committed (exactly once, as for any concurrent commit).

A file whose own load fails stops waiting (its object is deleted), so no other loader commits a
file its execution dead-letters. A loader killed by its runtime (timed out, out of memory) runs no
clean-up: its execution's dead-letter step deletes the object instead (:meth:`ObjectQueue.stop_waiting`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from icegate.payloads import Loaded, Scored, SourceObject
from icegate.storage import Storage, join

if TYPE_CHECKING:
    from icegate.lake.commit import Incoming

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WaitingLoad:
    """One file waiting for its table: its payload, its quality report (for its ledger row), its rows."""

    scored: Scored
    report: Mapping[str, Any] | None
    #: None for a streamed file (``icegate.streamed``): too big to hold, it is never taken into a group.
    incoming: Incoming | None = field(repr=False)

    @property
    def run_id(self) -> str:
        return self.scored.run_id


class Turn(Protocol):
    """A loader's turn at its table."""

    #: Set when another loader's turn already committed (and recorded) this file.
    loaded: Loaded | None

    def others(self) -> list[WaitingLoad]:
        """The files waiting beside this one, oldest first, at most the group's size minus one."""
        ...

    def finish(self, loaded: Mapping[str, Loaded]) -> None:
        """These files (by run id) are committed and recorded: they wait no more."""
        ...


class WaitingLoads(Protocol):
    def turn(self, own: WaitingLoad) -> AbstractContextManager[Turn]: ...


class _Budget:
    """What one group may take: at most ``max_files`` files, whose rows take no more memory together than one
    file's bytes may be (``ICEGATE_MAX_BYTES``, which the function's memory is sized for) — the group's rows are
    held together. A file is weighed by its parsed rows, not by its stored bytes: a gzip or a workbook stores
    a fraction of what it holds."""

    def __init__(self, max_files: int, max_bytes: int, own: WaitingLoad) -> None:
        self._files_left = max_files - 1
        self._bytes_left = max_bytes - _held_bytes(own.scored)

    def __call__(self, scored: Scored) -> bool:
        size = _held_bytes(scored)
        if self._files_left <= 0 or size > self._bytes_left or scored.streamed:
            return False
        self._files_left -= 1
        self._bytes_left -= size
        return True


def _held_bytes(scored: Scored) -> int:
    # A payload written before rows_bytes existed (an entry from the previous deployment) has its stored size.
    return scored.rows_bytes or scored.source.size or 0


class _NoOthers:
    loaded: Loaded | None = None

    def others(self) -> list[WaitingLoad]:
        return []

    def finish(self, loaded: Mapping[str, Loaded]) -> None:
        pass


class Alone:
    """No queue: each load commits its own file (a single file, or a loader that must not group)."""

    @contextmanager
    def turn(self, own: WaitingLoad) -> Iterator[Turn]:
        yield _NoOthers()


@dataclass
class _Entry:
    waiting: WaitingLoad
    loaded: Loaded | None = None
    #: Where the file is in the run's order (None: the run gave no order for it).
    position: int | None = None


class _InProcessTurn:
    def __init__(self, queue: InProcessQueue, table: _Table, entry: _Entry) -> None:
        self._queue, self._table, self._entry = queue, table, entry
        self.loaded = entry.loaded
        self._taken: list[_Entry] = []

    def others(self) -> list[WaitingLoad]:
        # Asked at each commit attempt: files that arrived while an attempt was lost join the next one.
        with self._queue.lock:
            waiting = [e for e in self._table.entries.values() if e is not self._entry and e.loaded is None]
            waiting = self._queue.next_in_order(self._entry, waiting)
        fits = _Budget(self._queue.max_files, self._queue.max_bytes, self._entry.waiting)
        taken: list[_Entry] = []
        for entry in waiting:
            if fits(entry.waiting.scored):
                taken.append(entry)
            elif entry.position is not None:
                break  # in the run's order: the files after one left out wait for it
        self._taken = taken
        return [entry.waiting for entry in self._taken]

    def finish(self, loaded: Mapping[str, Loaded]) -> None:
        with self._queue.lock:
            for entry in self._taken:
                entry.loaded = loaded.get(entry.waiting.run_id)
                self._queue.end(entry.position)


@dataclass
class _Table:
    turn: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[str, _Entry] = field(default_factory=dict)


class InProcessQueue:
    """Threads of one process loading into the same tables (``icegate run --workers``).

    ``order``: the run's files, in the order a run of one file at a time would load them, with each one's
    dataset (None: a file of no known dataset); every one of them must be said :meth:`ended` whatever becomes
    of it (a turn says so too), or the files after it for its table wait for it.
    """

    def __init__(self, max_files: int, max_bytes: int, order: Sequence[tuple[SourceObject, str | None]] = ()) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self._tables: dict[str, _Table] = {}
        self._positions: dict[tuple[str, str, str | None], int] = {}
        self._table_positions: dict[str, list[int]] = {}
        self._dataset_at: dict[int, str] = {}
        for position, (source, dataset) in enumerate(order):
            if _identity(source) in self._positions:
                continue  # the same file named twice: its first place is its place (its second run finds it loaded)
            self._positions[_identity(source)] = position
            if dataset is not None:
                self._table_positions.setdefault(dataset, []).append(position)
                self._dataset_at[position] = dataset
        self._ended: set[int] = set()
        #: Per table, the index (in its positions) of its first file not ended: every file before it has ended.
        self._frontier: dict[str, int] = dict.fromkeys(self._table_positions, 0)

    def position(self, source: SourceObject) -> int | None:
        found = self._positions.get(_identity(source))
        if found is None and source.version_id:
            # Listed without version ids (no right to list versions), then pinned to one by its parse.
            found = self._positions.get((source.bucket, source.key, None))
        return found

    def ended(self, source: SourceObject) -> None:
        """The file is past its table's turn — committed, dead-lettered, failed —: the files after it may go."""
        with self._changed:
            self.end(self.position(source))

    def end(self, position: int | None) -> None:
        """:meth:`ended`, by position, with the lock held."""
        if position is None:
            return
        self._ended.add(position)
        if (dataset := self._dataset_at.get(position)) is not None:
            positions, first = self._table_positions[dataset], self._frontier[dataset]
            while first < len(positions) and positions[first] in self._ended:
                first += 1
            self._frontier[dataset] = first
        self._changed.notify_all()

    def next_in_order(self, own: _Entry, waiting: list[_Entry]) -> list[_Entry]:
        """Of the files waiting beside ``own``, those that may commit right after it: the ones of the run's order
        that follow it with no file not yet ended between (then the others, that the run gave no order)."""
        if own.position is None:
            return waiting
        by_position = {entry.position: entry for entry in waiting if entry.position is not None}
        following: list[_Entry] = []
        dataset = own.waiting.scored.dataset
        positions = self._table_positions.get(dataset, [])
        for index in range(self._frontier.get(dataset, 0), len(positions)):
            position = positions[index]
            if position <= own.position or position in self._ended:
                continue
            if position not in by_position:
                break  # not waiting yet: the files after it wait for it
            following.append(by_position[position])
        return following + [entry for entry in waiting if entry.position is None]

    def _earlier_ended(self, dataset: str, position: int) -> bool:
        positions = self._table_positions.get(dataset, [])
        first = self._frontier.get(dataset, 0)
        return first >= len(positions) or positions[first] >= position

    @contextmanager
    def turn(self, own: WaitingLoad) -> Iterator[Turn]:
        entry = _Entry(own, position=self.position(own.scored.source))
        dataset = own.scored.dataset
        with self._changed:
            table = self._tables.setdefault(dataset, _Table())
            table.entries[own.run_id] = entry
            if entry.position is not None:
                position = entry.position
                self._changed.wait_for(lambda: entry.loaded is not None or self._earlier_ended(dataset, position))
        try:
            with table.turn:
                yield _InProcessTurn(self, table, entry)
        finally:
            with self._changed:
                del table.entries[own.run_id]
                self.end(entry.position)


def _identity(source: SourceObject) -> tuple[str, str, str | None]:
    return source.bucket, source.key, source.version_id


class _ObjectTurn:
    loaded: Loaded | None = None

    def __init__(self, queue: ObjectQueue, own: WaitingLoad, own_uri: str) -> None:
        self._queue, self._own, self._own_uri = queue, own, own_uri
        self._taken: dict[str, str] = {}

    def others(self) -> list[WaitingLoad]:
        found: list[WaitingLoad] = []
        self._taken = {}
        fits = _Budget(self._queue.max_files, self._queue.max_bytes, self._own)
        for uri in self._queue.waiting_uris(self._own.scored.dataset):
            if uri == self._own_uri:
                continue
            try:
                scored = self._queue.read_scored(uri)
                if not fits(scored):
                    continue
                waiting = self._queue.read(uri, scored)
            except Exception as exc:  # its loader finished meanwhile, or its rows expired: it is not waiting
                log.info("skipping waiting load %s: %s: %s", uri, type(exc).__name__, exc)
                continue
            self._taken[waiting.run_id] = uri
            found.append(waiting)
        return found

    def finish(self, loaded: Mapping[str, Loaded]) -> None:
        for run_id in loaded:
            if (uri := self._taken.get(run_id)) is not None:
                self._queue.forget(uri)


class ObjectQueue:
    """Loaders in separate processes (the Lambdas): waiting files are objects under ``processing/_waiting/``."""

    def __init__(
        self,
        storage: Storage,
        root: str,
        read_rows: Callable[[Scored], Incoming],
        max_files: int,
        max_bytes: int,
    ) -> None:
        #: ``<lake>/processing/_waiting``.
        self.root = root
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._storage = storage
        self.read_rows = read_rows

    def waiting_uris(self, dataset: str) -> list[str]:
        return list(self._storage.list(join(self.root, dataset)))

    def read_scored(self, uri: str) -> Scored:
        return Scored.from_dict(self._storage.read_json(uri)["scored"])

    def read(self, uri: str, scored: Scored | None = None) -> WaitingLoad:
        document = self._storage.read_json(uri)
        scored = scored or Scored.from_dict(document["scored"])
        return WaitingLoad(scored, document.get("report"), self.read_rows(scored))

    def stop_waiting(self, dataset: str, run_id: str) -> list[str]:
        """Delete the run's waiting entries, left by a loader that was killed before it could; returns them."""
        mine = [uri for uri in self.waiting_uris(dataset) if _entry_run_id(uri) == run_id]
        for uri in mine:
            self._storage.delete(uri)
        return mine

    def forget(self, uri: str) -> None:
        try:
            self._storage.delete(uri)
        except Exception:  # a leftover entry is harmless: its file's marker makes every loader skip it
            log.warning("could not delete the waiting entry %s", uri, exc_info=True)

    @contextmanager
    def turn(self, own: WaitingLoad) -> Iterator[Turn]:
        name = _entry_name(time.time_ns() // 1_000_000, own.run_id)
        uri = join(self.root, own.scored.dataset, name)
        self._storage.write_json(uri, {"scored": own.scored.to_dict(), "report": own.report})
        try:
            yield _ObjectTurn(self, own, uri)
        finally:
            self.forget(uri)


def _entry_name(milliseconds: int, run_id: str) -> str:
    # Millisecond prefix: listed in name order, the oldest waiting files are taken first.
    return f"{milliseconds:015d}-{run_id}.json"


def _entry_run_id(uri: str) -> str:
    """The run id of a waiting entry (``<15-digit time>-<run id>.json``): run ids may hold ``-`` themselves."""
    name = uri.rsplit("/", 1)[-1]
    return name[16:].removesuffix(".json") if name[:15].isdigit() and name[15:16] == "-" else ""
