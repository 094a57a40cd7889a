"""Transient or not: what AWS and the catalogs really raise, and one retried list for the cloud and locally."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError
from pyiceberg.exceptions import ForbiddenError, ServiceUnavailableError, TooManyRequestsError
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from icegate import errors, pipeline
from icegate.constants import TRANSIENT_ERRORS, TRANSIENT_RETRIES
from icegate.errors import CatalogUnavailable, SchemaMismatch, StorageUnavailable, TransientError
from icegate.payloads import Job, SourceObject
from icegate.settings import Settings
from icegate.transient import as_transient


def client_error(code: str, operation: str, status: int = 400) -> ClientError:
    """A botocore ClientError exactly as botocore builds it from the service's answer."""
    response = {"Error": {"Code": code, "Message": f"{code} message"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)  # type: ignore[arg-type]


def sql_error(kind: type[DatabaseError], message: str) -> DatabaseError:
    """A SQLAlchemy error wrapping the DBAPI's, as SQLAlchemy raises it."""
    return kind("SELECT 1 FROM iceberg_tables", {}, sqlite3.DatabaseError(message))


TRANSIENT = {
    "s3-slowdown-through-pyarrow": (
        OSError(
            "When reading information for key 'warehouse/posts/data/1.parquet' in bucket 'lake': "
            "AWS Error SLOW_DOWN during HeadObject operation: Please reduce your request rate."
        ),
        StorageUnavailable,
    ),
    "s3-503-through-pyarrow": (
        OSError("AWS Error UNKNOWN (HTTP status 503) during GetObject operation: Service Unavailable"),
        StorageUnavailable,
    ),
    "s3-slowdown-through-boto3": (client_error("SlowDown", "PutObject", 503), StorageUnavailable),
    "glue-throttling": (client_error("ThrottlingException", "GetTable"), CatalogUnavailable),
    "glue-concurrent-modification": (
        client_error("ConcurrentModificationException", "UpdateTable"),
        CatalogUnavailable,
    ),
    "glue-internal": (client_error("InternalServiceException", "CreateTable", 500), CatalogUnavailable),
    "glue-unreachable": (
        EndpointConnectionError(endpoint_url="https://glue.eu-west-1.amazonaws.com/"),
        CatalogUnavailable,
    ),
    "s3-connect-timeout": (ConnectTimeoutError(endpoint_url="https://lake.s3.amazonaws.com/"), StorageUnavailable),
    "sql-catalog-unreachable": (sql_error(OperationalError, "unable to open database file"), CatalogUnavailable),
    "sql-catalog-corrupt": (sql_error(DatabaseError, "file is not a database"), CatalogUnavailable),
    "rest-catalog-503": (ServiceUnavailableError("ServiceUnavailable: try again"), CatalogUnavailable),
    "rest-catalog-throttled": (TooManyRequestsError("slow down"), CatalogUnavailable),
    # A burst: botocore's own quick retries ran out while the service was still busy. Whatever botocore's
    # standard retry mode treats as throttled or transient is retried by the state machine too.
    "glue-throttled-by-another-name": (client_error("Throttling", "GetTables", 400), CatalogUnavailable),
    "glue-request-limit": (client_error("RequestLimitExceeded", "UpdateTable", 400), CatalogUnavailable),
    "s3-request-timeout-exception": (client_error("RequestTimeoutException", "GetObject", 408), StorageUnavailable),
    # A gateway's answer has no AWS error body: botocore names the error by its status.
    "s3-bad-gateway": (client_error("502", "GetObject", 502), StorageUnavailable),
    "glue-gateway-timeout": (client_error("504", "GetTable", 504), CatalogUnavailable),
    "glue-too-many-requests-status": (client_error("TooManyRequests", "GetTable", 429), CatalogUnavailable),
    # A catalog pointing at table metadata that is gone (a local lake moved): never the file's fault.
    "table-metadata-missing": (
        FileNotFoundError(
            2, "Failed to open local file '/old/lake/warehouse/instagram_db/posts/metadata/00001-ab.metadata.json'"
        ),
        CatalogUnavailable,
    ),
}

NOT_TRANSIENT = {
    "s3-access-denied-through-pyarrow": OSError("AWS Error ACCESS_DENIED during GetObject operation: Access Denied"),
    "local-file-missing": FileNotFoundError(2, "No such file or directory"),
    "s3-access-denied": client_error("AccessDenied", "GetObject", 403),
    "glue-access-denied": client_error("AccessDeniedException", "CreateDatabase"),
    "glue-table-missing": client_error("EntityNotFoundException", "GetTable"),
    # A 5xx that no retry can fix, and a quota that waiting does not raise.
    "s3-not-implemented": client_error("NotImplemented", "PutObject", 501),
    "glue-table-quota": client_error("ResourceNumberLimitExceededException", "CreateTable", 400),
    "sql-duplicate-key": sql_error(IntegrityError, "UNIQUE constraint failed"),
    "rest-catalog-forbidden": ForbiddenError("not allowed"),
    "a-bug": ValueError("invalid literal for int()"),
    "already-classified": SchemaMismatch("required column likes missing", file="f.csv"),
}


@pytest.mark.parametrize(("raised", "expected"), TRANSIENT.values(), ids=list(TRANSIENT))
def test_a_passing_condition_is_transient(raised: BaseException, expected: type[TransientError]) -> None:
    # GIVEN what a library really raises for a passing condition
    # WHEN it is classified
    transient = as_transient(raised, file="s3://landing/post_results_1.csv")

    # THEN it is the retried error, naming the file and what happened
    assert type(transient) is expected
    assert str(transient).startswith("s3://landing/post_results_1.csv: ")
    assert type(raised).__name__ in str(transient)


@pytest.mark.parametrize("raised", NOT_TRANSIENT.values(), ids=list(NOT_TRANSIENT))
def test_a_lasting_fault_is_not_transient(raised: BaseException) -> None:
    assert as_transient(raised) is None


def test_a_stage_raises_the_library_error_as_the_retried_class(tmp_path: Path) -> None:
    # GIVEN a lake whose SQL catalog file is corrupt (not a database at all)
    (tmp_path / "catalog.db").write_bytes(b"not a database\n" * 64)
    settings = Settings(lake_root=str(tmp_path))

    # WHEN a stage opens the catalog
    # THEN it fails with CatalogUnavailable (retried), keeping the original as the cause
    with pytest.raises(CatalogUnavailable, match="file is not a database") as raised:
        pipeline.open_catalog(settings)
    assert isinstance(raised.value.__cause__, DatabaseError)


# --- one list: the state machine's ErrorEquals and the TransientError classes ---------------------


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found)) if found else found


