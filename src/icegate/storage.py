"""The only module that reads and writes objects, for local paths and ``s3://`` URIs alike.

S3 goes through boto3 (imported on first use) so that reads can pin a version id; local paths go
through the file system. Throttling becomes :class:`StorageUnavailable` (retried by the state
machine); a missing object becomes :class:`SourceNotFound`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from icegate.errors import SourceNotFound, StorageUnavailable

if TYPE_CHECKING:
    import polars as pl
    from mypy_boto3_s3 import S3Client

_THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable", "InternalError"}
_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NoSuchBucket"}
#: A read or copy conditional on the ETag the object had (``If-Match``) found another object under the key.
_REPLACED = {"PreconditionFailed", "412"}
#: Intermediate files are read once by the next stage: favour speed over size.
_PROCESSING_COMPRESSION = "lz4"
#: Keys per listing request: S3's own maximum.
LIST_PAGE_SIZE = 1000


#: Bytes per read of a stream: big enough that the call overhead does not show, small against any memory.
STREAM_READ_BYTES = 8 * 1024 * 1024


#: Local folders an S3 object streams through (the Lambdas' /tmp): ``icegate-scratch-<pid>-<random>``.
SCRATCH_PREFIX = "icegate-scratch-"
#: When this process began using storage: a scratch folder of its own pid older than that is a predecessor's.
_STARTED = time.time()


def _scratch_prefix() -> str:
    """A scratch folder's name up to its random part: whose it is (``remove_stale_scratch`` reads the pid)."""
    return f"{SCRATCH_PREFIX}{os.getpid()}-"


def _scratch_folder() -> str:
    return tempfile.mkdtemp(prefix=_scratch_prefix())


def remove_stale_scratch() -> int:
    """Delete the scratch folders of processes that are gone; how many there were.

    A Lambda sandbox keeps /tmp when its runtime is restarted after a timeout or running out of memory, and
    what the killed runtime left would take the next streamed file's room. A folder is stale when the
    process named in it no longer runs — or is this one (a restarted runtime may get the same pid) and the
    folder is older than this process. Folders of processes still running are never touched.
    """
    stale = []
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if not folder.is_dir() or not pid.isdigit():
            continue
        mine = int(pid) == os.getpid()
        if (mine and folder.stat().st_mtime < _STARTED) or (not mine and not _running(int(pid))):
            stale.append(folder)
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _reraise(error: Exception) -> None:
    raise error


