"""A burst under the executed state machine: 50 executions for one table at once, all succeeding.

moto's interpreter runs each execution on its own thread and the stage handlers are dispatched
in-process (``sfn_support``), so the 50 loaders really run side by side and group-commit through the
lake's ``processing/_waiting/``. The catalog is the SQL catalog (SQLite): its commit is a
compare-and-swap of the metadata location, as Glue's ``UpdateTable`` with ``VersionId`` is on AWS.
moto's Glue ignores ``VersionId`` (two concurrent commits both "succeed"), so it cannot show a race and
is not used here; ``test_glue_catalog`` covers the Glue catalog's commit path itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from icegate.constants import LEDGER_TABLE, PROCESSING_PREFIX, WAITING_FOLDER
from icegate.lake.markers import MARKER_SHA256, loaded_snapshots
from tests.frames import scraper_posts_csv
from tests.integration.sfn_support import NAMESPACE, running_pipeline

FILES = 50
ROWS = 20
BURST_TIMEOUT_SECONDS = 900.0


def posts_csv(first: int) -> bytes:
    """ROWS posts from key ``first``: each file shares half its keys with the next one."""
    return scraper_posts_csv(range(first, first + ROWS))


def test_fifty_concurrent_executions_for_one_table_all_succeed_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(tmp_path, monkeypatch) as cloud:
        # GIVEN 50 files of one dataset uploaded at once, their keys overlapping by half
        inputs = [
            cloud.upload(key, key=f"scrapes/{key}", body=posts_csv(n * ROWS // 2))
            for n, key in enumerate(f"post_results_20260113_12{n // 60:02d}{n % 60:02d}.csv" for n in range(FILES))
        ]

        # WHEN 50 executions start together
        arns = [
            cloud.sfn.start_execution(
                stateMachineArn=cloud.state_machine_arn, name=str(uuid.uuid4()), input=json.dumps(execution_input)
            )["executionArn"]
            for execution_input in inputs
        ]
        deadline = time.monotonic() + BURST_TIMEOUT_SECONDS
        statuses: dict[str, str] = {}
        while len(statuses) < FILES and time.monotonic() < deadline:
            for arn in arns:
                if arn not in statuses and (status := cloud.sfn.describe_execution(executionArn=arn)["status"]) != (
                    "RUNNING"
                ):
                    statuses[arn] = status
            time.sleep(0.2)

        # THEN every execution succeeded: none ended in the dead letter
        assert Counter(statuses.values()) == Counter({"SUCCEEDED": FILES}), cloud.dlq_entries()[:3]
        # AND every key is stored exactly once
        posts = cloud.table("posts")
        expected = (FILES - 1) * ROWS // 2 + ROWS
        assert posts.height == expected
        assert posts["post_id"].n_unique() == expected
        # AND each file has its own marker (a group's snapshot lists its files') and one "loaded" ledger row
        table = cloud.catalog().load_table((NAMESPACE, "posts"))
        markers = Counter(props[MARKER_SHA256] for _, props in loaded_snapshots(table))
        assert len(markers) == FILES
        assert set(markers.values()) == {1}
        ledger = cloud.table(LEDGER_TABLE)
        assert Counter(ledger.filter(ledger["outcome"] == "loaded")["run_id"]).most_common(1)[0][1] == 1
        assert (ledger["outcome"] == "loaded").sum() == FILES
        # AND nothing is left waiting
        assert cloud.keys(f"{PROCESSING_PREFIX}/{WAITING_FOLDER}/") == []
