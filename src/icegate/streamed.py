"""The stages for a file too big to hold: each reads and writes it a slice at a time, in bounded memory.

A CSV or TSV file bigger than ``ICEGATE_STREAM_ABOVE_BYTES`` (or one whose whole-file parse would pass the
limits the functions' memory is sized for) goes through the same four stages as any file, with the same
payloads, errors and outcomes; only their inner loops differ. The parser streams the source into
``parsed.parquet`` a block of records at a time (one row group each); the validator turns each row group
into valid and rejected rows; the scorer keeps running aggregates (``quality.QualityTally``); the loader
deduplicates and plans the insert over the row groups and commits them as one snapshot
(``lake.load_stream``). Peak memory follows the block size, not the file, but for 8 bytes a row that the
scorer and the loader each keep (a fingerprint of each key).

Streaming suits the strategies that replace nothing (``insert_new``, ``append``); an upsert may rewrite any
stored file a later slice also touches, so an upsert dataset's files are parsed whole, within the limits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import polars as pl
import pyarrow as pa

from icegate import constants as c
from icegate.datasets import Dataset, NormalizeContext
from icegate.errors import FileTooLarge
from icegate.parse import stream_delimited
from icegate.parse.stream import DEFAULT_BLOCK_BYTES
from icegate.quality import QualityTally
from icegate.settings import Limits
from icegate.storage import STREAM_READ_BYTES, ParquetSink, Storage
from icegate.validate import ValidationResult, no_rejected_rows, validate_table

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from icegate.lake import SourceIdentity
    from icegate.payloads import LoadSummary

log = logging.getLogger(__name__)

#: The formats whose records can be read a block at a time.
STREAMABLE_FORMATS = frozenset({"csv", "tsv"})
#: Strategies whose load can be planned a slice at a time (nothing stored is rewritten).
STREAMABLE_STRATEGIES = frozenset({"insert_new", "append"})
#: Text per slice: each stage holds about one slice's rows (a few hundred MiB at most), whatever the file.
BLOCK_BYTES = DEFAULT_BLOCK_BYTES


def streams(format_name: str, dataset: Dataset) -> bool:
    """Whether a file of this format for this dataset can go through the streamed stages."""
    return format_name in STREAMABLE_FORMATS and dataset.strategy in STREAMABLE_STRATEGIES


def stream_limits(limits: Limits) -> Limits:
    """The limits of a streamed file: its memory does not grow with it, so only ``max_stream_bytes`` bounds it."""
    cap = limits.max_stream_bytes
    return dataclasses.replace(limits, max_bytes=cap, max_uncompressed_bytes=cap, max_rows=2**62)


def check_size(size: int, file: str, limits: Limits) -> None:
    """Refuse a file over ``limits.max_stream_bytes`` by its stored size, before reading it."""
    if size > limits.max_stream_bytes:
        raise _too_big(file, limits, f"{size:,} bytes")


def _too_big(file: str, limits: Limits, size: str) -> FileTooLarge:
    return FileTooLarge(
        f"the file is {size}; the limit for a file streamed through the stages is {limits.max_stream_bytes:,} "
        "bytes of text (ICEGATE_MAX_STREAM_BYTES, what the stages' scratch disk holds). Split the file",
        file=file,
    )


@dataclass(frozen=True)
class StreamedParse:
    format: str
    rows: int
    columns: list[str]
    ignored_columns: list[str]
    #: The hash of the bytes parsed.
    sha256: str


class Stopped(Exception):
    """The parse was told to stop (its content turned out to be loaded already); it wrote nothing."""


class _Hashing:
    """A stream that hashes its bytes, each once and in order, however it is read.

    It seeks when the stream does: the parse of a legacy-encoded file may read a seekable source ahead to
    the end and come back (``parse.text_stream.lookahead``); the bytes read again are not hashed again.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self._position = 0  # of the next read, from the start of the object
        self._hashed = 0  # bytes hashed, from the start of the object

    def read(self, size: int = -1) -> bytes:
        block = self._stream.read(size)
        start, self._position = self._position, self._position + len(block)
        if self._position > self._hashed:
            if start > self._hashed:  # never: every seek goes back to where a read has been
                raise ValueError("a read skipped bytes that the hash has not seen")
            self.digest.update(memoryview(block)[self._hashed - start :])
            self._hashed = self._position
        return block

    def seekable(self) -> bool:
        return self._stream.seekable()

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._stream.seek(offset, whence)
        return self._position

    def drain(self) -> str:
        while self.read(STREAM_READ_BYTES):
            pass
        return self.digest.hexdigest()


