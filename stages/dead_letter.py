"""Dead-letter stage: file an error.json in dlq/<dataset>/<run_id>/, then copy the source beside it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from icegate.payloads import ErrorInfo
from icegate.pipeline import run_dead_letter
from icegate.report import publish_quietly
from icegate.settings import load_settings
from stages._powertools import logger, metrics, storage, tracer


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """``event`` is the failed state: ``$.error`` from the Catch and ``$.failed_stage`` from the state machine."""
    error = ErrorInfo.from_dict(event.get("error") or {"Error": "Unknown", "Cause": "no error recorded"})
    stage = str(event.get("failed_stage") or "unknown")
    entry = run_dead_letter(event, stage, error, load_settings(), storage())
    logger.append_keys(run_id=entry.run_id, dataset=entry.dataset)
    logger.warning("dead-lettered", extra={"dead_letter": entry.to_dict()})
    metrics.add_dimension(name="dataset", value=entry.dataset)
    metrics.add_metric(name="DeadLettered", unit=MetricUnit.Count, value=1)
    if entry.copy_error:  # error.json is filed, but the source itself is not in dlq/
        logger.error("source not copied to the DLQ", extra={"copy_error": entry.copy_error})
        metrics.add_metric(name="DeadLetterCopyFailed", unit=MetricUnit.Count, value=1)
    # The quality report, rebuilt from the ledger unless it is younger than ICEGATE_REPORT_MIN_INTERVAL_SECONDS.
    publish_quietly(load_settings(), storage())
    return entry.to_dict()
