"""A loader process for the concurrency tests: loads batches (Parquet files) into one table.

    python -m tests.integration.loader_worker '<json job>'

The job names the lake, the catalog URI, the dataset and the batches. Once its libraries are
imported and its catalog built, the worker prints ``ready`` and waits for a line on stdin, so that
all workers start loading at the same moment. Like the state machine, it retries a load that ends
in the transient ``CommitConflict``. Then one JSON line per batch on stdout.

``ICEGATE_TEST_CRASH=before-commit|after-commit`` makes the process die (``os._exit``, no cleanup,
like SIGKILL) right before, or right after, the catalog commit of its first load: a test-only hook,
installed here by patching the loader, never read by production code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

import polars as pl

from icegate.datasets import Column, Dataset, get_dataset
from icegate.errors import CommitConflict
from icegate.lake import SourceIdentity, build_catalog, load_batch
from icegate.settings import Settings

#: A dataset whose rows are re-scraped: latest scrape wins, an older scrape never overwrites.
SCRAPES = Dataset(
    name="scrapes",
    file_patterns=("scrapes_*",),
    columns=(
        Column("item_id", nullable=False),
        Column("shop", nullable=False),
        Column("price", "long"),
        Column("scraped_on", "date"),
    ),
    key=("item_id", "shop"),
    strategy="upsert",
    ordering_column="scraped_on",
    # Partitioned by the ordering column: an update moves a key to another partition.
    partition=(("scraped_on", "month"),),
)
DATASETS = {"scrapes": SCRAPES}
CRASH = "ICEGATE_TEST_CRASH"
STATE_MACHINE_ATTEMPTS = 6


def dataset_named(name: str) -> Dataset:
    return DATASETS.get(name) or get_dataset(name)


def _install_crash_hook(mode: str) -> None:
    from icegate.lake import commit

    real = commit.commit_staged

    def crashing(pending: Any) -> None:
        if mode == "before-commit":
            os._exit(17)
        real(pending)
        os._exit(18)

    commit.commit_staged = crashing


def main(job: dict[str, Any]) -> None:
    if mode := os.environ.get(CRASH):
        _install_crash_hook(mode)
    settings = Settings(lake_root=job["lake_root"], catalog_uri=job.get("catalog_uri"), commit_backoff_seconds=0.02)
    catalog = build_catalog(settings)
    dataset = dataset_named(job["dataset"])
    print("ready", flush=True)
    sys.stdin.readline()
    for batch in job["batches"]:
        frame = pl.read_parquet(batch["path"])
        identity = SourceIdentity(sha256=batch["sha256"], file=batch["name"], version=None, run_id=job["worker"])
        for attempt in range(1, STATE_MACHINE_ATTEMPTS + 1):
            try:
                summary = load_batch(
                    catalog, dataset, frame, identity, namespace=settings.namespace, backoff_seconds=0.02
                )
                break
            except CommitConflict:
                if attempt == STATE_MACHINE_ATTEMPTS:
                    raise
                time.sleep(0.1 * attempt)
        print(json.dumps({"name": batch["name"], **asdict(summary)}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
