"""Maintainer: compact, expire and clean every Iceberg table of the namespace, on a schedule.

The event is the schedule's input (``icegate.lake.maintain.MaintenanceRequest``: ages, retain_last);
the tables are whatever the catalog lists, so a table the loader creates later is maintained too.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from icegate.lake import build_catalog
from icegate.lake.maintain import MaintenanceIncomplete, MaintenanceReport, MaintenanceRequest, maintain_namespace
from icegate.settings import load_settings
from stages._powertools import logger, metrics, tracer


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = MaintenanceRequest.from_dict(event)
    settings = load_settings()
    try:
        reports = maintain_namespace(build_catalog(settings), settings.namespace, request)
    except MaintenanceIncomplete as exc:
        _record(exc.reports)
        logger.error("maintenance incomplete", extra={"failures": exc.failures})
        metrics.add_metric(name="TablesNotMaintained", unit=MetricUnit.Count, value=len(exc.failures))
        raise
    _record(reports)
    return {"tables": [asdict(report) for report in reports]}


def _record(reports: list[MaintenanceReport]) -> None:
    for report in reports:
        logger.info("maintained", extra={"maintenance": asdict(report)})
    metrics.add_metric(name="TablesMaintained", unit=MetricUnit.Count, value=len(reports))
    metrics.add_metric(name="FilesCompacted", unit=MetricUnit.Count, value=sum(r.files_compacted for r in reports))
    metrics.add_metric(name="SnapshotsExpired", unit=MetricUnit.Count, value=sum(r.snapshots_expired for r in reports))
