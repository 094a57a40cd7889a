"""Storage: one API over ``s3://`` (moto) and local paths, with S3 failures mapped to our errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pyarrow as pa
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from icegate.errors import SourceNotFound, StorageUnavailable
from icegate.storage import SCRATCH_PREFIX, Storage, is_s3, join, remove_stale_scratch, split_s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LANDING = "landing"  # versioned, like the real landing bucket
LAKE = "lake"


@pytest.fixture
def s3() -> Iterator[S3Client]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=LANDING)
        client.put_bucket_versioning(Bucket=LANDING, VersioningConfiguration={"Status": "Enabled"})
        client.create_bucket(Bucket=LAKE)
        yield client


@pytest.fixture
def storage() -> Storage:
    return Storage()


@pytest.fixture(params=["s3", "local"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A folder to work in: a prefix of a moto bucket, or a temporary directory."""
    if request.param == "s3":
        request.getfixturevalue("s3")
        return f"s3://{LAKE}/area"
    return str(tmp_path / "area")


def put_versions(s3: S3Client, key: str, *bodies: bytes) -> list[str]:
    """Upload the bodies one after another to the versioned bucket; their version ids in order."""
    return [s3.put_object(Bucket=LANDING, Key=key, Body=body)["VersionId"] for body in bodies]


# --- round trips ----------------------------------------------------------------------------------


def test_bytes_round_trip(storage: Storage, root: str) -> None:
    uri = join(root, "nested/deeper/file.bin")
    data = bytes(range(256)) * 10

    storage.write_bytes(uri, data)

    assert storage.read_bytes(uri) == data


def test_overwrite_replaces_the_content(storage: Storage, root: str) -> None:
    uri = join(root, "file.txt")
    storage.write_bytes(uri, b"first, longer content")
    storage.write_bytes(uri, b"second")

    assert storage.read_bytes(uri) == b"second"


def test_json_round_trip_keeps_unicode_and_writes_dates_as_text(storage: Storage, root: str) -> None:
    uri = join(root, "error.json")

    storage.write_json(uri, {"message": "café ☕", "when": date(2026, 1, 13), "counts": [1, 2]})

    assert storage.read_json(uri) == {"message": "café ☕", "when": "2026-01-13", "counts": [1, 2]}
    assert "café".encode() in storage.read_bytes(uri), "written as UTF-8, not \\u escapes"


def test_parquet_round_trip_keeps_types_and_nulls(storage: Storage, root: str) -> None:
    table = pa.table(
        {
            "post_id": pa.array(["a", None, "c"], pa.string()),
            "likes": pa.array([1, None, 3], pa.int64()),
            "posted_date": pa.array([date(2026, 1, 13), None, date(2025, 12, 31)], pa.date32()),
            "failed_checks": pa.array([["x"], [], None], pa.list_(pa.string())),
        }
    )
    uri = join(root, "run-1/valid.parquet")

    storage.write_parquet(uri, table)

    assert storage.read_parquet(uri).to_pylist() == table.to_pylist()


def test_a_streamed_parquet_object_is_read_back_a_row_group_per_table_written(storage: Storage, root: str) -> None:
    # GIVEN tables written one at a time to a sink, the second with a column all null
    uri = join(root, "run-1/valid.parquet")
    first = pa.table({"post_id": pa.array(["a", "b"]), "likes": pa.array([1, 2], pa.int64())})
    second = pa.table({"post_id": pa.array(["c"]), "likes": pa.nulls(1, pa.null())})
    with storage.parquet_sink(uri) as sink:
        sink.write(first)
        sink.write(second)

    # WHEN the object is read a row group at a time
    groups = list(storage.iter_parquet(uri))

    # THEN each table came back as written, in the first table's schema
    assert sink.rows == 3
    assert [g.to_pylist() for g in groups] == [first.to_pylist(), [{"post_id": "c", "likes": None}]]
    assert {g.schema for g in groups} == {first.schema}


