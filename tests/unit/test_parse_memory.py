"""The parser's size limits weigh each format by the memory it decodes into (icegate.sizing)."""

from __future__ import annotations

import gzip
import json

import pytest

from icegate.constants import PARSE
from icegate.datasets import get_dataset
from icegate.errors import FileTooLarge
from icegate.parse import parse_bytes
from icegate.settings import Limits
from icegate.sizing import PARSE_FORMAT_PROFILES, STAGE_PROFILES, format_weight

POSTS = get_dataset("posts")
ROWS = [
    {
        "Search Term": "best pizza nyc",
        "Post ID": f"P{n:09d}",
        "Creator": f"creator_{n}",
        "Posted Date": "2026-01-10",
        "Likes": str(n * 7),
        "Comments": str(n),
        "Caption": "Fresh out of the oven",
        "Post URL": f"https://www.instagram.com/p/P{n:09d}/",
        "Status": "success",
    }
    for n in range(40)
]
NDJSON = "".join(json.dumps(row) + "\n" for row in ROWS).encode()
JSON = json.dumps(ROWS).encode()
CSV = (",".join(ROWS[0]) + "\n" + "".join(",".join(row.values()) + "\n" for row in ROWS)).encode()


def _limit_between(plain: int, weighed: float) -> Limits:
    """Limits that a file of ``plain`` bytes passes unweighed but not weighed."""
    limit = (plain + int(plain * weighed)) // 2
    return Limits(max_bytes=limit, max_uncompressed_bytes=limit)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("post_results_1.ndjson", NDJSON, id="ndjson"),
        pytest.param("post_results_1.json", JSON, id="json-array"),
        pytest.param("post_results_1.ndjson.gz", gzip.compress(NDJSON), id="gzip-ndjson-by-decoded-size"),
    ],
)
def test_json_counts_its_extra_memory_against_the_limit(name: str, data: bytes) -> None:
    # GIVEN JSON that is under the byte limit, but would take more memory than a CSV of the limit
    decoded = len(gzip.decompress(data)) if name.endswith(".gz") else len(data)
    weight = format_weight("ndjson" if "ndjson" in name else "json")
    limits = _limit_between(decoded, weight)
    assert len(data) <= limits.max_bytes
    # WHEN it is parsed
    with pytest.raises(FileTooLarge) as caught:
        parse_bytes(data, name, POSTS, limits=limits)
    # THEN it is refused before decoding, saying why and what its own limit is
    message = str(caught.value)
    assert name in message
    assert "times the memory of CSV" in message
    assert f"{int(limits.max_uncompressed_bytes / weight):,} bytes" in message


def test_csv_of_the_same_size_is_not_weighed() -> None:
    # GIVEN a CSV under the same kind of limit
    limits = _limit_between(len(CSV), format_weight("json"))
    # WHEN it is parsed
    parsed = parse_bytes(CSV, "post_results_1.csv", POSTS, limits=limits)
    # THEN it loads, every row
    assert parsed.table.num_rows == len(ROWS)


def test_json_weight_keeps_the_parser_under_the_peak_of_csv_at_the_full_limit() -> None:
    # GIVEN the measured lines of the parser (CSV, and each JSON flavour)
    csv = STAGE_PROFILES[PARSE]
    for fmt, profile in PARSE_FORMAT_PROFILES.items():
        # WHEN a file of this format is as large as its weighed limit allows
        limit = 300_000_000
        largest = int(limit / format_weight(fmt))
        # THEN the parser's predicted peak is no higher than for a CSV at the full limit
        assert profile.peak_mib(largest) <= csv.peak_mib(limit), fmt
    assert format_weight("csv") == format_weight("xlsx") == format_weight("parquet") == 1.0
