"""Which errors of the libraries underneath are passing conditions, as AWS and the catalogs really raise them.

A stage that meets one re-raises it as an :mod:`icegate.errors` ``TransientError`` (``StorageUnavailable``,
``CatalogUnavailable``), whose class name the state machine retries and the local runner retries the same
way. Anything not recognised here stays what it was: the Catch sends the file to the dead-letter prefix.
Classification is by the exceptions' own attributes (error codes, class names): botocore, SQLAlchemy,
requests and pyiceberg's REST client are imported by the catalogs, never here.
"""

from __future__ import annotations

import re
from typing import Any

from icegate.errors import CatalogUnavailable, IcegateError, StorageUnavailable, TransientError

#: S3 error codes (botocore ``ClientError``) that mean "slow down or try again".
S3_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable", "InternalError", "503"}
)
#: Glue error codes that mean "busy, try again": throttling, and a concurrent update of the same table or
#: database outside pyiceberg's commit (which already turns it into a retried commit conflict).
CATALOG_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "ConcurrentModificationException",
        "InternalServiceException",
        "OperationTimeoutException",
        "ResourceNotReadyException",
        "ServiceUnavailableException",
    }
)
#: What botocore's own retry (standard mode, ``botocore.retries.standard``) treats as throttled or transient,
#: for any AWS service. Such an error reaching us means botocore's few quick retries ran out while the service
#: was still busy — exactly a burst's condition, which the longer Retry of the state machine then rides out.
_BOTOCORE_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: HTTP statuses botocore retries whatever the error code (a gateway's 502/504 has no AWS code: botocore then
#: names the error by its status), and 429, the generic "too many requests".
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
#: A ``ClientError`` of these operations is the Glue catalog's (S3's are GetObject, PutObject, ...).
_CATALOG_OPERATION = re.compile(r"(?:Table|Database|Partition)s?$")
#: pyarrow's S3 filesystem does not use botocore: its errors are ``OSError`` with the AWS SDK's error type
#: in the text, ``AWS Error SLOW_DOWN during GetObject operation: ...`` (arrow/filesystem/s3_internal.h),
#: or ``AWS Error UNKNOWN (HTTP status 503) ...`` when the SDK has no name for it.
_ARROW_S3_TRANSIENT = re.compile(
    r"AWS Error (?:SLOW_DOWN|THROTTLING|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|REQUEST_TIMEOUT|NETWORK_CONNECTION)\b"
    r"|AWS Error UNKNOWN \(HTTP status (?:429|5\d\d)\)"
)
#: A table's metadata file, as pyarrow names one it cannot open: the catalog points at a file that is gone.
_TABLE_METADATA = re.compile(r"\.metadata\.json\b")
#: Why that happens, and what to do: not the file's fault, never a bad file.
MISSING_TABLE_METADATA = (
    "the catalog names a table metadata file that does not exist: a local lake's catalog keeps absolute paths, "
    "so a lake folder moved or renamed must be moved back (else the file was deleted, or maintenance raced)"
)
#: botocore's exceptions for an endpoint it could not reach or that did not answer in time.
_BOTOCORE_CONNECTION = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        # A long streamed read cut short.
        "ResponseStreamingError",
        "IncompleteReadError",
    }
)
#: SQLAlchemy's errors for a catalog database that is down, unreachable, locked or unreadable. A plain
#: ``DatabaseError`` is what a corrupt SQLite file raises ("file is not a database"); its subclasses that
#: mean a wrong statement or value (IntegrityError, ProgrammingError, DataError) are not in this set.
_SQL_UNAVAILABLE = frozenset({"OperationalError", "InterfaceError", "DatabaseError"})
#: requests' errors when a REST catalog cannot be reached.
_HTTP_CONNECTION = frozenset({"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout"})
#: pyiceberg's REST catalog errors for HTTP 503, 5xx and 429.
_REST_UNAVAILABLE = frozenset({"ServiceUnavailableError", "ServerError", "TooManyRequestsError"})


def as_transient(exc: BaseException, *, file: str | None = None) -> TransientError | None:
    """The ``TransientError`` that ``exc`` really is, or ``None`` when retrying cannot be expected to help."""
    if isinstance(exc, IcegateError):
        return None
    name = type(exc).__name__
    module = type(exc).__module__
    detail = f"{name}: {exc}"
    code = _client_error_code(exc)
    if code is not None:
        retryable = code in _BOTOCORE_RETRYABLE_CODES or _http_status(exc) in _RETRYABLE_STATUS
        if _CATALOG_OPERATION.search(str(getattr(exc, "operation_name", ""))):
            if code in CATALOG_TRANSIENT_CODES or retryable:
                return CatalogUnavailable(f"the catalog is busy or throttled ({detail}); retry later", file=file)
            return None
        if code in S3_TRANSIENT_CODES or retryable:
            return StorageUnavailable(f"S3 throttled or failed ({detail}); retry later", file=file)
        return None
    if module.startswith("botocore") and name in _BOTOCORE_CONNECTION:
        if "glue." in str(exc):
            return CatalogUnavailable(f"the catalog cannot be reached ({detail}); retry later", file=file)
        return StorageUnavailable(f"object storage cannot be reached ({detail}); retry later", file=file)
    if module.startswith("sqlalchemy") and name in _SQL_UNAVAILABLE:
        return CatalogUnavailable(
            f"the SQL catalog is unavailable or unreadable ({detail}); the file is not at fault — check the "
            "catalog database, the load is retried",
            file=file,
        )
    if (module.startswith("requests") and name in _HTTP_CONNECTION) or (
        module.startswith("pyiceberg") and name in _REST_UNAVAILABLE
    ):
        return CatalogUnavailable(f"the catalog cannot be reached ({detail}); retry later", file=file)
    if isinstance(exc, OSError) and _ARROW_S3_TRANSIENT.search(str(exc)):
        return StorageUnavailable(f"S3 throttled or failed ({detail}); retry later", file=file)
    if isinstance(exc, FileNotFoundError) and _TABLE_METADATA.search(str(exc)):
        return CatalogUnavailable(f"{MISSING_TABLE_METADATA} ({detail})", file=file)
    return None


def _client_error_code(exc: BaseException) -> str | None:
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict) or not isinstance(response.get("Error"), dict):
        return None
    return str(response["Error"].get("Code", ""))


def _http_status(exc: BaseException) -> int | None:
    response: Any = getattr(exc, "response", None)
    metadata = response.get("ResponseMetadata") if isinstance(response, dict) else None
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, dict) else None
    return status if isinstance(status, int) else None
