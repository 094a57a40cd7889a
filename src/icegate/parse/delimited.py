"""CSV and TSV: pyarrow's multi-threaded reader, every field a string, with the errors Python's csv hides.

Python's csv module silently accepts NUL bytes and swallows an unterminated quote into one field;
this reader refuses both, and names the line of a row with the wrong number of fields.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, NoReturn

import pyarrow as pa
import pyarrow.csv as pa_csv

from icegate.errors import EmptyFile, MalformedFile
from icegate.parse.limits import check_limits
from icegate.parse.origin import Origin
from icegate.parse.records import outside_quotes
from icegate.parse.text import line_at, to_utf8
from icegate.settings import Limits

#: The delimited formats and their delimiters.
DELIMITERS: Final[Mapping[str, str]] = {"csv": ",", "tsv": "\t"}
#: Big enough for pyarrow to parse ~175 MB on two cores in parallel, small enough to split the work.
_CSV_BLOCK_SIZE: Final = 4 * 1024 * 1024
#: The reader gives up listing rows with the wrong number of fields after this many.
MAX_INVALID_ROWS: Final = 100

#: A row with the wrong number of fields: the header's number, the row's, and its text as the reader read it.
InvalidRow = tuple[int, int, str]


class _InvalidRows:
    """``invalid_row_handler`` for pyarrow: skips blank lines, remembers rows of the wrong width.

    ``before``: such rows already found (in earlier blocks of a streamed file) count towards the limit.
    """

    def __init__(self, before: int = 0) -> None:
        self.before = before
        self.rows: list[InvalidRow] = []

    def __call__(self, row: Any) -> str:
        if not row.text.strip():
            return "skip"  # a line of spaces is a blank line too
        self.rows.append((row.expected_columns, row.actual_columns, row.text))
        return "error" if self.before + len(self.rows) >= MAX_INVALID_ROWS else "skip"


def decode_csv(
    data: bytes, file: str, *, limits: Limits, delimiter: str = ",", encoding: str | None = None
) -> pa.Table:
    """Every field of a delimited text file as a string, under the header row's names.

    Quoted fields may hold delimiters, doubled quotes and line breaks; blank lines are skipped;
    empty fields stay empty strings (:func:`map_columns` turns them into nulls).
    """
    return read_delimited(to_utf8(data, file, encoding), file, limits=limits, delimiter=delimiter)


def read_delimited(
    text: bytes,
    file: str,
    *,
    limits: Limits,
    delimiter: str = ",",
    origin: Origin | None = None,
    invalid: list[InvalidRow] | None = None,
) -> pa.Table:
    """:func:`decode_csv` of text that is already valid UTF-8 (what :func:`to_utf8` returns).

    For a block of a streamed file (its header plus some of its records): ``origin`` makes errors name
    the file's lines and rows, and the rows limit count the rows before the block too; ``invalid`` takes
    the rows with the wrong number of fields instead of refusing them, so that they are counted over all
    blocks as over a whole file. Once it holds any, the later checks are skipped (those rows are what
    the file is refused for) and the table holds the other rows (none once the reader gave up).
    """
    if not text or text.isspace():
        raise EmptyFile("the file is empty: no header row and no data", file=file)
    lines = origin.lines if origin else 0
    names = header_names(text, file, delimiter)
    if len(names) > limits.max_columns:
        raise MalformedFile(
            f"the header has {len(names):,} columns; the limit is {limits.max_columns:,} (ICEGATE_MAX_COLUMNS). "
            "Check the delimiter, or drop unused columns",
            file=file,
            location="line 1",
        )
    found = _InvalidRows(len(invalid) if invalid is not None else 0)
    table = _read_csv(text, file, delimiter, names, found)
    if invalid is not None and (found.rows or invalid):
        invalid.extend(found.rows)
        return table
    if found.rows:
        _raise_invalid_row(text, file, delimiter, found.rows, lines)
    _refuse_unclosed_quote(text, table, file, delimiter, lines)
    check_limits(table, file, limits, origin=origin)
    return table


def _parse_options(delimiter: str, handler: Callable[[Any], str]) -> Any:
    return pa_csv.ParseOptions(
        delimiter=delimiter,
        quote_char='"',
        double_quote=True,
        escape_char=False,
        newlines_in_values=True,
        ignore_empty_lines=True,
        invalid_row_handler=handler,
    )


def header_names(text: bytes, file: str, delimiter: str) -> list[str]:
    """The header row's names as pyarrow will read them (duplicates kept), from the first block only."""
    block = 1 << 20
    while True:
        try:
            reader = pa_csv.open_csv(
                pa.BufferReader(text),
                read_options=pa_csv.ReadOptions(block_size=block, use_threads=False),
                parse_options=_parse_options(delimiter, lambda row: "skip"),
                convert_options=pa_csv.ConvertOptions(check_utf8=False),
            )
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc) and block < len(text):
                block *= 4
                continue
            raise _csv_error(exc, text, file) from None
        names: list[str] = reader.schema.names
        reader.close()
        return names


def _read_csv(text: bytes, file: str, delimiter: str, names: list[str], invalid: _InvalidRows) -> pa.Table:
    convert = pa_csv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        check_utf8=False,  # to_utf8 validated the whole file; fields are cut at ASCII bytes
    )
    block = _CSV_BLOCK_SIZE
    while True:
        try:
            return pa_csv.read_csv(
                pa.BufferReader(text),
                read_options=pa_csv.ReadOptions(block_size=block, use_threads=True),
                parse_options=_parse_options(delimiter, invalid),
                convert_options=convert,
            )
        except pa.ArrowInvalid as exc:
            if invalid.rows or invalid.before:
                return pa.table({})  # reported by the caller, with the line
            # A row longer than a block: read the file as one block (serial, still correct).
            if "straddl" in str(exc) and block <= len(text):
                block = len(text) + 1
                continue
            raise _csv_error(exc, text, file) from None


