"""dlt's plain append of a CSV to an Iceberg table: the peer ``bench_run.py --with-dlt`` times.

Runs inside the benchmark's own venv (``.bench-venv``, which has dlt; the project's has not):
the CSV read by pyarrow, handed to dlt as one Arrow table, appended to an Iceberg table through
dlt's filesystem destination (local folder, pyiceberg with dlt's own throwaway SQLite catalog).
No validation, no deduplication, no lineage columns.

    .bench-venv/bin/python benchmarks/dlt_append.py SOURCE.csv DEST_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Offline and quiet: no telemetry calls home during a timed run.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt
import pyarrow.csv as pa_csv


def main() -> None:
    source, dest = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
    # Captions hold line breaks inside quotes, as scraped text does.
    table = pa_csv.read_csv(source, parse_options=pa_csv.ParseOptions(newlines_in_values=True))
    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt",
        pipelines_dir=str(dest / ".dlt"),
        destination=dlt.destinations.filesystem(bucket_url=(dest / "warehouse").as_uri()),
        dataset_name="instagram_db",
    )
    info = pipeline.run(table, table_name="posts", table_format="iceberg", write_disposition="append")
    info.raise_on_failed_jobs()


if __name__ == "__main__":
    main()
