"""A burst, executed: the loader's invocations throttled by its reserved concurrency, retried until it loads.

The synthesised definition runs in moto's Step Functions interpreter with each Lambda dispatched in-process
to the real handler (``sfn_support``). What moto cannot show: the Lambda service's own 429. Its interpreter
names any ``ClientError`` of a function-ARN task ``Exception``, so the dispatcher answers a throttled invoke
with the error *name* AWS reports, ``Lambda.TooManyRequestsException`` (see
``LambdaDispatcher._throttled``); that the retrier for that name exists, with its budget, on every task is
asserted on the definition in ``tests/infra/test_infra_bursts.py``. The interpreter's Retry waits are
recorded, not slept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from icegate.constants import LAMBDA_SERVICE_RETRY, LAMBDA_THROTTLING_RETRY, TRANSIENT_RETRIES
from icegate.errors import CommitConflict
from tests.integration.sfn_support import CloudPipeline, running_pipeline

POSTS_CSV = "post_results_20260113_175319.csv"
#: tests/integration/test_state_machine.py: 28 rows - 4 rejected - 1 duplicate key.
CSV_VALID_KEYS = 23
HAPPY_PATH = ["parse", "validate", "score", "load"]


@pytest.fixture
def cloud_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudPipeline]:
    with running_pipeline(tmp_path, monkeypatch) as pipeline:
        yield pipeline


@pytest.mark.parametrize(
    "throttles",
    [
        pytest.param(3, id="a-few-throttles"),
        # More refusals than the Lambda service errors' retrier allows: a burst's queue outlasts it.
        pytest.param(LAMBDA_SERVICE_RETRY.retries + 3, id="longer-than-the-service-error-budget"),
    ],
)
def test_a_throttled_loader_is_retried_until_it_loads_the_file(cloud_pipeline: CloudPipeline, throttles: int) -> None:
    # GIVEN a burst: the loader's reserved concurrency is in use, so its next invocations are refused
    source = cloud_pipeline.upload(POSTS_CSV)
    cloud_pipeline.dispatcher.throttles["load"] = throttles

    # WHEN the file's execution runs
    execution = cloud_pipeline.execute(source)

    # THEN the Load task waited its turn (one backoff per refusal, each within the throttling retrier's
    # ceiling) and the loader ran once, when a slot was free
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert cloud_pipeline.dispatcher.throttled == ["load"] * throttles
    assert cloud_pipeline.dispatcher.invocations == HAPPY_PATH
    waits = cloud_pipeline.retry_waits
    assert len(waits) == throttles
    assert all(0 <= wait <= LAMBDA_THROTTLING_RETRY.ceiling(n) for n, wait in enumerate(waits))
    # AND the file loaded exactly once, nothing was dead-lettered
    assert json.loads(execution["output"])["load"]["inserted"] == CSV_VALID_KEYS
    assert cloud_pipeline.table("posts").height == CSV_VALID_KEYS
    assert cloud_pipeline.snapshot_count("posts") == 1
    assert cloud_pipeline.dlq_entries() == []


def test_throttling_does_not_spend_the_commit_conflict_budget(cloud_pipeline: CloudPipeline) -> None:
    # GIVEN a loader first refused by the Lambda service five times, then losing as many commit races as the
    # transient retrier allows
    source = cloud_pipeline.upload(POSTS_CSV)
    cloud_pipeline.dispatcher.faults["load"] = [CommitConflict(f"conflict {n}") for n in range(TRANSIENT_RETRIES)]
    cloud_pipeline.dispatcher.throttles["load"] = TRANSIENT_RETRIES

    # WHEN the file's execution runs
    execution = cloud_pipeline.execute(source)

    # THEN each retrier counted only its own errors: the refusals took none of the transient retries, and the
    # file loaded on the last of them
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert cloud_pipeline.dispatcher.invocations == [*HAPPY_PATH, *["load"] * TRANSIENT_RETRIES]
    assert cloud_pipeline.table("posts").height == CSV_VALID_KEYS
    assert cloud_pipeline.dlq_entries() == []
