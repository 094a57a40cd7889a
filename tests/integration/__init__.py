"""Integration tests: stages chained, real Iceberg, moto S3."""
