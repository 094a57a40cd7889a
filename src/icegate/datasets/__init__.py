"""Dataset contracts, discovered from the modules of this package.

Adding a dataset is one new module here that defines ``DATASET``; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import PurePosixPath

from icegate.datasets._contract import (
    POLARS_TYPES,
    Column,
    Dataset,
    NormalizeContext,
    Normalizer,
    QualityContext,
    QualityRule,
)
from icegate.errors import UnknownDataset

__all__ = [
    "POLARS_TYPES",
    "Column",
    "Dataset",
    "NormalizeContext",
    "Normalizer",
    "QualityContext",
    "QualityRule",
    "all_datasets",
    "detect_dataset",
    "get_dataset",
]


@cache
def all_datasets() -> dict[str, Dataset]:
    found: dict[str, Dataset] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        dataset = getattr(importlib.import_module(f"{__name__}.{module.name}"), "DATASET", None)
        if isinstance(dataset, Dataset):
            found[dataset.name] = dataset
    return found


def get_dataset(name: str) -> Dataset:
    try:
        return all_datasets()[name]
    except KeyError:
        raise UnknownDataset(f"no dataset named {name!r}; known: {', '.join(sorted(all_datasets()))}") from None


def detect_dataset(key: str) -> Dataset:
    """The dataset whose file pattern matches the object's base name."""
    name = PurePosixPath(key).name
    matching = [d for d in all_datasets().values() if d.matches(name)]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        patterns = "; ".join(f"{d.name}: {', '.join(d.file_patterns)}" for d in all_datasets().values())
        raise UnknownDataset(f"the file name matches no dataset pattern ({patterns})", file=key)
    raise UnknownDataset(f"the file name matches several datasets: {', '.join(d.name for d in matching)}", file=key)
