"""The Iceberg side: catalog, tables, the merge engine, the commit loop and table maintenance.

``catalog`` builds the catalog and creates tables; ``markers`` records which source each snapshot
loaded; ``files`` writes and reads data files (the one home of pyiceberg internals); ``merge``
decides what a load inserts, replaces and skips; ``evolve`` fits the contract onto a table whose
schema changed and evolves it safely; ``commit`` runs a load to one snapshot under concurrent
writers; ``stream`` loads a file too big for memory, in slices, as one such commit; ``maintain``
expires snapshots, compacts small files and removes orphans.
"""

from __future__ import annotations

from icegate.lake.catalog import (
    LINEAGE_COLUMNS,
    TABLE_PROPERTIES,
    build_catalog,
    ensure_table,
    iceberg_schema,
    partition_spec,
)
from icegate.lake.commit import GroupLoad, Incoming, load_batch, load_group, prepare, with_lineage
from icegate.lake.markers import (
    MARKER_FILE,
    MARKER_RUN,
    MARKER_SHA256,
    MARKER_VERSION,
    SourceIdentity,
    find_loaded,
    loaded_snapshots,
    surely_never_loaded,
)
from icegate.lake.merge import dedupe_in_file, plan_insert_new, plan_upsert
from icegate.lake.stream import dedupe_slices, load_stream

__all__ = [
    "LINEAGE_COLUMNS",
    "MARKER_FILE",
    "MARKER_RUN",
    "MARKER_SHA256",
    "MARKER_VERSION",
    "TABLE_PROPERTIES",
    "GroupLoad",
    "Incoming",
    "SourceIdentity",
    "build_catalog",
    "dedupe_in_file",
    "dedupe_slices",
    "ensure_table",
    "find_loaded",
    "iceberg_schema",
    "load_batch",
    "load_group",
    "load_stream",
    "loaded_snapshots",
    "partition_spec",
    "plan_insert_new",
    "plan_upsert",
    "prepare",
    "surely_never_loaded",
    "with_lineage",
]
