"""Payloads between stages: JSON round trips, tolerant decoding, and the 256 KB state budget."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from icegate.datasets import get_dataset
from icegate.errors import SchemaMismatch
from icegate.payloads import (
    MAX_ITEM_CHARS,
    MAX_LIST_ITEMS,
    MAX_MESSAGE_CHARS,
    DeadLettered,
    ErrorInfo,
    Job,
    Loaded,
    LoadSummary,
    Parsed,
    Payload,
    QualitySummary,
    Scored,
    SourceObject,
    Validated,
    bounded_list,
    bounded_text,
)
from icegate.validate import validate_table

#: Step Functions refuses a state larger than this.
STATE_LIMIT_BYTES = 256 * 1024

SOURCE = SourceObject(
    bucket="landing", key="in/post_results_20260113_175319.csv", version_id="v1", etag='"e1"', size=42
)
QUALITY = QualitySummary(
    score=81.5,
    threshold=70.0,
    passed=True,
    dimensions={"completeness": 0.9, "validity": 1.0},
    report_uri="s3://lake/processing/run-1/quality.json",
)
LOAD = LoadSummary(
    table="instagram_db.posts",
    strategy="insert_new",
    inserted=10,
    updated=0,
    skipped=2,
    duplicates_in_file=1,
    snapshot_id=1234567890123456789,
)
PARSED_FIELDS: dict[str, Any] = {
    "dataset": "posts",
    "format": "csv",
    "sha256": "ab" * 32,
    "uploaded_at": "2026-01-14T08:00:00+00:00",
    "rows": 13,
    "columns": ["post_id", "creator"],
    "ignored_columns": ["extra"],
    "parsed_uri": "s3://lake/processing/run-1/parsed.parquet",
}
VALIDATED_FIELDS: dict[str, Any] = {
    **PARSED_FIELDS,
    "valid_uri": "s3://lake/processing/run-1/valid.parquet",
    "rejected_uri": "s3://lake/dlq/posts/run-1/rejected.parquet",
    "rows_valid": 12,
    "rows_rejected": 1,
    "failed_checks": {"likes:type(long)": 1},
}


def _through_json(payload: Payload) -> dict[str, Any]:
    """What the next state receives: the payload serialised by Step Functions and read back."""
    document: dict[str, Any] = json.loads(json.dumps(payload.to_dict()))
    return document


@pytest.mark.parametrize(
    "payload",
    [
        SOURCE,
        SourceObject(bucket="", key="/tmp/post_results_1.csv"),
        Job(source=SOURCE, run_id="run-1"),
        Parsed(source=SOURCE, run_id="run-1", **PARSED_FIELDS),
        Validated(source=SOURCE, run_id="run-1", **VALIDATED_FIELDS),
        Scored(source=SOURCE, run_id="run-1", **VALIDATED_FIELDS, quality=QUALITY),
        Scored(source=SOURCE, run_id="run-1", **VALIDATED_FIELDS, quality=None),
        Loaded(source=SOURCE, run_id="run-1", **VALIDATED_FIELDS, quality=QUALITY, load=LOAD),
        Loaded(source=SOURCE, run_id="run-1", quality=QUALITY, load=LoadSummary("t", "append", 1, 0, 0, 0, None, True)),
        ErrorInfo(Error="QualityGateFailed", Cause='{"errorMessage": "score 40 < threshold 70"}'),
        DeadLettered("run-1", "posts", "score", "QualityGateFailed", "too low", "s3://l/dlq/x.csv", "s3://l/e.json"),
    ],
    ids=[
        "source",
        "local-source",
        "job",
        "parsed",
        "validated",
        "scored",
        "scored-without-quality",
        "loaded",
        "loaded-already",
        "error-info",
        "dead-lettered",
    ],
)
def test_payload_survives_a_json_round_trip(payload: Payload) -> None:
    # GIVEN a payload WHEN it goes through JSON and back
    restored = type(payload).from_dict(_through_json(payload))

    # THEN it is equal, nested payloads included, and typed again
    assert restored == payload
    for name in ("source", "quality", "load"):
        nested = getattr(payload, name, None)
        if nested is not None:
            assert type(getattr(restored, name)) is type(nested)


def test_nested_payloads_are_plain_objects_in_json() -> None:
    document = _through_json(Loaded(source=SOURCE, run_id="r", quality=QUALITY, load=LOAD))

    assert document["source"]["key"] == SOURCE.key
    assert document["quality"]["dimensions"] == {"completeness": 0.9, "validity": 1.0}
    assert document["load"]["snapshot_id"] == 1234567890123456789


def test_unknown_keys_are_ignored_so_states_may_grow() -> None:
    # GIVEN a state carrying more than a Job knows about (a later stage's output, Step Functions' error)
    document = {
        **_through_json(Loaded(source=SOURCE, run_id="run-1", quality=QUALITY, load=LOAD)),
        "error": {"Error": "States.TaskFailed", "Cause": "boom"},
    }
    document["source"] = {**document["source"], "region": "eu-west-1"}

    # WHEN read as an earlier payload
    job = Job.from_dict(document)

    # THEN only the known fields are taken
    assert job == Job(source=SOURCE, run_id="run-1")


def test_missing_optional_fields_take_their_defaults() -> None:
    parsed = Parsed.from_dict({"source": {"bucket": "b", "key": "k.csv"}, "run_id": "r"})

    assert parsed.source == SourceObject(bucket="b", key="k.csv")
    assert parsed.rows == 0
    assert parsed.columns == []


def test_missing_required_field_is_an_error() -> None:
    with pytest.raises(TypeError):
        Job.from_dict({"source": {"bucket": "b", "key": "k"}})


def test_extending_a_payload_keeps_every_earlier_field() -> None:
    """Each stage returns its input extended: a Loaded state still holds what Parse wrote."""
    validated = Validated(source=SOURCE, run_id="run-1", **VALIDATED_FIELDS)

    loaded = Loaded.from_dict({**validated.to_dict(), "quality": QUALITY.to_dict(), "load": LOAD.to_dict()})

    assert Validated.from_dict(loaded.to_dict()) == validated
    assert loaded.load == LOAD


# --- SourceObject ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "uri", "name"),
    [
        (
            SourceObject("landing", "a/b/post_results_1.csv"),
            "s3://landing/a/b/post_results_1.csv",
            "post_results_1.csv",
        ),
        (SourceObject("", "/data/in/post_results_1.csv"), "/data/in/post_results_1.csv", "post_results_1.csv"),
        (
            SourceObject("", "relative/instagram_results_2.csv"),
            "relative/instagram_results_2.csv",
            "instagram_results_2.csv",
        ),
    ],
    ids=["s3", "local-absolute", "local-relative"],
)
def test_source_uri_and_name(source: SourceObject, uri: str, name: str) -> None:
    assert source.uri == uri
    assert source.name == name


@pytest.mark.parametrize(
    ("version_id", "etag", "version"),
    [
        (
            "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
            '"9b2cf535f27731c974343645a3985328"',
            "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
        ),
        (None, '"9b2cf535f27731c974343645a3985328"', "9b2cf535f27731c974343645a3985328"),
        (None, "9b2cf535f27731c974343645a3985328-2", "9b2cf535f27731c974343645a3985328-2"),
        (None, None, None),
    ],
    ids=["version-id-wins", "quoted-etag", "bare-multipart-etag", "neither"],
)
def test_source_version_prefers_the_version_id_then_the_unquoted_etag(
    version_id: str | None, etag: str | None, version: str | None
) -> None:
    assert SourceObject("b", "k", version_id=version_id, etag=etag).version == version


def test_the_null_version_of_a_suspended_bucket_names_no_upload() -> None:
    # GIVEN an event from a bucket whose versioning is suspended: every upload of the key has version "null"
    source = SourceObject("b", "k", version_id="null", etag='"9b2cf535f27731c974343645a3985328"')

    # THEN the upload is named by its ETag, as in an unversioned bucket, never by the shared "null"
    assert source.version_id is None
    assert source.version == "9b2cf535f27731c974343645a3985328"


# --- size -----------------------------------------------------------------------------------------


def test_a_loaded_state_stays_far_below_the_step_functions_limit_for_a_bad_big_file() -> None:
    """Counts travel, rows never: failed_checks grows with the contract's checks, not with the rows."""
    # GIVEN a 5 000-row file where every row fails several checks, validated for real
    posts = get_dataset("posts")
    rows = 5_000
    cells = {name: [f"value {i}" for i in range(rows)] for name in posts.column_names}
    cells.update(likes=["-1"] * rows, comments=["x"] * rows, posted_date=["01/02/2026"] * rows, post_id=[None] * rows)
    result = validate_table(pa.table(cells, schema=pa.schema([(n, pa.string()) for n in cells])), posts, file="f.csv")

    # WHEN its outcome is carried all the way to the Loaded state
    loaded = Loaded(
        source=SOURCE,
        run_id="run-1",
        **{
            **VALIDATED_FIELDS,
            "rows": rows,
            "rows_valid": result.valid.num_rows,
            "rows_rejected": result.rejected.num_rows,
            "failed_checks": result.failed_checks,
        },
        quality=QUALITY,
        load=LOAD,
    )
    size = len(json.dumps(loaded.to_dict()).encode())

    # THEN every row was rejected, yet the state is a few kilobytes
    assert result.rejected.num_rows == rows
    assert len(result.failed_checks) >= 4
    assert size < STATE_LIMIT_BYTES / 32, size