def _csv_error(exc: Exception, text: bytes, file: str) -> MalformedFile:
    message = str(exc)
    if "Empty CSV file" in message:  # the text is not blank, yet pyarrow found no complete row
        quote = text.find(b'"')
        return unclosed_header(file, line_at(text, quote) if quote >= 0 else None)
    return MalformedFile(f"the file cannot be read as delimited text: {message}", file=file)


def unclosed_header(file: str, line: int | None) -> MalformedFile:
    """The error for a header row that never ends: a quote in it (the file's first, on ``line``) never closes."""
    return MalformedFile(
        "no complete header row: a quoted value opened here is never closed; close the quote",
        file=file,
        location=f"line {line}" if line is not None else None,
    )


def _raise_invalid_row(text: bytes, file: str, delimiter: str, rows: list[InvalidRow], lines: int) -> NoReturn:
    (expected, actual, row_text), line = first_invalid_row(text, rows, delimiter)
    line = lines + line if line is not None else None
    raise invalid_row(expected, actual, row_text, file=file, delimiter=delimiter, line=line, count=len(rows))


def first_invalid_row(text: bytes, rows: list[InvalidRow], delimiter: str) -> tuple[InvalidRow, int | None]:
    """The first of ``rows`` in ``text``, and its line (None if its text is not found as whole lines).

    The reader's threads report rows out of order; the file's order is where their texts are. A text found
    inside a quoted value (a multi-line caption may hold a line like it) is not the row: where values are quoted
    is walked as the reader reads it, so a quote inside or at the end of an unquoted value (``5" tall``,
    ``14",``) is text. Should every place found be inside a quoted value, the first is taken.
    """
    places = [_places(text, row) for row in rows]
    spans = outside_quotes(text, delimiter, final=True)
    span = next(spans, None)
    first: tuple[int, InvalidRow] | None = None
    for at, row in heapq.merge(*places, key=lambda place: place[0]):  # in file order, each text read no further
        first = first or (at, row)
        while span is not None and span[1] < at:
            span = next(spans, None)
        # A span ends at a value's opening quote: a row may start with it.
        if span is not None and span[0] <= at <= span[1]:
            return row, line_at(text, at)
    if first is None:
        return rows[0], None
    return first[1], line_at(text, first[0])


def invalid_row(
    expected: int,
    actual: int,
    row_text: str,
    *,
    file: str,
    delimiter: str,
    line: int | None,
    count: int = 1,
    quoted: bool | None = None,
) -> MalformedFile:
    """The error for a row of ``actual`` fields under a header of ``expected`` (the first of ``count``).

    ``quoted``: whether the row holds a quote, when ``row_text`` is only its start (default: whether that does).
    """
    shown = "a tab" if delimiter == "\t" else repr(delimiter)
    hint = (
        f"a value that contains {shown} must be quoted"
        if actual > expected
        else "a field is missing, or a quote opened in this row is never closed"
        if ('"' in row_text if quoted is None else quoted)
        else "a field is missing"
    )
    more = f" ({count}{'+' if count >= MAX_INVALID_ROWS else ''} such rows)" if count > 1 else ""
    preview = row_text if len(row_text) <= 80 else row_text[:77] + "..."
    return MalformedFile(
        f"a row has {actual} fields but the header has {expected}{more}: {preview!r}; {hint}",
        file=file,
        location=f"line {line}" if line is not None else None,
    )


def _places(text: bytes, row: InvalidRow) -> Iterator[tuple[int, InvalidRow]]:
    """Where the row's text stands as whole lines of ``text``: byte offsets, in order."""
    needle = row[2].encode("utf-8")
    at = text.find(needle)
    while at >= 0:
        end = at + len(needle)
        starts_line = at == 0 or text[at - 1] in b"\r\n"
        ends_line = end == len(text) or text[end] in b"\r\n"
        if starts_line and ends_line:
            yield at, row
        at = text.find(needle, at + 1)


def _refuse_unclosed_quote(text: bytes, table: pa.Table, file: str, delimiter: str, lines: int) -> None:
    """pyarrow reads an unclosed quote in the last column to the end of the file without a word.

    Then, and only then, the file ends with the opening quote plus the (re-escaped) last value,
    and that quote starts the last field: after a delimiter (after a line break, or at the start, when
    the last field is a record's only one). A closed value can end the file the same way — ``"\\n"`` and
    its record's line feed end with a quote and a line feed — but its quote then follows the value's own
    line break, not a delimiter. (A one-column file has no delimiter to tell the two apart: there, a
    quote after a line break is taken to open the value.)
    """
    if table.num_rows == 0 or table.num_columns == 0:
        return
    last = table.column(table.num_columns - 1)[-1].as_py()
    tail = b'"' + last.replace('"', '""').encode("utf-8")
    if not text.endswith(tail):
        return
    opening = len(text) - len(tail)
    if table.num_columns > 1:
        opens_field = opening > 0 and text[opening - 1 : opening] == delimiter.encode()
    else:
        opens_field = opening == 0 or text[opening - 1] in b"\r\n"
    if opens_field:
        raise unclosed_quote(file, lines + line_at(text, opening))


def unclosed_quote(file: str, line: int) -> MalformedFile:
    """The error for a quoted value in the last column that is never closed, opened on ``line``."""
    return MalformedFile(
        "a quoted value opened here is never closed, so the rest of the file was read into it; "
        'close the quote (a quote inside a quoted value is written twice: "")',
        file=file,
        location=f"line {line}",
    )
