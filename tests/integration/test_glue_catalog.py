"""The loader on pyiceberg's Glue catalog (moto Glue), its files in S3 served over HTTP (moto's server).

This is the catalog the stack deploys. The state machine on it, each stage with its own role's grants,
is ``test_iam_enforced.py``; here the library itself: creating the namespace and the table, merging,
"already loaded", an upsert's copy-on-write and ``maintain``, all through Glue and pyarrow's S3 client.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest
from moto import mock_aws
from pyiceberg.catalog import Catalog

from icegate.datasets import get_dataset
from icegate.errors import UnsafeSchemaChange
from icegate.lake import SourceIdentity, build_catalog, load_batch, load_group, loaded_snapshots, prepare
from icegate.lake.maintain import maintain
from icegate.lake.markers import MARKER_RUN
from icegate.settings import Settings
from tests.frames import posts_frame
from tests.integration.aws_support import REGION, create_glue_database, s3_server
from tests.integration.sfn_support import running_pipeline

NS = "instagram_db"
LAKE = "lake"
POSTS = get_dataset("posts")
UPSERT_POSTS = dataclasses.replace(POSTS, strategy="upsert")


@dataclasses.dataclass
class GlueLake:
    settings: Settings
    s3: Any
    glue: Any
    _runs: Iterator[int] = dataclasses.field(default_factory=itertools.count)

    def catalog(self) -> Catalog:
        return build_catalog(self.settings)

    def load(self, frame: pl.DataFrame, sha: str, dataset: Any = POSTS, run_id: str | None = None) -> Any:
        # Each load is its own run unless told otherwise: the same run again is a retry, not a rerun.
        run_id = run_id or f"run-{sha}-{next(self._runs)}"
        identity = SourceIdentity(sha256=sha, file=f"s3://landing/{sha}.csv", version="v1", run_id=run_id)
        return load_batch(self.catalog(), dataset, frame, identity, namespace=NS, backoff_seconds=0)

    def rows(self) -> pl.DataFrame:
        frame = pl.from_arrow(self.catalog().load_table((NS, "posts")).scan().to_arrow())
        assert isinstance(frame, pl.DataFrame)
        return frame

    def data_files_in_s3(self) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=LAKE, Prefix=f"warehouse/{NS}.db/posts/data/")
        return {
            f"s3://{LAKE}/{o['Key']}"
            for page in pages
            for o in page.get("Contents", [])
            if o["Key"].endswith(".parquet")
        }


@pytest.fixture
def glue_lake() -> Iterator[GlueLake]:
    """An empty lake bucket and Glue catalog, S3 reachable by boto3 and pyarrow alike."""
    with s3_server() as endpoint, mock_aws():
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=LAKE)
        settings = Settings(
            lake_root=f"s3://{LAKE}",
            catalog_type="glue",
            warehouse=f"s3://{LAKE}/warehouse",
            s3_endpoint=endpoint,
            catalog_properties={"s3.region": REGION},
            commit_backoff_seconds=0.001,
        )
        yield GlueLake(settings, s3, boto3.client("glue"))


def posts(*ids: str, likes: int = 1) -> pl.DataFrame:
    return posts_frame(*ids, likes=likes, with_urls=True)


def test_the_first_load_creates_a_missing_database_and_the_table(glue_lake: GlueLake) -> None:
    # GIVEN a Glue catalog without the namespace (a deployment that did not create it)
    # WHEN the first file loads
    summary = glue_lake.load(posts("p1", "p2"), "first")

    # THEN the database and the table exist in Glue, the table's files under the warehouse
    assert summary.inserted == 2
    assert [d["Name"] for d in glue_lake.glue.get_databases()["DatabaseList"]] == [NS]
    table = glue_lake.glue.get_table(DatabaseName=NS, Name="posts")["Table"]
    assert table["Parameters"]["table_type"].upper() == "ICEBERG"
    assert table["Parameters"]["metadata_location"].startswith(f"s3://{LAKE}/warehouse/{NS}.db/posts/metadata/")


def test_loads_into_the_stacks_database_merge_and_a_rerun_is_already_loaded(glue_lake: GlueLake) -> None:
    # GIVEN the database as the stack creates it (its location is where tables go)
    create_glue_database(glue_lake.glue, NS, LAKE)
    first = glue_lake.load(posts("p1", "p2"), "first")

    # WHEN a second file with one known and one new key loads, then the first file again
    second = glue_lake.load(posts("p2", "p3"), "second")
    again = glue_lake.load(posts("p1", "p2"), "first")

    # THEN the second merged (insert_new: the known key skipped), the rerun added nothing
    assert (second.inserted, second.skipped) == (1, 1)
    assert again.already_loaded
    assert again.snapshot_id == first.snapshot_id
    assert sorted(glue_lake.rows()["post_id"]) == ["p1", "p2", "p3"]
    table = glue_lake.catalog().load_table((NS, "posts"))
    assert table.location() == f"s3://{LAKE}/warehouse/{NS}.db/posts"
    assert len(table.metadata.snapshots) == 2


@pytest.mark.parametrize(
    "parameters",
    [None, {"classification": "csv"}, {"table_type": "HIVE"}],
    ids=["no-parameters", "crawler-parameters", "hive-table"],
)
def test_a_table_of_the_datasets_name_that_is_not_iceberg_is_refused_naming_it_and_the_file(
    glue_lake: GlueLake, parameters: dict[str, str] | None
) -> None:
    # GIVEN a table named like the dataset's that another tool made (a Glue crawler's), not an Iceberg table
    create_glue_database(glue_lake.glue, NS, LAKE)
    table: dict[str, Any] = {
        "Name": "posts",
        "TableType": "EXTERNAL_TABLE",
        "StorageDescriptor": {
            "Location": f"s3://{LAKE}/crawled/posts/",
            "Columns": [{"Name": "post_id", "Type": "string"}],
        },
    }
    if parameters is not None:
        table["Parameters"] = parameters
    glue_lake.glue.create_table(DatabaseName=NS, TableInput=table)

    # WHEN a posts file loads
    # THEN it is refused as a terminal error naming the file and the table, not pyiceberg's bare words
    with pytest.raises(UnsafeSchemaChange, match=r"instagram_db\.posts is not an Iceberg table") as caught:
        glue_lake.load(posts("p1"), "first")
    assert str(caught.value).startswith("s3://landing/first.csv: ")
    # AND the other tool's table is left as it was
    assert glue_lake.glue.get_table(DatabaseName=NS, Name="posts")["Table"].get("Parameters") == parameters


def test_an_upsert_rewrites_the_file_holding_the_key_through_glue(glue_lake: GlueLake) -> None:
    # GIVEN an upsert table holding two rows in one file
    glue_lake.load(posts("p1", "p2", likes=1), "first", UPSERT_POSTS)
    before = {task.file.file_path for task in glue_lake.catalog().load_table((NS, "posts")).scan().plan_files()}

    # WHEN a newer row for p1 arrives
    summary = glue_lake.load(posts("p1", likes=5), "second", UPSERT_POSTS)

    # THEN p1 is replaced and p2 kept, the old file swapped out of the current snapshot in one commit
    assert (summary.inserted, summary.updated) == (0, 1)
    assert dict(glue_lake.rows().select("post_id", "likes").iter_rows()) == {"p1": 5, "p2": 1}
    table = glue_lake.catalog().load_table((NS, "posts"))
    assert {task.file.file_path for task in table.scan().plan_files()}.isdisjoint(before)
    assert table.current_snapshot().summary.operation.value == "overwrite"  # type: ignore[union-attr]


def test_maintain_compacts_expires_and_deletes_in_s3(glue_lake: GlueLake) -> None:
    # GIVEN three loads: three small files in one partition, three snapshots
    for n, ids in enumerate((("p1",), ("p2",), ("p3",))):
        glue_lake.load(posts(*ids), f"load-{n}")
    rows_before = glue_lake.rows().sort("post_id")

    # WHEN the table is maintained down to its newest snapshot
    report = maintain(
        glue_lake.catalog(), (NS, "posts"), expire_older_than=timedelta(0), retain_last=1, orphans_older_than=None
    )

    # THEN the files were compacted into one, the old snapshots expired, their files deleted from S3
    assert (report.files_compacted, report.files_written) == (3, 1)
    assert report.snapshots_expired == 3
    table = glue_lake.catalog().load_table((NS, "posts"))
    live = {task.file.file_path for task in table.scan().plan_files()}
    assert len(live) == 1
    assert glue_lake.data_files_in_s3() == live
    assert glue_lake.rows().sort("post_id").equals(rows_before)


def test_the_state_machine_loads_a_file_into_glue_and_a_rerun_is_already_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the synthesised state machine with the functions' environment as deployed (Glue catalog)
    with running_pipeline(tmp_path, monkeypatch, catalog="glue") as pipeline:
        source = pipeline.upload("post_results_20260113_175319.csv")

        # WHEN the file's execution runs twice (a duplicate S3 event)
        first, second = pipeline.execute(source), pipeline.execute(source)

        # THEN the first loaded the file's distinct valid posts into the Glue table, the second nothing
        assert first["status"] == "SUCCEEDED", first.get("cause")
        assert second["status"] == "SUCCEEDED", second.get("cause")
        assert json.loads(first["output"])["load"]["inserted"] == 23
        assert json.loads(second["output"])["load"]["already_loaded"] is True
        assert pipeline.table("posts").height == 23
        assert pipeline.catalog().load_table((NS, "posts")).location() == f"s3://{LAKE}/warehouse/{NS}.db/posts"


def test_a_group_commit_goes_to_glue_as_one_table_version_with_a_snapshot_per_file(glue_lake: GlueLake) -> None:
    # GIVEN a posts table in Glue, and three files of overlapping keys waiting to load together
    glue_lake.load(posts_frame("p1", with_urls=True), "first")
    versions_before = len(glue_lake.glue.get_table_versions(DatabaseName=NS, TableName="posts")["TableVersions"])
    files = [
        prepare(POSTS, posts_frame(*ids, with_urls=True), SourceIdentity(f"sha-{n}", f"s3://landing/{n}.csv", None, n))
        for n, ids in (("a", ("p1", "p2")), ("b", ("p2", "p3")), ("c", ("p4",)))
    ]

    # WHEN the first one's loader commits them as a group
    done = load_group(glue_lake.catalog(), POSTS, files[0], namespace=NS, waiting=lambda: files[1:], backoff_seconds=0)

    # THEN Glue took one UpdateTable for the three: one new table version, one snapshot and marker per file
    versions = glue_lake.glue.get_table_versions(DatabaseName=NS, TableName="posts")["TableVersions"]
    assert len(versions) == versions_before + 1
    table = glue_lake.catalog().load_table((NS, "posts"))
    assert sorted(props[MARKER_RUN] for _, props in loaded_snapshots(table)) == ["a", "b", "c", "run-first-0"]
    assert {run: summary.inserted for run, summary in done.loads.items()} == {"a": 1, "b": 1, "c": 1}
    assert sorted(glue_lake.rows()["post_id"]) == ["p1", "p2", "p3", "p4"]
