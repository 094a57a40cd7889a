"""Parse stage: source object -> processing/<run_id>/parsed.parquet."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

import icegate.lake  # noqa: F401 - each event asks the ledger first: pay for pyiceberg at init, not per event
from icegate.payloads import Job
from icegate.pipeline import run_parse
from icegate.settings import load_settings
from stages._powertools import logger, metrics, storage, tracer


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    job = Job.from_dict(event)
    logger.append_keys(run_id=job.run_id, source=job.source.uri)
    parsed = run_parse(job, load_settings(), storage())
    metrics.add_dimension(name="dataset", value=parsed.dataset)
    metrics.add_metric(name="RowsParsed", unit=MetricUnit.Count, value=parsed.rows)
    return parsed.to_dict()
