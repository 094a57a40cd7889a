"""The six quality dimensions and their defaults: the one place they are spelled out.

Standard library only: settings (which validates ``ICEGATE_QUALITY_*`` variable names), the dataset
contracts, the scorer and the CLI all read this, and ``icegate --help`` must not pay for polars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

#: The dimensions a contract's soft quality rules can cost points on; the other three are measured
#: by the scorer itself (completeness, uniqueness) or by validation (validity).
RuleDimension = Literal["accuracy", "consistency", "timeliness"]


@dataclass(frozen=True)
class Dimension:
    name: str
    #: Default weight, in points out of 100 (from the product's source documents).
    weight: float
    #: Default floor (0–1): under it the dimension fails the gate whatever the weights and the score.
    floor: float
    #: Its label in the CLI's summary table.
    abbreviation: str


# Floors: under 0.5, most of what a dimension measures is wrong — a broken export, a scraper looping on
# one page — while a working scrape sits far above (the samples score 0.83–1.0 on each), so no
# dimension can collapse while the others carry the file over the threshold. Timeliness has none: a
# backfill of last year's posts is stale by design and must still load.
#: In report order.
DIMENSIONS: Final[tuple[Dimension, ...]] = (
    Dimension("completeness", weight=20, floor=0.5, abbreviation="C"),
    Dimension("accuracy", weight=25, floor=0.5, abbreviation="A"),
    Dimension("consistency", weight=20, floor=0.5, abbreviation="Co"),
    Dimension("timeliness", weight=10, floor=0.0, abbreviation="T"),
    Dimension("uniqueness", weight=15, floor=0.5, abbreviation="U"),
    Dimension("validity", weight=10, floor=0.5, abbreviation="V"),
)
QUALITY_DIMENSIONS: Final[tuple[str, ...]] = tuple(d.name for d in DIMENSIONS)
DEFAULT_WEIGHTS: Final[Mapping[str, float]] = {d.name: d.weight for d in DIMENSIONS}
DEFAULT_FLOORS: Final[Mapping[str, float]] = {d.name: d.floor for d in DIMENSIONS}
ABBREVIATIONS: Final[Mapping[str, str]] = {d.name: d.abbreviation for d in DIMENSIONS}
RULE_DIMENSIONS: Final[tuple[str, ...]] = get_args(RuleDimension)