def test_every_retried_name_is_a_transient_error_class() -> None:
    # GIVEN the names the state machine retries WHEN looked up in icegate.errors
    # THEN each one is a TransientError
    for name in TRANSIENT_ERRORS:
        assert issubclass(getattr(errors, name), TransientError), name


def test_every_transient_error_class_is_retried_by_the_state_machine() -> None:
    # GIVEN every TransientError class defined
    names = {cls.__name__ for cls in _subclasses(TransientError) if cls.__module__ == errors.__name__}

    # THEN the state machine's list holds exactly those, so none is retried locally only
    assert names == set(TRANSIENT_ERRORS)


def test_a_transient_class_missing_from_the_retried_list_is_refused() -> None:
    # WHEN someone adds a transient error without listing it for the state machine
    # THEN the class cannot even be defined
    with pytest.raises(TypeError, match="TRANSIENT_ERRORS"):
        type("QueueThrottled", (TransientError,), {})


@pytest.mark.parametrize(
    ("raised", "attempts"),
    [
        (StorageUnavailable("throttled"), TRANSIENT_RETRIES + 1),
        (CatalogUnavailable("catalog down"), TRANSIENT_RETRIES + 1),
        (SchemaMismatch("likes missing"), 1),
        (OSError("AWS Error SLOW_DOWN during GetObject operation"), 1),
    ],
    ids=[
        "storage-unavailable-retried",
        "catalog-unavailable-retried",
        "terminal-not-retried",
        "unclassified-not-retried",
    ],
)
def test_the_local_runner_retries_exactly_the_listed_names(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, attempts: int
) -> None:
    """Unclassified errors are not retried by name: a stage turns them into a listed class first."""
    # GIVEN a call that always fails with `raised` (waits recorded, not slept)
    monkeypatch.setattr(pipeline.time, "sleep", lambda seconds: None)
    calls: list[int] = []

    def failing() -> Job:
        calls.append(1)
        raise raised

    # WHEN the local runner's retry runs it
    with pytest.raises(type(raised)):
        pipeline._with_retries(failing)

    # THEN it ran as often as the state machine would invoke it
    assert len(calls) == attempts


def test_the_stage_boundary_names_the_file_of_the_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # GIVEN a parse whose storage answers with pyarrow's throttling error
    settings = Settings(lake_root=str(tmp_path))
    source = SourceObject(bucket="", key=str(tmp_path / "post_results_1.csv"))

    def throttled(*args: object, **kwargs: object) -> None:
        raise OSError("AWS Error SLOW_DOWN during HeadObject operation: Please reduce your request rate.")

    storage = pipeline.Storage()
    monkeypatch.setattr(storage, "stat", throttled)

    # WHEN the parse stage runs
    # THEN it raises StorageUnavailable naming the file
    with pytest.raises(StorageUnavailable, match=r"post_results_1\.csv: S3 throttled"):
        pipeline.run_parse(Job(source=source, run_id="r1"), settings, storage)


def test_an_unforeseen_error_keeps_its_name_but_not_an_unbounded_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a parse whose storage fails with an unforeseen error quoting a megabyte of data
    settings = Settings(lake_root=str(tmp_path))
    source = SourceObject(bucket="", key=str(tmp_path / "post_results_1.csv"))

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("cannot convert " + "z" * 1_000_000)

    storage = pipeline.Storage()
    monkeypatch.setattr(storage, "stat", broken)

    # WHEN the parse stage runs
    # THEN the error keeps its class (the state machine's Error) with a message cut to a few kilobytes
    with pytest.raises(ValueError, match=r"more characters\)$") as raised:
        pipeline.run_parse(Job(source=source, run_id="r1"), settings, storage)
    assert len(str(raised.value)) < 5_000