def test_a_parquet_sink_that_fails_leaves_no_object(storage: Storage, root: str) -> None:
    # GIVEN a sink whose writer fails after a first table
    uri = join(root, "run-1/parsed.parquet")

    def parse_that_fails() -> None:
        with storage.parquet_sink(uri) as sink:
            sink.write(pa.table({"a": [1]}))
            raise RuntimeError("the parse failed")

    with pytest.raises(RuntimeError):
        parse_that_fails()

    # THEN nothing is there to be mistaken for a whole file
    assert not storage.exists(uri)


def test_a_sink_being_written_is_not_yet_an_object_and_one_never_written_leaves_no_folder(
    storage: Storage, root: str
) -> None:
    # GIVEN a sink with a table written, its block not yet ended
    uri = join(root, "dlq/posts/run-1/rejected.parquet")
    with storage.parquet_sink(uri) as sink:
        sink.write(pa.table({"a": [1]}))
        # THEN a writer killed now would leave nothing under the object's name
        assert not storage.exists(uri)
    assert storage.exists(uri)

    # WHEN a sink ends without a table
    empty = join(root, "dlq/posts/run-2/rejected.parquet")
    with storage.parquet_sink(empty):
        pass

    # THEN there is no object, and (locally) no folder for it either
    assert not storage.exists(empty)
    assert not list(storage.list(join(root, "dlq/posts/run-2")))
    if not is_s3(root):
        assert not Path(empty).parent.exists()


def test_a_stream_reads_an_object_in_the_pieces_asked_for_and_hashes_it(storage: Storage, root: str) -> None:
    # GIVEN an object of several pieces
    uri = join(root, "landing/big.csv")
    data = bytes(range(256)) * 1000
    storage.write_bytes(uri, data)

    # WHEN it is read as a stream, 1 000 bytes at a time
    with storage.open_stream(uri) as stream:
        pieces = list(iter(lambda: stream.read(1000), b""))

    # THEN no piece is bigger than asked, together they are the object, and its hash is the bytes' hash
    assert max(map(len, pieces)) == 1000
    assert b"".join(pieces) == data
    assert storage.sha256(uri) == hashlib.sha256(data).hexdigest()


# --- stat -----------------------------------------------------------------------------------------


