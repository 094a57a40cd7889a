"""icegate: quality-gated ingestion of scraped files into Apache Iceberg."""