# --- S3 event keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_key", "candidates"),
    [
        (
            "in/post_results_2026-01-13+%281%29.csv",
            ("in/post_results_2026-01-13 (1).csv", "in/post_results_2026-01-13+%281%29.csv"),
        ),
        ("in/post_results_a%2Bb.csv", ("in/post_results_a+b.csv", "in/post_results_a%2Bb.csv")),
        ("in/post_results_a+b.csv", ("in/post_results_a b.csv", "in/post_results_a+b.csv")),
        ("in/post_results_100%.csv", ("in/post_results_100%.csv",)),
        ("in/post_results_20260113_175319.csv", ("in/post_results_20260113_175319.csv",)),
    ],
    ids=["encoded-space-and-parentheses", "encoded-plus", "literal-plus-or-space", "bare-percent", "plain"],
)
def test_an_s3_key_is_tried_decoded_first_then_as_given(event_key: str, candidates: tuple[str, ...]) -> None:
    assert SourceObject("landing", event_key).key_candidates() == candidates


def test_a_local_path_is_never_decoded() -> None:
    assert SourceObject("", "/data/post_results_a+b%20c.csv").key_candidates() == ("/data/post_results_a+b%20c.csv",)


@pytest.mark.parametrize("key", ["in/post_results_a+b.csv", "in/post_results_a%2Bb.csv", "in/post_results_(1).csv"])
def test_a_key_said_to_be_raw_is_only_itself(key: str) -> None:
    # GIVEN the input a bucket listing (the Backfill state machine) or a hand-started execution gives
    source = SourceObject.from_dict({"bucket": "landing", "key": key, "raw_key": True})

    # WHEN the keys to try are asked for
    # THEN it is the key as given, never a decoding of it (a+b.csv is not a b.csv)
    assert source.key_candidates() == (key,)


