"""The scheduled maintainer's library call: every table of a namespace, one table's failure sparing the rest."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pyiceberg.catalog import Catalog

from icegate.lake import maintain as maintain_module
from icegate.lake.maintain import (
    MaintenanceIncomplete,
    MaintenanceRequest,
    UnsafeOrphanAge,
    maintain_namespace,
)
from tests.unit import test_lake
from tests.unit.test_lake import NS, POSTS, PRICES, load, posts, prices, table_of

# The real catalog fixture of the lake tests (SqlCatalog on SQLite, temp warehouse).
catalog = test_lake.catalog

EXPIRE_ALL_BUT_NEWEST = MaintenanceRequest(expire_after_days=0, retain_last=1, orphan_after_days=1)


def two_tables_of_small_files(catalog: Catalog) -> None:
    for n in range(2):
        load(catalog, POSTS, posts(f"p{n}"), f"posts-{n}")
        load(catalog, PRICES, prices(date(2026, 1, 1 + n), **{f"item{n}": n}), f"prices-{n}")


def test_every_table_of_the_namespace_is_maintained(catalog: Catalog) -> None:
    # GIVEN two tables, each with two small files in two snapshots
    two_tables_of_small_files(catalog)

    # WHEN the namespace is maintained
    reports = maintain_namespace(catalog, NS, EXPIRE_ALL_BUT_NEWEST)

    # THEN both tables (found through the catalog) were compacted and their older snapshots expired
    assert sorted(r.table for r in reports) == [f"{NS}.posts", f"{NS}.prices"]
    assert all(r.files_compacted == 2 and r.snapshots_expired >= 1 for r in reports), reports
    assert len(table_of(catalog, POSTS).metadata.snapshots) == 1


def test_one_table_failing_spares_the_others_and_the_run_fails_naming_it(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two tables, and maintenance of posts failing (say, a file it may not delete)
    two_tables_of_small_files(catalog)
    real_maintain = maintain_module.maintain

    def failing_on_posts(catalog: Catalog, identifier: tuple[str, str], **kwargs: Any) -> Any:
        if identifier[1] == "posts":
            raise OSError("ACCESS_DENIED during DeleteObject")
        return real_maintain(catalog, identifier, **kwargs)

    monkeypatch.setattr(maintain_module, "maintain", failing_on_posts)

    # WHEN the namespace is maintained
    with pytest.raises(MaintenanceIncomplete, match=r"1 of 2 tables: instagram_db\.posts: OSError") as raised:
        maintain_namespace(catalog, NS, EXPIRE_ALL_BUT_NEWEST)

    # THEN prices was still maintained, and its report is kept for the log
    (report,) = raised.value.reports
    assert report.table == f"{NS}.prices"
    assert report.files_compacted == 2


def test_an_orphan_age_under_a_day_is_refused_before_any_table_is_touched(catalog: Catalog) -> None:
    # GIVEN tables, and a request to remove orphans of any age (loads run while the schedule does)
    two_tables_of_small_files(catalog)
    snapshots = len(table_of(catalog, POSTS).metadata.snapshots)

    # WHEN the namespace is maintained with it
    # THEN it is refused, and nothing was compacted or expired
    with pytest.raises(UnsafeOrphanAge):
        maintain_namespace(catalog, NS, MaintenanceRequest(orphan_after_days=0))
    assert len(table_of(catalog, POSTS).metadata.snapshots) == snapshots


def test_a_request_with_an_unknown_setting_is_refused() -> None:
    # GIVEN a schedule input with a typo
    # THEN the maintainer refuses it, naming the known settings, rather than run with a default
    with pytest.raises(ValueError, match="unknown maintenance settings \\['expire_days'\\]"):
        MaintenanceRequest.from_dict({"expire_days": 3})