def parse(
    storage: Storage,
    *,
    uri: str,
    version_id: str | None,
    etag: str | None = None,
    name: str,
    dataset: Dataset,
    parsed_uri: str,
    limits: Limits,
    encoding: str | None,
    normalize: NormalizeContext,
    stop: Callable[[], bool] = lambda: False,
    inline: Inline | None = None,
) -> StreamedParse:
    """Parse the object at ``uri`` into ``parsed_uri`` (the records' lines included), a block at a time,
    hashing its bytes on the way. ``stop`` is asked between blocks: when it says so, :class:`Stopped`.

    With a started ``inline``, each block goes to it instead (validated and tallied as it comes), and
    ``parsed_uri`` is not written.
    """
    first: tuple[str, list[str], list[str]] | None = None  # format, columns, ignored: not the block itself
    rows = 0
    take = inline.taking() if inline is not None and inline.started else storage.parquet_sink(parsed_uri)
    with storage.open_stream(uri, version_id, etag=etag) as raw, take as sink:
        source = _Hashing(raw)
        batches = stream_delimited(
            source,
            name,
            dataset,
            limits=stream_limits(limits),
            encoding=encoding,
            normalize=normalize,
            block_bytes=BLOCK_BYTES,
        )
        try:
            for batch in batches:
                if stop():
                    raise Stopped
                first = first or (batch.format, list(batch.table.column_names), batch.ignored_columns)
                sink.write(batch.with_lines())
                rows += batch.table.num_rows
        except FileTooLarge:  # only the byte caps apply to a stream, and they are max_stream_bytes
            raise _too_big(uri, limits, f"more than {limits.max_stream_bytes:,} bytes of text") from None
        sha256 = source.drain()
    assert first is not None, "stream_delimited raises EmptyFile for a file without records"
    return StreamedParse(first[0], rows, first[1], first[2], sha256)


@dataclass(frozen=True)
class StreamedValidation:
    rows_valid: int
    rows_rejected: int
    failed_checks: dict[str, int]


def validate(
    storage: Storage, *, parsed_uri: str, valid_uri: str, rejected_uri: str, dataset: Dataset, file: str
) -> StreamedValidation:
    """Validate ``parsed_uri`` a row group at a time into ``valid_uri`` and (only if any) ``rejected_uri``."""
    with _validating(storage, dataset, file, valid_uri=valid_uri, rejected_uri=rejected_uri) as validator:
        for slice_ in storage.iter_parquet(parsed_uri):
            validator.add(slice_)
    return validator.counts()


@contextmanager
def _validating(
    storage: Storage, dataset: Dataset, file: str, *, valid_uri: str, rejected_uri: str
) -> Iterator[_Validator]:
    """A validator writing to the valid and rejected rows' objects, which appear when the block ends without
    error; the rejected rows (in ``dlq/``) last, so that a failure publishing the valid ones leaves neither."""
    with storage.parquet_sink(rejected_uri) as rejected, storage.parquet_sink(valid_uri) as valid:
        yield _Validator(dataset, file, valid, rejected)


class _Validator:
    """A file's slices validated in turn into its valid and rejected rows' sinks, their failed checks counted."""

    def __init__(self, dataset: Dataset, file: str, valid: ParquetSink, rejected: ParquetSink) -> None:
        self._dataset, self._file = dataset, file
        self._valid, self._rejected = valid, rejected
        self._failed: dict[str, int] = {}
        self._first_row = 1

    def add(self, table: pa.Table) -> ValidationResult:
        result = self.validate(table)
        self.record(result)
        return result

    def validate(self, table: pa.Table) -> ValidationResult:
        result = validate_table(table, self._dataset, file=self._file, first_row=self._first_row)
        self._first_row += table.num_rows
        return result

    def record(self, result: ValidationResult) -> None:
        if result.valid.num_rows or not self._valid.tables:  # the file's schema, even if no row is valid
            self._valid.write(result.valid)
        if result.rejected.num_rows:
            self._rejected.write(result.rejected)
        for check, rows in result.failed_checks.items():
            self._failed[check] = self._failed.get(check, 0) + rows

    def counts(self) -> StreamedValidation:
        return StreamedValidation(self._valid.rows, self._rejected.rows, dict(sorted(self._failed.items())))