def test_stat_of_an_s3_object(storage: Storage, s3: S3Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    [version] = put_versions(s3, "in/post_results_1.csv", b"post_id\n1\n")

    info = storage.stat(f"s3://{LANDING}/in/post_results_1.csv")

    assert info.size == len(b"post_id\n1\n")
    assert info.version_id == version
    assert info.etag is not None
    assert info.etag.strip('"') == hashlib.md5(b"post_id\n1\n").hexdigest(), "a single PUT's ETag is its MD5"
    assert info.last_modified.tzinfo is not None
    assert info.last_modified.utcoffset() == timedelta(0)
    assert before <= info.last_modified <= datetime.now(UTC) + timedelta(seconds=5)


def test_stat_of_a_local_file(storage: Storage, tmp_path: Path) -> None:
    path = tmp_path / "post_results_1.csv"
    path.write_bytes(b"12345")

    info = storage.stat(str(path))

    assert info.size == 5
    assert info.last_modified == datetime.fromtimestamp(path.stat().st_mtime, UTC)
    assert (info.etag, info.version_id) == (None, None)


# --- versions -------------------------------------------------------------------------------------


def test_read_and_stat_pin_a_version_of_a_versioned_object(storage: Storage, s3: S3Client) -> None:
    # GIVEN the same key uploaded twice
    first, second = put_versions(s3, "post_results_1.csv", b"first upload", b"second, longer upload")
    uri = f"s3://{LANDING}/post_results_1.csv"

    # THEN an unpinned read sees the latest, a pinned read the version asked for
    assert storage.read_bytes(uri) == b"second, longer upload"
    assert storage.read_bytes(uri, version_id=first) == b"first upload"
    assert storage.read_bytes(uri, version_id=second) == b"second, longer upload"
    assert storage.stat(uri, version_id=first).size == len(b"first upload")
    assert storage.stat(uri, version_id=first).version_id == first


def test_copy_within_s3_pins_the_source_version(storage: Storage, s3: S3Client) -> None:
    first, _ = put_versions(s3, "in/post_results_1.csv", b"first upload", b"second upload")
    source = f"s3://{LANDING}/in/post_results_1.csv"

    storage.copy(source, f"s3://{LAKE}/dlq/posts/run-1/post_results_1.csv", version_id=first)
    storage.copy(source, f"s3://{LAKE}/dlq/posts/run-2/post_results_1.csv")

    assert storage.read_bytes(f"s3://{LAKE}/dlq/posts/run-1/post_results_1.csv") == b"first upload"
    assert storage.read_bytes(f"s3://{LAKE}/dlq/posts/run-2/post_results_1.csv") == b"second upload"


def test_copy_from_s3_to_a_local_folder_pins_the_version(storage: Storage, s3: S3Client, tmp_path: Path) -> None:
    first, _ = put_versions(s3, "post_results_1.csv", b"first upload", b"second upload")
    target = tmp_path / "dlq" / "posts" / "post_results_1.csv"

    storage.copy(f"s3://{LANDING}/post_results_1.csv", str(target), version_id=first)

    assert target.read_bytes() == b"first upload"


def test_copy_from_local_to_s3(storage: Storage, s3: S3Client, tmp_path: Path) -> None:
    source = tmp_path / "post_results_1.csv"
    source.write_bytes(b"local content")

    storage.copy(str(source), f"s3://{LAKE}/dlq/post_results_1.csv")

    assert s3.get_object(Bucket=LAKE, Key="dlq/post_results_1.csv")["Body"].read() == b"local content"


def test_copy_local_to_local_creates_the_target_folder(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "landing" / "post_results_1.csv"
    source.parent.mkdir()
    source.write_bytes(b"a,b\n1,2\n")
    target = tmp_path / "dlq" / "unknown" / "run-1" / "post_results_1.csv"

    storage.copy(str(source), str(target))

    assert target.read_bytes() == b"a,b\n1,2\n"
    assert source.exists(), "a copy leaves the source in place"


# --- listing --------------------------------------------------------------------------------------


def test_list_returns_every_object_under_a_prefix_in_name_order(storage: Storage, root: str) -> None:
    # GIVEN objects under the prefix (nested too), and siblings whose names merely start the same way
    for name in ["processing/b.parquet", "processing/a/2.json", "processing/a/1.json", "processing-old/x", "other/y"]:
        storage.write_bytes(join(root, name), b"x")

    # WHEN listed, with or without a trailing slash
    listed = list(storage.list(join(root, "processing")))

    # THEN exactly the objects under the folder, recursively, sorted
    expected = [join(root, n) for n in ["processing/a/1.json", "processing/a/2.json", "processing/b.parquet"]]
    assert listed == expected
    assert list(storage.list(join(root, "processing") + "/")) == expected


def test_list_of_an_empty_or_missing_prefix_is_empty(storage: Storage, root: str) -> None:
    assert list(storage.list(join(root, "nothing-here"))) == []


def test_list_of_a_whole_bucket(storage: Storage, s3: S3Client) -> None:
    s3.put_object(Bucket=LAKE, Key="b", Body=b"")
    s3.put_object(Bucket=LAKE, Key="a/c", Body=b"")

    assert list(storage.list(f"s3://{LAKE}")) == [f"s3://{LAKE}/a/c", f"s3://{LAKE}/b"]


def test_list_pages_through_more_than_a_thousand_objects(storage: Storage, s3: S3Client) -> None:
    for i in range(1005):
        s3.put_object(Bucket=LAKE, Key=f"many/{i:04d}", Body=b"")

    listed = list(storage.list(f"s3://{LAKE}/many"))

    assert len(listed) == 1005
    assert listed[-1] == f"s3://{LAKE}/many/1004"


def test_list_of_a_local_file_is_that_file(storage: Storage, tmp_path: Path) -> None:
    path = tmp_path / "post_results_1.csv"
    path.write_bytes(b"")

    assert list(storage.list(str(path))) == [str(path)]


# --- missing objects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    ["read_bytes", "stat", "read_json", "read_parquet"],
    ids=["read-bytes", "stat", "read-json", "read-parquet"],
)
def test_missing_object_raises_source_not_found_naming_it(storage: Storage, root: str, operation: str) -> None:
    uri = join(root, "gone/post_results_1.csv")

    with pytest.raises(SourceNotFound) as caught:
        getattr(storage, operation)(uri)

    assert caught.value.file == uri
    assert uri in str(caught.value)
    assert not caught.value.transient


@pytest.mark.parametrize(
    "source",
    [f"s3://{LANDING}/gone.csv", f"s3://no-such-bucket-{'x' * 8}/gone.csv"],
    ids=["missing-key", "missing-bucket"],
)
def test_copy_of_a_missing_s3_object_raises_source_not_found(storage: Storage, s3: S3Client, source: str) -> None:
    with pytest.raises(SourceNotFound) as caught:
        storage.copy(source, f"s3://{LAKE}/dlq/gone.csv")

    assert caught.value.file == source


def test_copy_of_a_missing_local_file_raises_source_not_found(storage: Storage, tmp_path: Path) -> None:
    source = str(tmp_path / "gone.csv")

    with pytest.raises(SourceNotFound, match=r"gone\.csv"):
        storage.copy(source, str(tmp_path / "dlq" / "gone.csv"))


def test_read_of_a_deleted_version_raises_source_not_found(storage: Storage, s3: S3Client) -> None:
    first, _ = put_versions(s3, "post_results_1.csv", b"one", b"two")
    s3.delete_object(Bucket=LANDING, Key="post_results_1.csv", VersionId=first)

    with pytest.raises(SourceNotFound):
        storage.read_bytes(f"s3://{LANDING}/post_results_1.csv", version_id=first)


@pytest.mark.parametrize("read", ["read_bytes", "sha256"])
@pytest.mark.parametrize("quoted", [True, False], ids=["quoted-etag", "bare-etag"])
def test_an_unversioned_object_is_read_only_while_its_etag_is_the_one_given(
    storage: Storage, s3: S3Client, read: str, quoted: bool
) -> None:
    # GIVEN an object in an unversioned bucket, and the ETag of its first upload
    uri = f"s3://{LAKE}/post_results_1.csv"
    etag = s3.put_object(Bucket=LAKE, Key="post_results_1.csv", Body=b"one")["ETag"]
    etag = etag if quoted else etag.strip('"')

    # THEN it reads under that ETag
    getattr(storage, read)(uri, etag=etag)
    # WHEN the key is uploaded again, other bytes
    s3.put_object(Bucket=LAKE, Key="post_results_1.csv", Body=b"two")
    # THEN a read under the first ETag is refused, naming the object, instead of returning the new bytes
    with pytest.raises(SourceNotFound, match=r"replaced since its ETag was taken") as caught:
        getattr(storage, read)(uri, etag=etag)
    assert caught.value.file == uri


# --- S3 failures ----------------------------------------------------------------------------------


def _stubbed_error(storage: Storage, method: str, code: str, status: int) -> Stubber:
    """Make S3 answer the next ``method`` call with an error, as a throttled bucket would."""
    stubber = Stubber(storage._s3)
    stubber.add_client_error(
        method, service_error_code=code, service_message="Please reduce your request rate.", http_status_code=status
    )
    stubber.activate()
    return stubber


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("get_object", lambda s: s.read_bytes("s3://lake/a.csv")),
        ("head_object", lambda s: s.stat("s3://lake/a.csv")),
        ("put_object", lambda s: s.write_bytes("s3://lake/a.csv", b"x")),
        ("list_objects_v2", lambda s: list(s.list("s3://lake/processing"))),
    ],
    ids=["get", "head", "put", "list"],
)
@pytest.mark.parametrize(
    ("code", "status"),
    [("SlowDown", 503), ("ServiceUnavailable", 503), ("InternalError", 500)],
    ids=["slow-down", "service-unavailable", "internal-error"],
)
def test_throttling_becomes_storage_unavailable(
    storage: Storage, s3: S3Client, method: str, call: Any, code: str, status: int
) -> None:
    # GIVEN S3 answering with a retryable error
    stubber = _stubbed_error(storage, method, code, status)

    # WHEN the operation runs THEN it raises the transient error the state machine retries
    with pytest.raises(StorageUnavailable) as caught:
        call(storage)
    stubber.deactivate()

    assert caught.value.transient
    assert code in str(caught.value)
    assert "s3://lake/" in str(caught.value)


