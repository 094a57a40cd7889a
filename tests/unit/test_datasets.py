"""Dataset contracts: the registry, file-name detection, and what each contract declares."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import icegate.datasets as datasets_package
from icegate.datasets import Column, Dataset, all_datasets, detect_dataset, get_dataset
from icegate.errors import UnknownDataset
from icegate.settings import QUALITY_DIMENSIONS

#: What the loader adds to every row; a contract must not claim these names.
LINEAGE_COLUMNS = ("ingested_at", "source_file", "source_version", "run_id")


# --- registry -------------------------------------------------------------------------------------


def test_registry_holds_the_posts_and_restaurants_contracts() -> None:
    found = all_datasets()

    assert {"posts", "restaurants"} <= set(found)
    assert all(name == dataset.name for name, dataset in found.items())


def test_get_dataset_returns_the_contract_by_name() -> None:
    assert get_dataset("posts").file_patterns == ("post_results_*",)


def test_get_dataset_with_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDataset) as caught:
        get_dataset("reels")

    assert "'reels'" in str(caught.value)
    assert "posts" in str(caught.value)
    assert "restaurants" in str(caught.value)


@pytest.fixture
def extra_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Drop extra modules into the datasets package, as adding a dataset file would."""
    folder = tmp_path / "more_datasets"
    folder.mkdir()
    monkeypatch.setattr(datasets_package, "__path__", [*datasets_package.__path__, str(folder)])
    added: list[str] = []

    def add(module: str, source: str) -> None:
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        added.append(f"{datasets_package.__name__}.{module}")

    all_datasets.cache_clear()
    yield add
    for name in added:
        sys.modules.pop(name, None)
    monkeypatch.undo()
    all_datasets.cache_clear()


DATASET_SOURCE = """
    from icegate.datasets._contract import Column, Dataset

    DATASET = Dataset(
        name="{name}",
        file_patterns=("{pattern}",),
        columns=(Column("reel_id", nullable=False), Column("views", "long")),
        key=("reel_id",),
    )
"""


def test_a_new_module_defining_DATASET_is_discovered(extra_modules: Callable[[str, str], None]) -> None:
    # GIVEN a new contract module, a helper module without DATASET and a private module with one
    extra_modules("zz_reels", DATASET_SOURCE.format(name="reels", pattern="reel_results_*"))
    extra_modules("zz_helpers", "VALUE = 1\n")
    extra_modules("_zz_private", DATASET_SOURCE.format(name="private", pattern="private_*"))
    extra_modules("zz_not_a_contract", "DATASET = {'name': 'fake'}\n")

    # WHEN the registry is read
    found = all_datasets()

    # THEN only the public module defining a Dataset joins, and file detection knows it
    assert set(found) == {"posts", "restaurants", "reels"}
    assert detect_dataset("landing/reel_results_20260113.csv").name == "reels"
    assert get_dataset("reels").key == ("reel_id",)


def test_a_file_matching_two_contracts_is_refused(extra_modules: Callable[[str, str], None]) -> None:
    extra_modules("zz_overlap", DATASET_SOURCE.format(name="post_copies", pattern="post_*"))

    with pytest.raises(UnknownDataset, match="several datasets") as caught:
        detect_dataset("post_results_20260113.csv")

    assert "posts" in str(caught.value)
    assert "post_copies" in str(caught.value)


# --- detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "dataset"),
    [
        ("post_results_20260113_175319.csv", "posts"),
        ("POST_RESULTS_20260113_175319.CSV", "posts"),
        ("landing/2026/01/post_results_20260113_175319.csv.gz", "posts"),
        ("instagram_results_20260113_175319.xlsx", "restaurants"),
        ("scrapes/Instagram_Results_20260113.json", "restaurants"),
        ("/home/me/Downloads/instagram_results_x.parquet", "restaurants"),
    ],
    ids=["posts", "upper-case", "folders-and-gzip", "restaurants", "mixed-case-in-folder", "absolute-local-path"],
)
def test_detect_dataset_by_file_name(key: str, dataset: str) -> None:
    assert detect_dataset(key).name == dataset


@pytest.mark.parametrize(
    "key",
    ["results.csv", "post_results_x/other.csv", "my_post_results_1.csv", "instagram_results"],
    ids=["unrelated", "pattern-only-in-folder", "pattern-not-at-start", "prefix-without-underscore-tail"],
)
def test_detect_dataset_refuses_a_name_that_matches_no_pattern(key: str) -> None:
    with pytest.raises(UnknownDataset) as caught:
        detect_dataset(key)

    message = str(caught.value)
    assert caught.value.file == key
    assert "post_results_*" in message
    assert "instagram_results_*" in message