class Inline:
    """The validator's and the scorer's work on a streamed file, done on each block as the parser yields it.

    The Lambdas run each stage in a function of its own, which reads what the one before wrote; the local
    runner runs the three in one process, where a parsed block is validated and tallied at once: no
    ``parsed.parquet`` is written and read back, and the valid rows are read again only by the load.
    Each stage's error is raised in its turn, as when they run apart: what validating a block raised waits
    for :meth:`validation`, what tallying it raised for :meth:`scored`, and the parse reads on meanwhile, so
    a malformed record further on is still the error reported. Writing the valid and rejected rows is the
    parse's own work here: a storage error there fails (and retries) the parse.
    """

    def __init__(self) -> None:
        self.started = False

    def reset(self) -> None:
        """Forget an earlier attempt (a retried parse may not stream, or may find the content loaded)."""
        self.started = False

    def start(
        self, storage: Storage, *, valid_uri: str, rejected_uri: str, dataset: Dataset, file: str, tally: QualityTally
    ) -> None:
        """Take the blocks of this file."""
        self.started = True
        self._storage = storage
        self.valid_uri, self.rejected_uri = valid_uri, rejected_uri
        self._dataset, self._file = dataset, file
        self._tally = tally
        self._error: Exception | None = None
        self._score_error: Exception | None = None
        self._result: StreamedValidation | None = None
        #: Time spent validating and tallying, inside the parse stage's own.
        self.seconds = {c.VALIDATE: 0.0, c.SCORE: 0.0}

    @contextmanager
    def taking(self) -> Iterator[Inline]:
        """Where the parse writes its blocks (:meth:`write`); the valid and rejected objects appear when it ends
        without error."""
        self._no_rejected = no_rejected_rows(self._dataset)
        valid_uri, rejected_uri = self.valid_uri, self.rejected_uri
        try:
            with _validating(
                self._storage, self._dataset, self._file, valid_uri=valid_uri, rejected_uri=rejected_uri
            ) as v:
                self._validator = v
                yield self
                if self._error is not None:
                    raise _Abandoned  # nothing is kept of a file whose validation failed, as staged
            self._result = v.counts()
        except _Abandoned:
            pass

    def write(self, table: pa.Table) -> None:
        """Validate and tally one parsed block."""
        if self._error is not None:
            return  # the parse reads on: its own errors come first
        started = time.perf_counter()
        try:
            result = self._validator.validate(table)
        except Exception as exc:
            self._error = exc.with_traceback(None)  # its frames would hold the block for the rest of the parse
            return
        self._validator.record(result)
        validated = time.perf_counter()
        if self._score_error is None:
            try:
                rejected = _frame(result.rejected) if result.rejected.num_rows else self._no_rejected
                self._tally.add(_frame(result.valid), rejected)
            except Exception as exc:
                self._score_error = exc.with_traceback(None)
        self.seconds[c.VALIDATE] += validated - started
        self.seconds[c.SCORE] += time.perf_counter() - validated

    def validation(self) -> StreamedValidation:
        """The counts of the validated file, or what validating it raised."""
        if self._error is not None:
            raise self._error
        assert self._result is not None, "the parse took every block"
        return self._result

    def scored(self) -> QualityTally:
        """The file's tally, or what tallying it raised."""
        if self._score_error is not None:
            raise self._score_error
        return self._tally

    def discard(self) -> None:
        """Remove the valid and rejected rows written: they are not the file's (its content is loaded already,
        or it is to be read again). A failure to remove them is logged, never raised over the outcome."""
        for uri in (self.rejected_uri, self.valid_uri):
            try:
                self._storage.delete(uri)
            except Exception:
                log.warning("could not remove %s, written while validating a file that was not", uri, exc_info=True)


class _Abandoned(Exception):
    pass


def tally(storage: Storage, tally: QualityTally, *, valid_uri: str, rejected_uri: str) -> None:
    """Add a file's valid and rejected row groups to its quality tally, one at a time."""
    empty_valid: pl.DataFrame | None = None
    no_rejected = no_rejected_rows(tally.dataset)
    for table in storage.iter_parquet(valid_uri):
        valid = _frame(table)
        empty_valid = valid.clear()
        tally.add(valid, no_rejected)
    if rejected_uri:
        assert empty_valid is not None, "a file with no valid row is dead-lettered before it is scored"
        for table in storage.iter_parquet(rejected_uri):
            tally.add(empty_valid, _frame(table))


def load(
    catalog: Catalog,
    storage: Storage,
    *,
    valid_uri: str,
    dataset: Dataset,
    identity: SourceIdentity,
    namespace: str,
    attempts: int,
    backoff_seconds: float,
) -> LoadSummary:
    """Commit the valid rows at ``valid_uri`` as one snapshot, reading them a row group at a time."""
    from icegate.lake import load_stream  # see pipeline.open_catalog
    from icegate.lake.stream import dedup_columns

    with storage.local_parquet(valid_uri) as parquet:

        def slices(columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
            for group in range(parquet.num_row_groups):
                yield _frame(parquet.read_row_group(group, columns=columns))

        keys = dedup_columns(dataset)
        return load_stream(
            catalog,
            dataset,
            slices,
            identity,
            namespace=namespace,
            attempts=attempts,
            backoff_seconds=backoff_seconds,
            key_slices=lambda: slices(keys),
        )


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