def test_access_denied_is_not_disguised_as_missing_or_transient(storage: Storage, s3: S3Client) -> None:
    _stubbed_error(storage, "get_object", "AccessDenied", 403)

    with pytest.raises(ClientError) as caught:
        storage.read_bytes("s3://lake/a.csv")

    assert caught.value.response["Error"]["Code"] == "AccessDenied"


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("s3://b/k/x.csv", True), ("/tmp/x.csv", False), ("lake/x", False), ("file:///tmp/x", False)],
    ids=["s3", "absolute", "relative", "file-uri"],
)
def test_is_s3(uri: str, expected: bool) -> None:
    assert is_s3(uri) is expected


@pytest.mark.parametrize(
    ("uri", "parts"),
    [("s3://bucket/a/b.csv", ("bucket", "a/b.csv")), ("s3://bucket", ("bucket", "")), ("s3://bucket/", ("bucket", ""))],
    ids=["key", "bucket-only", "bucket-slash"],
)
def test_split_s3(uri: str, parts: tuple[str, str]) -> None:
    assert split_s3(uri) == parts


def test_join_never_doubles_slashes() -> None:
    assert join("s3://lake/", "/dlq/", "posts", "run-1/") == "s3://lake/dlq/posts/run-1"
    assert join("/tmp/lake", "processing") == "/tmp/lake/processing"


