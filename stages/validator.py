"""Validate stage: parsed.parquet -> valid.parquet + rejected rows with the checks they failed."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from icegate.payloads import Parsed
from icegate.pipeline import run_validate
from icegate.settings import load_settings
from stages._powertools import logger, metrics, storage, tracer


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parsed = Parsed.from_dict(event)
    logger.append_keys(run_id=parsed.run_id, source=parsed.source.uri, dataset=parsed.dataset)
    validated = run_validate(parsed, load_settings(), storage())
    metrics.add_dimension(name="dataset", value=validated.dataset)
    metrics.add_metric(name="RowsValid", unit=MetricUnit.Count, value=validated.rows_valid)
    metrics.add_metric(name="RowsRejected", unit=MetricUnit.Count, value=validated.rows_rejected)
    return validated.to_dict()
