"""DuckDB's own Iceberg reader (``iceberg_scan``), an independent check of what pyiceberg wrote.

DuckDB would download its extensions at run time; the dev extra installs them as PyPI wheels instead,
and they are loaded from those files.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import duckdb_extension_avro
import duckdb_extension_iceberg
import polars as pl


def iceberg_scan(metadata_location: str, order_by: str) -> pl.DataFrame:
    """The table at ``metadata_location`` (its current snapshot) as DuckDB reads it, ordered."""
    connection = duckdb.connect(config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false"})
    for module, name in ((duckdb_extension_avro, "avro"), (duckdb_extension_iceberg, "iceberg")):
        [extension] = Path(module.__file__ or "").parent.glob(f"extensions/*/{name}.duckdb_extension")
        connection.execute(f"LOAD '{extension}'")
    query = f"SELECT * FROM iceberg_scan(?) ORDER BY {order_by}"  # order_by: a column name from the test itself
    frame = connection.execute(query, [metadata_location]).pl()
    connection.close()
    return frame