def test_storage_json_is_indented_for_people(storage: Storage, tmp_path: Path) -> None:
    path = tmp_path / "error.json"

    storage.write_json(str(path), {"a": 1})

    assert path.read_text() == json.dumps({"a": 1}, indent=2)


# --- in-memory hand-over (one process runs every stage) --------------------------------------------


def test_a_held_scratch_table_is_read_back_without_being_written(storage: Storage, root: str) -> None:
    # GIVEN a storage holding the scratch prefix of a run
    scratch = join(root, "processing", "run-1")
    storage.hold(scratch)
    table = pa.table({"a": [1, None, 3], "b": ["x", "y", None]})
    # WHEN a stage writes a table there and the next one reads it
    storage.write_parquet(join(scratch, "valid.parquet"), table)
    # THEN it is the same table, and nothing was written
    assert storage.read_parquet(join(scratch, "valid.parquet")).equals(table)
    assert list(storage._list_written(root)) == []
    assert storage.exists(join(scratch, "valid.parquet"))
    assert list(storage.list(root)) == [join(scratch, "valid.parquet")]


def test_held_scratch_json_and_bytes_round_trip_and_go_on_release(storage: Storage, root: str) -> None:
    scratch = join(root, "processing", "run-1")
    storage.hold(scratch)
    storage.write_json(join(scratch, "quality.json"), {"score": 99.5})
    assert storage.read_json(join(scratch, "quality.json")) == {"score": 99.5}
    # A held table read as bytes is still a Parquet object, as the Lambdas would see it.
    storage.write_parquet(join(scratch, "parsed.parquet"), pa.table({"a": ["1"]}))
    assert storage.read_bytes(join(scratch, "parsed.parquet")).startswith(b"PAR1")
    storage.release()
    for name in ("quality.json", "parsed.parquet"):
        with pytest.raises(SourceNotFound):
            storage.read_bytes(join(scratch, name))


