"""The quality dimensions: one table that settings, the contracts, the scorer and the CLI all read."""

from __future__ import annotations

import subprocess
import sys

from icegate.datasets import all_datasets, get_dataset
from icegate.dimensions import ABBREVIATIONS, DIMENSIONS, QUALITY_DIMENSIONS, RULE_DIMENSIONS
from icegate.settings import known_variables


def test_dimension_names_and_labels_are_distinct_and_rules_name_known_dimensions() -> None:
    # GIVEN / WHEN the table  THEN six distinct names, six distinct CLI labels, and the rule
    # dimensions among them
    assert len(set(QUALITY_DIMENSIONS)) == len(DIMENSIONS) == 6
    assert len(set(ABBREVIATIONS.values())) == len(DIMENSIONS)
    assert set(RULE_DIMENSIONS) < set(QUALITY_DIMENSIONS)
    used = {rule.dimension for name in all_datasets() for rule in get_dataset(name).quality_rules}
    assert used <= set(RULE_DIMENSIONS)


def test_every_dimension_has_its_weight_and_floor_variables() -> None:
    # GIVEN / WHEN the variables settings accepts  THEN a weight and a floor override per dimension
    known = known_variables()
    for name in QUALITY_DIMENSIONS:
        assert f"ICEGATE_QUALITY_WEIGHT_{name.upper()}" in known
        assert f"ICEGATE_QUALITY_FLOOR_{name.upper()}" in known


def test_the_table_imports_nothing_heavy() -> None:
    # GIVEN a fresh interpreter  WHEN settings and the dimensions are imported
    code = "import sys, icegate.settings, icegate.dimensions; print(sorted({'polars', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    # THEN neither polars nor pyarrow came with them (`icegate --help` reads settings)
    assert out.strip() == "[]"