class ParquetSink:
    """Tables appended to one Parquet file as row groups; the first table's schema is the file's.

    Each table is encoded and written on a thread of its own while the caller makes the next one (Parquet
    encoding releases the GIL); at most one table waits, so memory stays at about two tables.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="icegate-sink")
        self._pending: Future[None] | None = None
        self.rows = 0
        self.tables = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)  # no folder for a file never written
            self._schema = table.schema
            # Read back whole, once, by the next stage: no statistics, no dictionary (most text is distinct).
            self._writer = pq.ParquetWriter(
                self._path,
                table.schema,
                compression=_PROCESSING_COMPRESSION,
                use_dictionary=False,
                write_statistics=False,
            )
        elif table.schema != self._schema:
            table = table.cast(self._schema)  # e.g. a column all null in this table
        self._wait()
        self._pending = self._pool.submit(self._writer.write_table, table)
        self.rows += table.num_rows
        self.tables += 1

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()
            if self._writer is not None:
                self._writer.close()
                self._writer = None


#: Bytes per ranged GET: a Parquet footer and a small column chunk in one request, no more for a big object.
_RANGE_READ_BYTES = 64 * 1024


def _first(parquet: pq.ParquetFile, column: str) -> tuple[int, Any]:
    rows = parquet.metadata.num_rows
    if not rows or column not in parquet.schema_arrow.names:
        return rows, None
    values = parquet.read_row_group(0, columns=[column]).column(0)
    return rows, values[0].as_py() if len(values) else None


class _RangedObject(io.RawIOBase):
    """An S3 object as a seekable file read by ranged GETs, so a Parquet reader fetches only the parts it needs."""

    def __init__(self, storage: Storage, uri: str) -> None:
        super().__init__()
        self._storage, self._uri = storage, uri
        self._size = storage.stat(uri).size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size or not len(buffer):
            return 0
        last = min(self._size, self._position + len(buffer)) - 1
        bucket, key = split_s3(self._uri)
        storage = self._storage
        response = storage._s3_call(
            "GET", self._uri, storage._s3.get_object, Bucket=bucket, Key=key, Range=f"bytes={self._position}-{last}"
        )
        data = response["Body"].read()
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    last_modified: datetime
    etag: str | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class ListedObject:
    """One current object of a listing: its URI, its key (without the bucket) and what S3 says of it."""

    uri: str
    key: str
    info: ObjectInfo


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _one_upload(version_id: str | None, etag: str | None) -> dict[str, str]:
    """The GET arguments that read one upload of a key: its version, else (an unversioned bucket) the object only
    while its ETag is the one given."""
    if version_id:
        return {"VersionId": version_id}
    return {"IfMatch": _quoted(etag)} if etag else {}


def _quoted(etag: str) -> str:
    return '"' + etag.strip('"') + '"'


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


class Storage:
    """Object access for one process. Cheap to create; the S3 client is made on first use.

    Stages that run in one process (the local runner) hand their tables over in memory: after
    :meth:`hold`, each table written is kept for this process's own reads, and objects under the
    scratch prefix are kept *only* in memory — the Lambdas, one process per stage, write them.
    """

    def __init__(self, s3_endpoint: str | None = None) -> None:
        self._endpoint = s3_endpoint
        #: URI -> table (or bytes, under the scratch prefix) written since :meth:`hold`, or the polars frame a
        #: reader made of it (see :meth:`read_frame`); None when not holding.
        self._held: dict[str, pa.Table | pl.DataFrame | bytes] | None = None
        self._scratch: str | None = None

    def fork(self) -> Storage:
        """A Storage for another thread: the same endpoint, nothing held (holding is per run)."""
        return Storage(self._endpoint)

    def hold(self, scratch_prefix: str | None = None) -> None:
        """From now on keep written tables in memory, and never write the objects under ``scratch_prefix``."""
        self._held = {}
        self._scratch = scratch_prefix.rstrip("/") + "/" if scratch_prefix else None

    def forget(self, uri: str) -> None:
        """Drop one held object (its last reader is done with it); a scratch object is then gone."""
        if self._held is not None:
            self._held.pop(uri, None)

    def release(self) -> None:
        """Stop holding: held tables are freed, and held scratch objects are gone (they were never written)."""
        self._held = None
        self._scratch = None

    def _in_scratch(self, uri: str) -> bool:
        return self._held is not None and self._scratch is not None and uri.startswith(self._scratch)

    def _held_object(self, uri: str) -> pa.Table | pl.DataFrame | bytes | None:
        return None if self._held is None else self._held.get(uri)

    @cached_property
    def _s3(self) -> S3Client:
        import boto3

        return boto3.client("s3", endpoint_url=self._endpoint)

    def _s3_call(self, what: str, uri: str, call: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        try:
            return call(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _THROTTLING:
                raise StorageUnavailable(f"S3 {what} was throttled or failed ({code}); retry later", file=uri) from exc
            if code in _MISSING:
                raise SourceNotFound(f"S3 {what}: the object does not exist ({code})", file=uri) from exc
            if code in _REPLACED:
                raise SourceNotFound(
                    f"S3 {what}: the object was replaced since its ETag was taken, and an unversioned bucket keeps "
                    f"no earlier bytes ({code})",
                    file=uri,
                ) from exc
            raise

    def stat(self, uri: str, version_id: str | None = None) -> ObjectInfo:
        if self._in_scratch(uri):
            if (held := self._held_object(uri)) is None:
                raise SourceNotFound("the object does not exist", file=uri)
            size = (
                len(held)
                if isinstance(held, bytes)
                else held.nbytes
                if isinstance(held, pa.Table)
                else int(held.estimated_size())
            )
            return ObjectInfo(size=size, last_modified=datetime.now(UTC))
        if is_s3(uri):
            bucket, key = split_s3(uri)
            extra = {"VersionId": version_id} if version_id else {}
            head = self._s3_call("HEAD", uri, self._s3.head_object, Bucket=bucket, Key=key, **extra)
            return ObjectInfo(
                size=int(head["ContentLength"]),
                last_modified=head["LastModified"].astimezone(UTC),
                etag=head.get("ETag"),
                version_id=head.get("VersionId"),
            )
        try:
            st = Path(uri).stat()
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=uri) from None
        return ObjectInfo(size=st.st_size, last_modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def find_version(self, uri: str, etag: str) -> ObjectInfo | None:
        """The newest version of an ``s3://`` object whose ETag is ``etag`` (quoted or not), or None.

        Needs ``s3:ListBucketVersions``. For an object replaced since its ETag was learned (a listing).
        """
        bucket, key = split_s3(uri)
        wanted = etag.strip('"')
        paginator = self._s3.get_paginator("list_object_versions")
        pages = iter(paginator.paginate(Bucket=bucket, Prefix=key))
        # Each page is a request: throttling on any of them must surface as StorageUnavailable too.
        while (page := self._s3_call("LIST versions", uri, lambda: next(pages, None))) is not None:
            for item in page.get("Versions", []):  # newest first, per key
                if item["Key"] == key and str(item.get("ETag", "")).strip('"') == wanted:
                    return ObjectInfo(
                        size=int(item["Size"]),
                        last_modified=item["LastModified"].astimezone(UTC),
                        etag=item.get("ETag"),
                        version_id=str(item["VersionId"]),
                    )
        return None

    def exists(self, uri: str) -> bool:
        try:
            self.stat(uri)
        except SourceNotFound:
            return False
        return True

    def delete(self, uri: str) -> None:
        """Remove an object; a missing one is not an error. A local folder left empty goes too, as in S3."""
        self.forget(uri)
        if self._in_scratch(uri):
            return
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self._s3_call("DELETE", uri, self._s3.delete_object, Bucket=bucket, Key=key)
            return
        path = Path(uri)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: other files live there
            path.parent.rmdir()

    def read_bytes(self, uri: str, version_id: str | None = None, *, etag: str | None = None) -> bytes:
        """An object's bytes: of ``version_id``, else (an S3 object) only if its ETag is still ``etag``
        (another object under the key is then :class:`SourceNotFound`)."""
        if self._in_scratch(uri):
            held = self._held_object(uri)
            if held is None:
                raise SourceNotFound("the object does not exist", file=uri)
            if isinstance(held, bytes):
                return held
            sink = io.BytesIO()
            pq.write_table(
                held if isinstance(held, pa.Table) else held.to_arrow(), sink, compression=_PROCESSING_COMPRESSION
            )
            return sink.getvalue()
        if is_s3(uri):
            bucket, key = split_s3(uri)
            extra = _one_upload(version_id, etag)
            body = self._s3_call("GET", uri, self._s3.get_object, Bucket=bucket, Key=key, **extra)["Body"]
            return bytes(body.read())
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=uri) from None

    def write_bytes(self, uri: str, data: bytes) -> None:
        if self._in_scratch(uri):
            assert self._held is not None
            self._held[uri] = data
            return
        self.forget(uri)  # a table held under this URI is stale now
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self._s3_call("PUT", uri, self._s3.put_object, Bucket=bucket, Key=key, Body=data)
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def write_json(self, uri: str, document: Any) -> None:
        self.write_bytes(uri, json.dumps(document, indent=2, ensure_ascii=False, default=str).encode())

    def read_parquet(self, uri: str) -> pa.Table:
        held = self._held_object(uri)
        if isinstance(held, pa.Table):
            return held
        if isinstance(held, bytes):
            return pq.read_table(pa.BufferReader(held))
        if held is not None:
            return held.to_arrow()
        if self._in_scratch(uri):
            raise SourceNotFound("the object does not exist", file=uri)
        if is_s3(uri):
            return pq.read_table(pa.BufferReader(self.read_bytes(uri)))
        try:
            return pq.read_table(uri)
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=uri) from None

    def read_frame(self, uri: str) -> pl.DataFrame:
        """A Parquet object as a polars frame. A held table becomes that frame: later readers share it, and the
        Arrow copy is freed (both at once would be the run's peak)."""
        import polars as pl

        held = self._held_object(uri)
        if isinstance(held, pl.DataFrame):
            return held
        frame = pl.from_arrow(self.read_parquet(uri))
        assert isinstance(frame, pl.DataFrame)
        if held is not None and self._held is not None:
            self._held[uri] = frame
        return frame

    def write_parquet(self, uri: str, table: pa.Table) -> None:
        if self._held is not None:
            self._held[uri] = table
            if self._in_scratch(uri):
                return
        if is_s3(uri):
            sink = io.BytesIO()
            pq.write_table(table, sink, compression=_PROCESSING_COMPRESSION)
            self.write_bytes(uri, sink.getvalue())
            return
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, uri, compression=_PROCESSING_COMPRESSION)

    def copy(self, source_uri: str, target_uri: str, version_id: str | None = None, *, etag: str | None = None) -> None:
        """Copy an object (server-side within S3), pinning the source version when given, else its ``etag`` (as
        :meth:`read_bytes`)."""
        if self._in_scratch(source_uri) or self._in_scratch(target_uri):
            self.write_bytes(target_uri, self.read_bytes(source_uri, version_id, etag=etag))
            return
        if is_s3(source_uri) and is_s3(target_uri):
            src_bucket, src_key = split_s3(source_uri)
            bucket, key = split_s3(target_uri)
            copy_source: dict[str, str] = {"Bucket": src_bucket, "Key": src_key}
            if version_id:
                copy_source["VersionId"] = version_id
            # moto ignores this condition: the dead letter's HEAD before the copy is what its tests show.
            condition = {} if version_id or not etag else {"CopySourceIfMatch": _quoted(etag)}
            self._s3_call(
                "COPY", source_uri, self._s3.copy, CopySource=copy_source, Bucket=bucket, Key=key, ExtraArgs=condition
            )
            return
        if not is_s3(source_uri) and not is_s3(target_uri):
            Path(target_uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(source_uri, target_uri)
            except FileNotFoundError:
                raise SourceNotFound("the file does not exist", file=source_uri) from None
            return
        self.write_bytes(target_uri, self.read_bytes(source_uri, version_id, etag=etag))

    def list(self, prefix: str) -> Iterator[str]:
        """Every object under a prefix (recursively), as URIs/paths, in name order."""
        under = prefix.rstrip("/") + "/"
        held = [u for u in self._held or () if u.startswith(under) and self._in_scratch(u)]
        if held:
            yield from sorted({*held, *self._list_written(prefix)})
            return
        yield from self._list_written(prefix)

    def list_objects(self, uri: str, *, page_size: int = LIST_PAGE_SIZE) -> Iterator[ListedObject]:
        """The current objects whose key starts with an ``s3://bucket/prefix`` (a key prefix, as S3 means it),
        every page, with size, last-modified time, ETag and — in a versioned bucket — the current version id.

        A versioned bucket is listed by version (the latest one of each key; a key whose latest version is a
        delete marker is gone), so a read can pin exactly what was listed. Without the right to read the
        bucket's versioning or its versions (``s3:GetBucketVersioning``, ``s3:ListBucketVersions``), or on a
        bucket never versioned, objects are listed plainly, without version ids.
        """
        from botocore.exceptions import ClientError

        if not is_s3(uri):
            raise ValueError(f"{uri!r} is not an s3:// URI")
        bucket = split_s3(uri)[0]
        try:
            versioning = self._s3_call("GET versioning", uri, self._s3.get_bucket_versioning, Bucket=bucket)
            versioned = versioning.get("Status") in ("Enabled", "Suspended")
            pages = self._pages(uri, "list_object_versions" if versioned else "list_objects_v2", page_size)
            first = next(pages, None)  # the first request: where a missing right shows
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "AccessDenied":
                raise
            versioned = False
            pages = self._pages(uri, "list_objects_v2", page_size)
            first = next(pages, None)
        for page in itertools.chain([first] if first is not None else [], pages):
            for item in page.get("Versions" if versioned else "Contents", []):
                if versioned and not item["IsLatest"]:
                    continue
                version = item.get("VersionId") if versioned else None
                info = ObjectInfo(
                    size=int(item["Size"]),
                    last_modified=item["LastModified"].astimezone(UTC),
                    etag=item.get("ETag"),
                    # "null": the object was written before versioning was enabled; it is read without one.
                    version_id=None if version in (None, "null") else str(version),
                )
                yield ListedObject(f"s3://{bucket}/{item['Key']}", str(item["Key"]), info)

    def _pages(self, uri: str, operation: str, page_size: int) -> Iterator[dict[str, Any]]:
        bucket, prefix = split_s3(uri)
        paginator = self._s3.get_paginator(operation)  # type: ignore[call-overload]
        pages = iter(paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}))
        # Each page is a request: throttling on any of them must surface as StorageUnavailable too.
        while (page := self._s3_call("LIST", uri, lambda: next(pages, None))) is not None:
            yield page

    def sha256(self, uri: str, version_id: str | None = None, *, etag: str | None = None) -> str:
        """The content hash of an object, read in blocks (never whole into memory); ``etag`` as in
        :meth:`read_bytes`."""
        digest = hashlib.sha256()
        with self.open_stream(uri, version_id, etag=etag) as stream:
            for block in iter(lambda: stream.read(STREAM_READ_BYTES), b""):
                digest.update(block)
        return digest.hexdigest()

    @contextlib.contextmanager
    def open_stream(self, uri: str, version_id: str | None = None, *, etag: str | None = None) -> Iterator[BinaryIO]:
        """An object's bytes as a stream, for files too big to hold (``read(n)`` returns at most ``n`` bytes);
        ``etag`` as in :meth:`read_bytes`."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            extra = _one_upload(version_id, etag)
            body = self._s3_call("GET", uri, self._s3.get_object, Bucket=bucket, Key=key, **extra)["Body"]
            try:
                yield body
            finally:
                body.close()
            return
        try:
            handle = open(uri, "rb")  # noqa: SIM115 - closed below, after the caller's block
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=uri) from None
        with handle:
            yield handle

    @contextlib.contextmanager
    def parquet_sink(self, uri: str) -> Iterator[ParquetSink]:
        """A Parquet object written a table at a time (one row group each), never held whole in memory.

        Always written, also while holding: what is streamed is too big to keep. The file is written under a
        temporary name and appears under ``uri`` (an S3 object: uploaded, in parts) only when the block ends
        without an error, so a failed or killed writer never leaves a partial file that reads as whole; nothing
        is written if no table was.
        """
        self.forget(uri)
        if is_s3(uri):
            folder = _scratch_folder()
            local = os.path.join(folder, "object.parquet")
        else:
            local = f"{uri}.{uuid.uuid4().hex}.partial"
        sink = ParquetSink(local)
        try:
            try:
                yield sink
            finally:
                sink.close()
            if sink.tables and is_s3(uri):
                self._upload(local, uri)
            elif sink.tables:
                os.replace(local, uri)
        finally:
            if is_s3(uri):
                shutil.rmtree(folder, ignore_errors=True)
            else:
                Path(local).unlink(missing_ok=True)

    def _upload(self, path: str, uri: str) -> None:
        from boto3.exceptions import S3UploadFailedError

        bucket, key = split_s3(uri)
        try:
            self._s3_call("PUT", uri, self._s3.upload_file, Filename=path, Bucket=bucket, Key=key)
        except S3UploadFailedError as exc:
            # boto3 wraps the part's ClientError: the original says whether to retry.
            cause = exc.__context__
            if isinstance(cause, Exception):
                self._s3_call("PUT", uri, _reraise, error=cause)
            raise

    def parquet_first(self, uri: str, column: str) -> tuple[int, Any]:
        """A Parquet object's row count and its first row's value in ``column`` (None without rows or column).

        Reads the footer and that column's first chunk only (ranged GETs on S3), never the whole object: a listing
        of many large rejected-rows files asks this of each.
        """
        if self._held_object(uri) is not None or self._in_scratch(uri):
            table = self.read_parquet(uri)
            values = table.column(column) if column in table.column_names else None
            return table.num_rows, values[0].as_py() if values is not None and len(values) else None
        if is_s3(uri):
            with io.BufferedReader(_RangedObject(self, uri), buffer_size=_RANGE_READ_BYTES) as handle:
                return _first(pq.ParquetFile(handle), column)
        with self.local_parquet(uri) as parquet:
            return _first(parquet, column)

    @contextlib.contextmanager
    def local_parquet(self, uri: str) -> Iterator[pq.ParquetFile]:
        """A Parquet object opened for reading a row group at a time (an S3 object downloaded to a temporary file)."""
        if not is_s3(uri):
            try:
                with pq.ParquetFile(uri) as parquet:
                    yield parquet
            except FileNotFoundError:
                raise SourceNotFound("the file does not exist", file=uri) from None
            return
        with tempfile.TemporaryDirectory(prefix=_scratch_prefix()) as folder:
            local = os.path.join(folder, "object.parquet")
            bucket, key = split_s3(uri)
            self._s3_call("GET", uri, self._s3.download_file, Bucket=bucket, Key=key, Filename=local)
            with pq.ParquetFile(local) as parquet:
                yield parquet

    def iter_parquet(self, uri: str) -> Iterator[pa.Table]:
        """A Parquet object's row groups, one table at a time."""
        with self.local_parquet(uri) as parquet:
            for group in range(parquet.num_row_groups):
                yield parquet.read_row_group(group)

    def _list_written(self, prefix: str) -> Iterator[str]:
        if is_s3(prefix):
            bucket, key = split_s3(prefix)
            paginator = self._s3.get_paginator("list_objects_v2")
            pages = iter(paginator.paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/" if key else ""))
            # Each page is a request: throttling on any of them must surface as StorageUnavailable too.
            while (page := self._s3_call("LIST", prefix, lambda: next(pages, None))) is not None:
                for item in page.get("Contents", []):
                    yield f"s3://{bucket}/{item['Key']}"
            return
        root = Path(prefix)
        if root.is_file():
            yield str(root)
        elif root.is_dir():
            yield from sorted(str(p) for p in root.rglob("*") if p.is_file())
