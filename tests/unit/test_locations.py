"""error.json's ``line``/``row``/``column`` fields, read from the location every error states."""

from __future__ import annotations

import pytest

from icegate.errors import MalformedFile
from icegate.locations import parse_location


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("line 12", {"line": 12, "row": None, "column": None}),
        ("line 3, column 7", {"line": 3, "row": None, "column": 7}),
        ("row 5, column 'caption'", {"line": None, "row": 5, "column": "caption"}),
        ("row 9, column B", {"line": None, "row": 9, "column": "B"}),
        ("column 'likes'", {"line": None, "row": None, "column": "likes"}),
        ("header", {"line": None, "row": None, "column": None}),
        (None, {"line": None, "row": None, "column": None}),
    ],
)
def test_a_location_reads_as_fields(location: str | None, expected: dict[str, object]) -> None:
    assert parse_location(location) == expected


def test_the_fields_come_from_the_message_as_the_lambda_runtime_passes_it_on() -> None:
    # GIVEN an error as a parser raises it, whose message is all the cloud's Catch keeps
    error = MalformedFile("invalid JSON: Expecting ':' delimiter", file="s3://b/post_results_1.ndjson",
                          location="line 40, column 3")  # fmt: skip

    # THEN the message alone gives the line and column
    assert parse_location(str(error)) == {"line": 40, "row": None, "column": 3}