# --- bounds ---------------------------------------------------------------------------------------


def test_a_long_text_is_cut_saying_how_much() -> None:
    text = "x" * (MAX_MESSAGE_CHARS + 1234)

    bounded = bounded_text(text)

    assert bounded.startswith("x" * MAX_MESSAGE_CHARS)
    assert bounded.endswith("… (1,234 more characters)")
    assert bounded_text("short") == "short"


def test_a_long_list_keeps_its_first_items_each_bounded() -> None:
    items = [f"{i}-" + "y" * 5_000 for i in range(1_000)]

    bounded = bounded_list(items)

    assert len(bounded) == MAX_LIST_ITEMS
    assert all(len(item) < MAX_ITEM_CHARS + 40 for item in bounded)
    assert bounded[0].startswith("0-yyy")


def test_an_error_message_is_bounded_whatever_it_quotes() -> None:
    # GIVEN an error quoting a header of thousands of long names
    header = ", ".join(f"'{'h' * 300}{i}'" for i in range(3_000))

    # WHEN it is raised
    error = SchemaMismatch(f"required column likes missing; the header has {header}", file="f.csv")

    # THEN its message (the Catch's Cause) stays small, and says it was cut
    assert len(str(error)) < MAX_MESSAGE_CHARS + 100
    assert str(error).startswith("f.csv: required column likes missing")
    assert "more characters)" in str(error)
