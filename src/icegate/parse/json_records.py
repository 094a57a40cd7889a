"""JSON and NDJSON: an array of objects, one object, or one object per line; numbers keep their source text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from icegate.errors import EmptyFile, MalformedFile
from icegate.parse.headers import KEY_PLACES
from icegate.parse.limits import limited_table, too_many_rows
from icegate.parse.text import to_utf8
from icegate.settings import Limits


class _JsonNumber(str):
    """A JSON number kept as its source text (``1.50`` stays ``1.50``; big integers stay exact)."""

    __slots__ = ()


class _RepeatedKey(Exception):
    """An object holds one key twice (raised by the decoder; the caller says which record)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A plain dict keeps a repeated key's last value and loses the first without a word (as a CSV file
    # with a header twice would lose a column): such a record is refused instead.
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return record


_JSON = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_JsonNumber
)
#: Reads an object that repeats a key, only to find where it ends.
_ANY_KEYS = json.JSONDecoder(parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_JsonNumber)
#: What JSON counts as whitespace between values.
_BLANK = re.compile(r"[ \t\n\r]*")


def decode_json(
    data: bytes, file: str, *, limits: Limits, encoding: str | None = None, lines: bool = False
) -> tuple[pa.Table, str]:
    """Records from a JSON array of objects, one JSON object, or NDJSON (one object per line).

    Returns the table and the format found (``json`` or ``ndjson``). The header is the union of
    the keys in first-seen order; numbers keep their JSON text, booleans read ``true``/``false``,
    nested values are JSON text.
    """
    text = to_utf8(data, file, encoding).decode("utf-8")
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise EmptyFile("the file is empty", file=file)
    if not lines and text[start] == "[":
        records = _json_document(text, file)
        if not isinstance(records, list):  # pragma: no cover - a document starting with "[" is a list
            records = [records]
        return _records_table(_numbered(records), file, limits), "json"
    if not lines:
        try:
            first, end = _json_value(text, start, file)
        except _RepeatedKey as exc:
            # The document's one object, or an NDJSON file's first line (which the NDJSON reader names).
            try:
                end = _ANY_KEYS.raw_decode(text, start)[1]
            except json.JSONDecodeError as syntax:  # refused for its syntax, after the repeat
                raise _json_error(syntax, file) from None
            except RecursionError:
                raise _too_deep(file) from None
            if not text[end:].strip():
                raise _repeated_key(exc.key, "this record", file, location="row 1") from None
        else:
            if not text[end:].strip():
                return _records_table(_numbered([first]), file, limits), "json"
    return _records_table(_ndjson_records(text, file), file, limits), "ndjson"


def _json_document(text: str, file: str) -> Any:
    try:
        return _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc, file) from None
    except RecursionError:
        raise _too_deep(file) from None
    except _RepeatedKey as exc:
        raise _repeated_in_array(text, exc.key, file) from None


def _json_value(text: str, start: int, file: str) -> tuple[Any, int]:
    try:
        value, end = _JSON.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise _json_error(exc, file) from None
    except RecursionError:
        raise _too_deep(file) from None
    return value, end


def _too_deep(file: str, where: str | None = None) -> MalformedFile:
    """Arrays and objects nested deeper than the reader's recursion allows (no scraped record nests so)."""
    return MalformedFile(
        "JSON nested too deep to read (arrays or objects inside each other, hundreds of levels); a record's "
        "values should be flat, or nest a few levels",
        file=file,
        location=where,
    )


def _json_error(exc: json.JSONDecodeError, file: str, line: int | None = None) -> MalformedFile:
    where = f"line {line or exc.lineno}, column {exc.colno}"
    return MalformedFile(f"invalid JSON: {exc.msg}; fix the syntax there", file=file, location=where)


def _repeated_key(key: str, record: str, file: str, *, location: str) -> MalformedFile:
    return MalformedFile(
        f"the key {key!r} appears twice in one object of {record}; a JSON reader keeps one of the values and "
        "loses the other: remove or rename one of them",
        file=file,
        location=location,
    )


def _repeated_in_array(text: str, key: str, file: str) -> MalformedFile:
    """The error naming the array's record that repeats ``key``: found by reading the records one by one again.

    Only a refused file pays for this second read; every value before the repeat is valid JSON.
    """
    position = _after_blank(text, 0) + 1  # past "["
    row = 0
    while True:
        position = _after_blank(text, position)
        row += 1
        try:
            _, end = _JSON.raw_decode(text, position)
        except _RepeatedKey:
            line = text.count("\n", 0, position) + 1
            return _repeated_key(key, f"this record (it starts on line {line})", file, location=f"row {row}")
        except (json.JSONDecodeError, RecursionError):  # pragma: no cover - the whole document decoded up to it
            return _repeated_key(key, "this record", file, location=f"row {row}")
        position = _after_blank(text, end) + 1  # past ","


def _after_blank(text: str, position: int) -> int:
    match = _BLANK.match(text, position)
    return match.end() if match else position


def _numbered(records: list[Any]) -> Iterator[tuple[str, int | None, Any]]:
    """Each record with its place: the n-th object of the array (or the document's one), as a row; no line."""
    for index, record in enumerate(records, start=1):
        yield f"row {index}", None, record


def _ndjson_records(text: str, file: str) -> Iterator[tuple[str, int | None, Any]]:
    # Split on "\n" only: U+2028 and friends may sit unescaped inside JSON strings.
    row = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        row += 1
        try:
            value, end = _JSON.raw_decode(line, len(line) - len(line.lstrip()))
        except json.JSONDecodeError as exc:
            raise _json_error(exc, file, line=number) from None
        except RecursionError:
            raise _too_deep(file, f"line {number}") from None
        except _RepeatedKey as exc:
            raise _repeated_key(exc.key, f"row {row}", file, location=f"line {number}") from None
        if line[end:].strip():
            raise MalformedFile(
                "more than one JSON value on this line; NDJSON holds one object per line",
                file=file,
                location=f"line {number}, column {end + 1}",
            )
        yield f"line {number}", number, value


def _records_table(records: Iterable[tuple[str, int | None, Any]], file: str, limits: Limits) -> pa.Table:
    columns: dict[str, list[str | None]] = {}
    first_seen: list[tuple[int, int | None]] = []  # each key's first record: its row and (NDJSON) line
    for index, (where, line, record) in enumerate(records):
        if not isinstance(record, dict):
            kind = "an array" if isinstance(record, list) else "a value" if record is not None else "null"
            raise MalformedFile(f"expected a JSON object (one record) but found {kind}", file=file, location=where)
        if index >= limits.max_rows:
            raise too_many_rows(file, limits)
        for key, value in record.items():
            column = columns.get(key)
            if column is None:
                if len(columns) >= limits.max_columns:
                    raise MalformedFile(
                        f"the records have more than {limits.max_columns:,} distinct keys (ICEGATE_MAX_COLUMNS)",
                        file=file,
                        location=where,
                    )
                column = columns[key] = [None] * index
                first_seen.append((index + 1, line))
            try:
                column.append(_json_text(value))
            except RecursionError:
                raise _too_deep(file, where) from None
        for column in columns.values():
            if len(column) == index:  # the record lacks this key
                column.append(None)
    table = limited_table(list(columns), list(columns.values()), file, limits)
    return table.replace_schema_metadata({KEY_PLACES: json.dumps(first_seen).encode()})


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)  # also turns a _JsonNumber into a plain str
    return _json_dumps(value)


def _json_dumps(value: Any) -> str:
    """``json.dumps`` that writes numbers back as their source text."""
    if isinstance(value, _JsonNumber):
        return str(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}: {_json_dumps(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)
