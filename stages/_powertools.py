"""The Powertools objects every handler shares, and the per-process storage client."""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger, Metrics, Tracer

from icegate.settings import load_settings
from icegate.storage import Storage

SERVICE = "icegate"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=SERVICE, service=SERVICE)


@cache
def storage() -> Storage:
    """One S3 client per warm Lambda container."""
    return Storage(load_settings().s3_endpoint)