# --- what every contract must satisfy -------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(all_datasets().values(), key=lambda d: d.name), ids=lambda d: d.name)
def test_contract_is_coherent(dataset: Dataset) -> None:
    names = dataset.column_names
    # lineage columns are the loader's, not the contract's
    assert not set(names) & set(LINEAGE_COLUMNS)
    # no alias shadows another column or another alias
    spellings = [*names, *(a for c in dataset.columns for a in c.aliases)]
    assert len(spellings) == len(set(spellings)), spellings
    # quality rules are uniquely named and belong to a rule dimension
    rule_names = [r.name for r in dataset.quality_rules]
    assert len(rule_names) == len(set(rule_names))
    assert {r.dimension for r in dataset.quality_rules} <= {"accuracy", "consistency", "timeliness"}
    assert set(dataset.quality_weights) <= set(QUALITY_DIMENSIONS)
    assert set(dataset.quality_floors) <= set(QUALITY_DIMENSIONS)
    assert 0 <= dataset.quality_threshold <= 100
    assert dataset.table == (dataset.table_name or dataset.name)


def test_posts_contract() -> None:
    posts = get_dataset("posts")

    assert posts.key == ("post_id", "creator")
    assert not posts.column("post_id").nullable
    assert not posts.column("creator").nullable
    assert posts.column_names == (
        "search_term",
        "post_id",
        "creator",
        "posted_date",
        "likes",
        "comments",
        "hashtags",
        "caption",
        "image_description",
        "post_url",
        "status",
    )
    types = {c.name: c.type for c in posts.columns if c.type != "string"}
    assert types == {"posted_date": "date", "likes": "long", "comments": "long"}
    assert posts.strategy == "insert_new"


def test_restaurants_contract() -> None:
    restaurants = get_dataset("restaurants")

    assert restaurants.key == ("restaurant_name", "city", "phone")
    assert not restaurants.column("restaurant_name").nullable
    assert not restaurants.column("city").nullable
    assert "posts" in restaurants.column("posts_count").aliases
    assert "posts" not in restaurants.column_names
    assert {c.name: c.type for c in restaurants.columns if c.type != "string"} == {
        "followers": "long",
        "posts_count": "long",
    }
    assert restaurants.column("phone").normalizer == "phone"
    assert restaurants.column("instagram_handle").normalizer == "handle"


def test_column_lookup_of_an_undeclared_name_raises_key_error() -> None:
    with pytest.raises(KeyError):
        get_dataset("posts").column("views")


# --- Dataset validation ---------------------------------------------------------------------------


def test_dataset_refuses_a_column_declared_twice() -> None:
    with pytest.raises(ValueError, match="declares a column twice"):
        Dataset(name="bad", file_patterns=("bad_*",), columns=(Column("a"), Column("a", "long")), key=("a",))


@pytest.mark.parametrize(
    ("key", "partition"),
    [(("missing",), ()), (("a",), (("when", "month"),))],
    ids=["unknown-key-column", "unknown-partition-column"],
)
def test_dataset_refuses_key_or_partition_on_undeclared_columns(
    key: tuple[str, ...], partition: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(ValueError, match="does not declare") as caught:
        Dataset(name="bad", file_patterns=("bad_*",), columns=(Column("a"),), key=key, partition=partition)  # type: ignore[arg-type]

    assert repr("bad") in str(caught.value)


def test_a_copy_of_a_contract_is_validated_too() -> None:
    with pytest.raises(ValueError, match="does not declare"):
        replace(get_dataset("posts"), key=("post_id", "owner"))


@pytest.mark.parametrize(
    ("name", "matches"),
    [("post_results_1.csv", True), ("Post_Results_1.csv", True), ("post_result_1.csv", False)],
    ids=["exact", "case-insensitive", "near-miss"],
)
def test_matches_is_a_case_insensitive_glob(name: str, matches: bool) -> None:
    assert get_dataset("posts").matches(name) is matches


@pytest.mark.parametrize("field", ["quality_weights", "quality_floors"], ids=["weights", "floors"])
def test_a_misspelt_quality_dimension_is_refused(field: str) -> None:
    # GIVEN a contract that names a dimension that does not exist
    # WHEN it is built
    # THEN it is refused, naming the misspelt dimension
    posts = get_dataset("posts")
    with pytest.raises(ValueError, match="acuracy"):
        replace(posts, **{field: {"acuracy": 0.5}})
