"""Load stage: merge the valid rows into the dataset's Iceberg table, once per source.

In a burst, loaders of one table group-commit: each announces its file under ``processing/_waiting/``
and commits it together with the files waiting beside it (``icegate.waiting``), one snapshot per file.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

import icegate.lake  # noqa: F401 - the pipeline imports it lazily; this stage needs it, so at init, not per event
from icegate.payloads import Scored
from icegate.pipeline import object_queue, run_load
from icegate.report import publish_quietly
from icegate.settings import load_settings
from stages._powertools import logger, metrics, storage, tracer


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scored = Scored.from_dict(event)
    logger.append_keys(run_id=scored.run_id, source=scored.source.uri, dataset=scored.dataset)
    settings, files = load_settings(), storage()
    loaded = run_load(scored, settings, files, waiting=object_queue(settings, files))
    assert loaded.load is not None
    metrics.add_dimension(name="dataset", value=loaded.dataset)
    metrics.add_metric(name="RowsInserted", unit=MetricUnit.Count, value=loaded.load.inserted)
    metrics.add_metric(name="RowsSkipped", unit=MetricUnit.Count, value=loaded.load.skipped)
    logger.info("loaded", extra={"load": loaded.load.to_dict()})
    # The quality report, rebuilt from the ledger unless it is younger than ICEGATE_REPORT_MIN_INTERVAL_SECONDS.
    publish_quietly(settings, files)
    return loaded.to_dict()
