"""A lake on S3 under a prefix with a space, ``%`` and non-ASCII: object keys round-trip exactly.

pyarrow's S3 filesystem (which pyiceberg writes with) does not go through botocore, so S3 is a
moto server here (``ThreadedMotoServer``), not ``mock_aws``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import polars as pl
import pytest
from moto.server import ThreadedMotoServer

from icegate.datasets import get_dataset
from icegate.lake import SourceIdentity, build_catalog, load_batch
from icegate.lake.maintain import remove_orphan_files
from icegate.settings import Settings
from tests.frames import posts_frame

POSTS = get_dataset("posts")
PREFIX = "my lake/100%/été"


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lake")
    yield endpoint
    server.stop()


def posts(*ids: str) -> pl.DataFrame:
    return posts_frame(*ids, likes=None)


def test_an_s3_lake_prefix_with_a_space_percent_and_accents_keeps_loading(s3_endpoint: str, tmp_path: Path) -> None:
    # GIVEN a lake on S3 under a prefix that a URI would percent-encode, loaded once
    settings = Settings(
        lake_root=f"s3://lake/{PREFIX}",
        s3_endpoint=s3_endpoint,
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        catalog_properties={"s3.region": "us-east-1"},
    )
    catalog = build_catalog(settings)
    load_batch(catalog, POSTS, posts("p1", "p2"), SourceIdentity("one", "f1", None, "run-1"), namespace="ns")

    # WHEN a second file is merged (reading the first file's keys back from S3)
    summary = load_batch(catalog, POSTS, posts("p2", "p3"), SourceIdentity("two", "f2", None, "run-2"), namespace="ns")

    # THEN the merge saw the stored key, and every object key is the prefix itself, not an encoding of it
    assert (summary.inserted, summary.skipped) == (1, 1)
    table = catalog.load_table(("ns", "posts"))
    assert sorted(table.scan().to_arrow()["post_id"].to_pylist()) == ["p1", "p2", "p3"]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]]
    assert keys
    assert all(key.startswith(f"{PREFIX}/warehouse/") for key in keys)

    # AND orphan removal matches listed keys with referenced ones: only a stray object goes
    data_folder = next(k for k in keys if k.endswith(".parquet")).rsplit("/", 1)[0]
    s3.put_object(Bucket="lake", Key=f"{data_folder}/stray.parquet", Body=b"not committed")
    assert remove_orphan_files(table, older_than=datetime.now(UTC) + timedelta(minutes=1)) == 1
    # (pyarrow's S3 delete may leave an empty "folder/" marker object behind)
    remaining = {o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"] if not o["Key"].endswith("/")}
    assert remaining == set(keys)
    assert table.scan().to_arrow().num_rows == 3
