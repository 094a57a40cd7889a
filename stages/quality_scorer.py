"""Score stage: the six quality dimensions, the 0–100 score and the gate decision."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from icegate.payloads import Validated
from icegate.pipeline import run_score
from icegate.settings import load_settings
from stages._powertools import logger, metrics, storage, tracer


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    validated = Validated.from_dict(event)
    logger.append_keys(run_id=validated.run_id, source=validated.source.uri, dataset=validated.dataset)
    scored = run_score(validated, load_settings(), storage())
    assert scored.quality is not None
    metrics.add_dimension(name="dataset", value=scored.dataset)
    metrics.add_metric(name="QualityScore", unit=MetricUnit.Count, value=scored.quality.score)
    logger.info("quality scored", extra={"quality": scored.quality.to_dict()})
    return scored.to_dict()