def test_a_held_table_outside_the_scratch_prefix_is_written_too(storage: Storage, root: str) -> None:
    # GIVEN a hold: rejected rows go to the DLQ, which must outlive the run
    storage.hold(join(root, "processing", "run-1"))
    rejected = join(root, "dlq", "posts", "run-1", "rejected.parquet")
    table = pa.table({"row_number": [2, 5]})
    storage.write_parquet(rejected, table)
    storage.release()
    # THEN the object is there once the run's memory is gone
    assert storage.read_parquet(rejected).equals(table)


def test_a_forgotten_scratch_object_is_gone(storage: Storage, root: str) -> None:
    scratch = join(root, "processing", "run-1")
    storage.hold(scratch)
    storage.write_parquet(join(scratch, "parsed.parquet"), pa.table({"a": ["1"]}))
    storage.forget(join(scratch, "parsed.parquet"))
    with pytest.raises(SourceNotFound):
        storage.read_parquet(join(scratch, "parsed.parquet"))


def test_without_a_scratch_prefix_held_tables_are_written_and_read_from_memory(
    storage: Storage, tmp_path: Path
) -> None:
    # GIVEN a hold that keeps processing files (``icegate run --keep-processing``)
    storage.hold(None)
    uri = str(tmp_path / "processing" / "run-1" / "valid.parquet")
    table = pa.table({"a": [1, 2]})
    storage.write_parquet(uri, table)
    # THEN the file is on disk, and the held table is the one read back
    assert Path(uri).is_file()
    assert storage.read_parquet(uri) is table


def test_a_held_table_read_as_a_frame_is_converted_once_and_still_reads_as_arrow(storage: Storage, root: str) -> None:
    # GIVEN a held table (the valid rows the scorer and the loader both read)
    scratch = join(root, "processing", "run-1")
    storage.hold(scratch)
    uri = join(scratch, "valid.parquet")
    table = pa.table({"post_id": ["a", "b"], "likes": [1, None]})
    storage.write_parquet(uri, table)
    # WHEN two readers ask for it as a polars frame
    first, second = storage.read_frame(uri), storage.read_frame(uri)
    # THEN they share one frame with the table's rows, and an Arrow reader still gets the same rows
    assert first is second
    assert first.to_dict(as_series=False) == {"post_id": ["a", "b"], "likes": [1, None]}
    assert storage.read_parquet(uri).to_pylist() == table.to_pylist()


def test_a_frame_of_an_object_that_is_not_held_is_read_from_storage(storage: Storage, root: str) -> None:
    uri = join(root, "dlq", "rejected.parquet")
    storage.write_parquet(uri, pa.table({"row_number": [3]}))
    assert storage.read_frame(uri).to_dict(as_series=False) == {"row_number": [3]}


def test_scratch_folders_of_gone_processes_are_removed_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN in the temporary directory: the scratch of a process that is gone, one of a live process (the
    # test runner's parent), this process's own (one older than it: a killed runtime with the same pid,
    # one in use), another tool's folder with the same start, and a file
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    before = time.time() - 3600
    names = {
        "gone": f"{SCRATCH_PREFIX}{int(gone.stdout)}-abc",
        "live": f"{SCRATCH_PREFIX}{os.getppid()}-def",
        "mine-stale": f"{SCRATCH_PREFIX}{os.getpid()}-ghi",
        "other-tool": "icegate-postgres-jkl",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (before, before))
    (tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-in-use").mkdir()
    (tmp_path / f"{SCRATCH_PREFIX}a-file").write_bytes(b"not a folder")

    # WHEN a new runtime starts
    removed = remove_stale_scratch()

    # THEN the gone process's folder and this pid's older one are removed, nothing else
    assert removed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["live"], names["other-tool"], f"{SCRATCH_PREFIX}{os.getpid()}-in-use", f"{SCRATCH_PREFIX}a-file"]
    )
