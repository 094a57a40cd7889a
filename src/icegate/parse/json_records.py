"""JSON and NDJSON: an array of objects, one object, or one object per line; numbers keep their source text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from icegate.errors import EmptyFile, MalformedFile
from icegate.parse.limits import limited_table, too_many_rows
from icegate.parse.text import to_utf8
from icegate.settings import Limits


class _JsonNumber(str):
    """A JSON number kept as its source text (``1.50`` stays ``1.50``; big integers stay exact)."""

    __slots__ = ()


_JSON = json.JSONDecoder(parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_JsonNumber)


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
        first, end = _json_value(text, start, file)
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


def _numbered(records: list[Any]) -> Iterator[tuple[str, Any]]:
    """Each record with its place: the n-th object of the array (or the document's one), as a row."""
    for index, record in enumerate(records, start=1):
        yield f"row {index}", record


def _ndjson_records(text: str, file: str) -> Iterator[tuple[str, Any]]:
    # Split on "\n" only: U+2028 and friends may sit unescaped inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value, end = _JSON.raw_decode(line, len(line) - len(line.lstrip()))
        except json.JSONDecodeError as exc:
            raise _json_error(exc, file, line=number) from None
        except RecursionError:
            raise _too_deep(file, f"line {number}") from None
        if line[end:].strip():
            raise MalformedFile(
                "more than one JSON value on this line; NDJSON holds one object per line",
                file=file,
                location=f"line {number}, column {end + 1}",
            )
        yield f"line {number}", value


def _records_table(records: Iterable[tuple[str, Any]], file: str, limits: Limits) -> pa.Table:
    columns: dict[str, list[str | None]] = {}
    for index, (where, record) in enumerate(records):
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
            try:
                column.append(_json_text(value))
            except RecursionError:
                raise _too_deep(file, where) from None
        for column in columns.values():
            if len(column) == index:  # the record lacks this key
                column.append(None)
    return limited_table(list(columns), list(columns.values()), file, limits)


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
