"""The error taxonomy.

Class names are part of the interface: the state machine matches them in ``ErrorEquals``.
``TerminalError`` subclasses go straight to the dead-letter path; ``TransientError`` subclasses are
retried with backoff first. Every message says what was wrong, where, and what to do about it.
"""

from __future__ import annotations

from typing import Any

from icegate.constants import TRANSIENT_ERRORS
from icegate.payloads import bounded_text


class IcegateError(Exception):
    """Base of every error the pipeline raises on purpose."""

    #: True when retrying the same input may succeed.
    transient = False

    def __init__(self, message: str, *, file: str | None = None, location: str | None = None) -> None:
        self.file = file
        self.location = location
        where = ", ".join(part for part in (file, location) if part)
        # The message travels in the state machine's payload (the Catch's Cause): never unbounded.
        super().__init__(bounded_text(f"{where}: {message}" if where else message))

    @property
    def error_type(self) -> str:
        return type(self).__name__


class TerminalError(IcegateError):
    """The input itself is wrong: retrying cannot help, the file goes to the dead-letter prefix."""


class TransientError(IcegateError):
    """A passing condition (conflict, throttling): the same input may succeed when retried."""

    transient = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The state machine retries by name (constants.TRANSIENT_ERRORS, all cdk/ may import): a transient
        # class it does not list would be dead-lettered in the cloud while retried locally.
        super().__init_subclass__(**kwargs)
        if cls.__name__ not in TRANSIENT_ERRORS:
            raise TypeError(f"{cls.__name__} is transient but not in icegate.constants.TRANSIENT_ERRORS")


class UnknownDataset(TerminalError):
    """The file name matches no dataset contract."""


class UnsupportedFormat(TerminalError):
    """The file's format is not one the parser reads."""


class EmptyFile(TerminalError):
    """The file holds no data rows."""


class FileTooLarge(TerminalError):
    """The file exceeds a size limit (bytes, uncompressed bytes, rows)."""


class MalformedFile(TerminalError):
    """The file cannot be decoded: bad syntax, encoding, NUL bytes, too many columns, overlong fields."""


class SchemaMismatch(TerminalError):
    """The header does not fit the dataset contract (missing required or colliding columns)."""


class UnsafeSchemaChange(TerminalError):
    """The table's schema and the contract differ in a way a load must not apply (a narrowed or
    changed type, a changed, renamed or dropped key column)."""


class QualityGateFailed(TerminalError):
    """The quality score is under the dataset's threshold (or a dimension under its floor)."""


class NoValidRows(TerminalError):
    """The schema rejected every row of the file: there is nothing to load, whatever the score."""


class CommitConflict(TransientError):
    """Another writer kept committing to the table; the loader gave up after bounded retries."""


class StorageUnavailable(TransientError):
    """Object storage throttled or failed in a way that is worth retrying."""


class CatalogUnavailable(TransientError):
    """The Iceberg catalog is throttled, busy, unreachable or unreadable: not the file's fault, retried."""


class SourceNotFound(TerminalError):
    """The object named by the event no longer exists (deleted, or a version that is gone)."""


def error_types() -> tuple[str, ...]:
    """The names of the error classes above, terminal then transient: what a DLQ entry's ``error_type`` is when
    icegate raised it (others come from the runtime: a Lambda throttled, a bug)."""
    return tuple(
        error.__name__
        for kind in (TerminalError, TransientError)
        for error in kind.__subclasses__()
        if error.__module__ == __name__  # not a subclass another module (or a test) makes for itself
    )
