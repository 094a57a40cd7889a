"""The Powertools objects every handler shares, and the per-process storage client."""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger, Metrics, Tracer

from icegate.settings import load_settings
from icegate.storage import Storage, remove_stale_scratch

SERVICE = "icegate"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=SERVICE, service=SERVICE)


@cache
def storage() -> Storage:
    """One S3 client per warm Lambda container; the first call also clears what a killed runtime left in /tmp."""
    if removed := remove_stale_scratch():
        logger.warning("removed %d scratch folders a previous runtime left in /tmp", removed)
    return Storage(load_settings().s3_endpoint)
