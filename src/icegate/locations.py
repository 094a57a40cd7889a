"""Where in a file an error is, as fields: ``line``, ``row`` and ``column`` for ``error.json``.

Errors state their place as text (``IcegateError.location``: "line 12", "line 3, column 7",
"row 5, column 'caption'", "column 'likes'"), which then travels inside the message — in the cloud
the Lambda runtime keeps only the message, so the fields are read back from the text in both places.
``line`` is a physical line of the file (1-based); ``row`` a data row (a spreadsheet's row, or the
n-th record after the header); ``column`` a 1-based character column (JSON), a spreadsheet's column
letter, or a column name.
"""

from __future__ import annotations

import re
from typing import TypedDict

# A location is stated as "<file>, <location>: <message>" (errors.IcegateError) or alone.
_NAME = r"""\d+|[A-Z]{1,3}\b|'[^']*'|"[^"]*\""""
_NUMBERED = re.compile(rf"\b(?P<kind>line|row) (?P<number>\d+)(?:, column (?P<column>{_NAME}))?")
_COLUMN = re.compile(r"\bcolumn (?P<column>'[^']*'|\"[^\"]*\")")


class Location(TypedDict):
    line: int | None
    row: int | None
    column: int | str | None


def parse_location(text: str | None) -> Location:
    """The line, row and column a location (or a message that starts with one) names; None where it names none."""
    found: Location = {"line": None, "row": None, "column": None}
    if not text:
        return found
    column: str | None = None
    if match := _NUMBERED.search(text):
        found["line" if match["kind"] == "line" else "row"] = int(match["number"])
        column = match["column"]
    elif match := _COLUMN.search(text):
        column = match["column"]
    if column is not None:
        quoted = column[:1] in ("'", '"')
        found["column"] = int(column) if column.isdigit() else column[1:-1] if quoted else column
    return found
