"""Dataset contracts: the registry, file-name detection, and what each contract declares."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

import icegate.datasets as datasets_package
from icegate.datasets import Column, Dataset, NormalizeContext, all_datasets, detect_dataset, get_dataset
from icegate.datasets import _normalizers as normalizers
from icegate.dimensions import QUALITY_DIMENSIONS
from icegate.errors import UnknownDataset

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
    assert restaurants.column("phone").normalizer is normalizers.phone
    assert restaurants.column("instagram_handle").normalizer is normalizers.instagram_handle


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


# --- phone normaliser: what "the same phone" means in the restaurants key ---------------------------


def normal_phones(*values: str | None, region: str = "US") -> list[str | None]:
    return normalizers.phone(pa.chunked_array([list(values)], pa.string()), NormalizeContext(region)).to_pylist()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(212) 555-0100", "+12125550100"),
        ("+1 212-555-0100", "+12125550100"),
        ("212.555.0100", "+12125550100"),
        ("tel:+1-212-555-0100", "+12125550100"),
        ("212-555-0100 ext. 12", "+12125550100;ext=12"),
        ("1-800-FLOWERS", "+18003569377"),
        ("+44 20 7946 0958", "+442079460958"),
        ("555-CALL-NOW", "5552255669"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("n/a", "n/a"),
    ],
    ids=lambda value: repr(value),
)
def test_a_phone_is_e164_when_valid_and_its_dialled_digits_otherwise(raw: str, expected: str) -> None:
    # GIVEN / WHEN a phone as scraped  THEN its normal form
    assert normal_phones(raw) == [expected]


def test_distinct_vanity_numbers_stay_distinct() -> None:
    """Regression: every letter was dropped, so both became "555" and one restaurant was skipped."""
    # GIVEN two vanity numbers that share only their digits  WHEN normalised
    call_now, eat_good = normal_phones("555-CALL-NOW", "555-EAT-GOOD")

    # THEN they stay two phones, each the digits its letters dial
    assert call_now != eat_good
    assert (call_now, eat_good) == ("5552255669", "5553284663")


def test_spellings_of_one_number_are_one_phone_and_extensions_are_not() -> None:
    assert len(set(normal_phones("(212) 555-0100", "+1 212 555 0100", "212-555-0100"))) == 1
    assert len(set(normal_phones("212-555-0100 x1", "212-555-0100 x2", "212-555-0100"))) == 3


def test_a_number_without_country_code_is_read_in_the_configured_region() -> None:
    # GIVEN a London number written nationally  WHEN read in GB  THEN E.164 with +44; in US it is no valid number
    assert normal_phones("020 7946 0958", region="GB") == ["+442079460958"]
    assert normal_phones("020 7946 0958", region="US") == ["02079460958"]


def test_empty_phones_stay_null() -> None:
    assert normal_phones(None, "555-CALL-NOW", None) == [None, "5552255669", None]
