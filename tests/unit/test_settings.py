"""Settings: defaults that run the local lake, and ``ICEGATE_*`` environment variables read once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from icegate.lake import build_catalog
from icegate.settings import QUALITY_DIMENSIONS, Limits, Settings, known_variables, load_settings

# --- defaults -------------------------------------------------------------------------------------


def test_defaults_run_the_embedded_local_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no environment and a working directory WHEN the defaults are used
    monkeypatch.chdir(tmp_path)
    settings = Settings()

    # THEN the lake is ./lake with a SQLite catalog in it, found by absolute path
    assert settings.is_local
    assert settings.lake_root == "lake"
    assert settings.catalog_type == "sql"
    assert settings.namespace == "instagram_db"
    assert settings.resolved_catalog_uri() == f"sqlite:///{tmp_path.resolve() / 'lake' / 'catalog.db'}"
    assert settings.resolved_warehouse() == str(tmp_path.resolve() / "lake" / "warehouse")
    assert settings.limits == Limits()


def test_catalog_uri_stays_absolute_when_the_working_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative lake root is pinned when resolved, so every stage finds the same catalog."""
    monkeypatch.chdir(tmp_path)
    uri = Settings(lake_root="lake").resolved_catalog_uri()

    assert Path(uri.removeprefix("sqlite:///")).is_absolute()


def test_the_settings_fixture_points_at_a_temporary_lake(settings: Settings, lake: Path) -> None:
    assert settings.resolved_catalog_uri() == f"sqlite:///{lake.resolve() / 'catalog.db'}"
    assert settings.lake_path("processing", "run-1") == f"{lake}/processing/run-1"


@pytest.mark.parametrize(
    ("root", "is_local", "path"),
    [
        ("lake", True, "lake/dlq/x"),
        ("/data/lake/", True, "/data/lake/dlq/x"),
        ("file:///data/lake", True, "/data/lake/dlq/x"),
        ("s3://bucket", False, "s3://bucket/dlq/x"),
        ("s3://bucket/prefix/", False, "s3://bucket/prefix/dlq/x"),
    ],
    ids=["relative", "absolute-trailing-slash", "file-uri", "s3-bucket", "s3-prefix"],
)
def test_lake_path_joins_under_the_root(root: str, is_local: bool, path: str) -> None:
    settings = Settings(lake_root=root)

    assert settings.is_local is is_local
    assert settings.lake_path("dlq", "x") == path


@pytest.mark.parametrize("root", ["s3://", "s3:///lake", "gs://bucket"], ids=["no-bucket", "empty-bucket", "gs"])
def test_a_lake_root_that_is_neither_a_folder_nor_an_s3_bucket_is_refused_once(root: str) -> None:
    # GIVEN a lake root with no bucket, or on a store the lake does not write to
    # WHEN settings are made with it
    # THEN they are refused, naming the root, instead of every file dead-lettering to "s3:/dlq/..."
    with pytest.raises(ValueError, match="is not a local folder or s3://bucket") as caught:
        Settings(lake_root=root)

    assert repr(root) in str(caught.value)


def test_s3_lake_keeps_an_s3_warehouse() -> None:
    assert Settings(lake_root="s3://lake-bucket").resolved_warehouse() == "s3://lake-bucket/warehouse"


def test_explicit_catalog_uri_and_warehouse_win() -> None:
    settings = Settings(lake_root="s3://lake", catalog_uri="postgresql+psycopg://db/iceberg", warehouse="s3://wh")

    assert settings.resolved_catalog_uri() == "postgresql+psycopg://db/iceberg"
    assert settings.resolved_warehouse() == "s3://wh"


@pytest.mark.parametrize(
    ("catalog_type", "root"),
    [("rest", "s3://lake"), ("glue", "s3://lake"), ("sql", "s3://lake"), ("rest", "lake")],
    ids=["rest-on-s3", "glue-on-s3", "sql-on-s3", "rest-on-local"],
)
def test_catalog_uri_is_required_when_it_cannot_be_derived(catalog_type: str, root: str) -> None:
    with pytest.raises(ValueError, match="ICEGATE_CATALOG_URI") as caught:
        Settings(lake_root=root, catalog_type=catalog_type).resolved_catalog_uri()

    assert repr(catalog_type) in str(caught.value)
    assert root in str(caught.value)


# --- from_env -------------------------------------------------------------------------------------


def test_from_env_with_nothing_set_equals_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_reads_every_kind_of_variable() -> None:
    # GIVEN an environment as CDK would set it on a Lambda
    env = {
        "ICEGATE_LAKE_ROOT": "s3://lake-bucket",
        "ICEGATE_CATALOG_TYPE": "glue",
        "ICEGATE_NAMESPACE": "analytics",
        "ICEGATE_COMMIT_ATTEMPTS": "3",
        "ICEGATE_COMMIT_BACKOFF_SECONDS": "0.5",
        "ICEGATE_MAX_ROWS": "1_000",
        "ICEGATE_MAX_BYTES": "2048",
        "ICEGATE_QUALITY_WEIGHT_ACCURACY": "40",
        "ICEGATE_QUALITY_WEIGHT_VALIDITY": "0",
        "ICEGATE_QUALITY_FLOOR_VALIDITY": "0.8",
        "ICEGATE_QUALITY_FLOOR_TIMELINESS": "0",
        "ICEGATE_QUALITY_THRESHOLD_POSTS": "85.5",
        "ICEGATE_QUALITY_THRESHOLD_RESTAURANTS": "60",
        "ICEGATE_CATALOG_PROPERTIES": '{"glue.region": "eu-west-1", "glue.max-retries": 5}',
        "UNRELATED": "x",
    }

    # WHEN read
    settings = Settings.from_env(env)

    # THEN each lands typed in its field
    assert settings.lake_root == "s3://lake-bucket"
    assert not settings.is_local
    assert settings.catalog_type == "glue"
    assert settings.namespace == "analytics"
    assert settings.commit_attempts == 3
    assert settings.commit_backoff_seconds == 0.5
    assert settings.limits == Limits(max_rows=1000, max_bytes=2048)
    assert settings.quality_weights == {"accuracy": 40.0, "validity": 0.0}
    assert settings.quality_floors == {"validity": 0.8, "timeliness": 0.0}
    assert settings.quality_thresholds == {"posts": 85.5, "restaurants": 60.0}
    assert settings.catalog_properties == {"glue.region": "eu-west-1", "glue.max-retries": "5"}


def test_from_env_treats_empty_values_as_unset() -> None:
    env = {"ICEGATE_LAKE_ROOT": "", "ICEGATE_MAX_ROWS": "", "ICEGATE_QUALITY_THRESHOLD_POSTS": ""}

    assert Settings.from_env(env) == Settings()


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEGATE_NAMESPACE", "from_process")

    assert Settings.from_env().namespace == "from_process"
    assert load_settings().namespace == "from_process"


def test_load_settings_reads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEGATE_NAMESPACE", "first")
    first = load_settings()
    monkeypatch.setenv("ICEGATE_NAMESPACE", "second")

    assert load_settings() is first


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ICEGATE_MAX_ROWS", "many"),
        ("ICEGATE_MAX_ROWS", "1.5"),
        ("ICEGATE_COMMIT_ATTEMPTS", "three"),
        ("ICEGATE_COMMIT_BACKOFF_SECONDS", "fast"),
        ("ICEGATE_QUALITY_WEIGHT_ACCURACY", "heavy"),
        ("ICEGATE_QUALITY_THRESHOLD_POSTS", "70%"),
        ("ICEGATE_QUALITY_THRESHOLD_POSTS", "nan"),
        ("ICEGATE_QUALITY_WEIGHT_TIMELINESS", "inf"),
        ("ICEGATE_QUALITY_FLOOR_VALIDITY", "nan"),
    ],
    ids=[
        "limit-word",
        "limit-fraction",
        "int-field",
        "float-field",
        "weight",
        "threshold-percent",
        "threshold-nan",
        "weight-infinite",
        "floor-nan",
    ],
)
def test_invalid_number_raises_naming_the_variable(variable: str, value: str) -> None:
    """A NaN threshold would compare False with every score and let every file through."""
    with pytest.raises(ValueError, match=variable) as caught:
        Settings.from_env({variable: value})

    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("misspelt", "closest"),
    [
        ("ICEGATE_QUALITY_THRESHOLD_POSTZ", "ICEGATE_QUALITY_THRESHOLD_POSTS"),
        ("ICEGATE_QUALITY_WEIGHT_ACURACY", "ICEGATE_QUALITY_WEIGHT_ACCURACY"),
        ("ICEGATE_LAKE_ROT", "ICEGATE_LAKE_ROOT"),
        ("ICEGATE_MAX_ROW", "ICEGATE_MAX_ROWS"),
        ("ICEGATE_PHONE_REGOIN", "ICEGATE_PHONE_REGION"),
    ],
    ids=["threshold-dataset", "weight-dimension", "simple", "limit", "phone-region"],
)
def test_an_unknown_variable_is_refused_naming_the_closest_valid_one(misspelt: str, closest: str) -> None:
    """Regression: a misspelt threshold (unlike a weight) was ignored, leaving the default gate in place."""
    # GIVEN a misspelt variable beside a correct one
    env = {misspelt: "40", "ICEGATE_QUALITY_WEIGHT_VALIDITY": "5"}

    # WHEN the settings are read  THEN it is refused by name, with the variable that was probably meant
    with pytest.raises(ValueError, match=misspelt) as caught:
        Settings.from_env(env)
    assert f"did you mean {closest}?" in str(caught.value)
    assert "VALIDITY" not in str(caught.value), "only the unknown variable is named"


def test_every_unknown_variable_is_named_at_once() -> None:
    with pytest.raises(ValueError, match="unknown settings") as caught:
        Settings.from_env({"ICEGATE_NAMESPCE": "x", "ICEGATE_ZZZ": "1"})

    assert "ICEGATE_NAMESPCE (did you mean ICEGATE_NAMESPACE?)" in str(caught.value)
    assert "ICEGATE_ZZZ" in str(caught.value)


def test_every_documented_variable_is_known() -> None:
    """The refusal must never hit a real setting: each one the README lists is accepted."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = set(re.findall(r"`(ICEGATE_[A-Z0-9_]+)`", readme))

    assert {"ICEGATE_S3_ENDPOINT", "ICEGATE_MAX_ROWS", "ICEGATE_PHONE_REGION"} <= documented
    assert documented <= known_variables()
    assert {"ICEGATE_QUALITY_THRESHOLD_POSTS", "ICEGATE_QUALITY_THRESHOLD_RESTAURANTS"} <= known_variables()


def test_every_known_variable_is_documented() -> None:
    """The other way round: a setting the README's table does not name is one nobody can find."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = set(re.findall(r"`(ICEGATE_[A-Z0-9_<>]+)`", readme))
    templates = {
        re.compile(name.replace("<DIMENSION>", "[A-Z]+").replace("<DATASET>", "[A-Z]+") + "$")
        for name in documented
        if "<" in name
    }

    undocumented = [
        name for name in known_variables() if name not in documented and not any(t.match(name) for t in templates)
    ]

    assert sorted(undocumented) == []


# --- phone region --------------------------------------------------------------------------------


def test_phone_region_defaults_to_us_and_reads_any_case() -> None:
    assert Settings.from_env({}).phone_region == "US"
    assert Settings.from_env({"ICEGATE_PHONE_REGION": "gb"}).phone_region == "GB"


def test_an_unknown_phone_region_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ICEGATE_PHONE_REGION='XX'.*ISO 3166"):
        Settings.from_env({"ICEGATE_PHONE_REGION": "xx"})


def test_misspelt_quality_floor_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="ICEGATE_QUALITY_FLOOR_VALIDTY") as caught:
        Settings.from_env({"ICEGATE_QUALITY_FLOOR_VALIDTY": "0.8"})

    assert "ICEGATE_QUALITY_FLOOR_VALIDITY?" in str(caught.value), "the message names the closest valid variable"


@pytest.mark.parametrize(
    "value",
    ["{not json", "[1, 2]", '"a string"', "null"],
    ids=["syntax-error", "array", "string", "null"],
)
def test_catalog_properties_must_be_a_json_object(value: str) -> None:
    with pytest.raises(ValueError, match="ICEGATE_CATALOG_PROPERTIES"):
        Settings.from_env({"ICEGATE_CATALOG_PROPERTIES": value})


# --- explicit overrides ---------------------------------------------------------------------------


def test_with_overrides_replaces_given_fields_and_ignores_none() -> None:
    base = Settings(lake_root="s3://lake", namespace="ns", catalog_uri="sqlite:///x.db")

    changed = base.with_overrides(lake_root="/tmp/lake", namespace=None, catalog_uri=None, commit_attempts=2)

    assert changed.lake_root == "/tmp/lake"
    assert changed.namespace == "ns"
    assert changed.catalog_uri == "sqlite:///x.db"
    assert changed.commit_attempts == 2
    assert base.lake_root == "s3://lake", "the original is left as it was"


def test_with_overrides_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        Settings().with_overrides(lake="x")


@pytest.mark.parametrize(
    "name", ["my lake", "100%", "lake#2", "lac-été"], ids=["space", "percent", "hash", "non-ascii"]
)
def test_a_local_warehouse_is_the_plain_path_not_a_percent_encoded_uri(tmp_path: Path, name: str) -> None:
    # GIVEN a lake folder whose name a URI would encode or cut WHEN the warehouse is resolved
    # THEN it is the folder itself, character for character
    assert Settings(lake_root=str(tmp_path / name)).resolved_warehouse() == str(tmp_path.resolve() / name / "warehouse")


@pytest.mark.parametrize(
    "name",
    ["lake?m", "lake%20", "lake#2", "my lake", "lac-été"],
    ids=["question-mark", "percent", "hash", "space", "non-ascii"],
)
def test_a_local_lakes_catalog_is_the_file_in_that_lake_whatever_its_folder_is_called(
    tmp_path: Path, name: str
) -> None:
    # GIVEN a lake folder whose name a URI would cut or decode, and a sibling whose name it would be cut to
    settings = Settings(lake_root=str(tmp_path / name))
    (tmp_path / name).mkdir()

    # WHEN its catalog is opened and holds a namespace
    build_catalog(settings).create_namespace("instagram_db")

    # THEN the catalog is the file in that folder, and no other file was made
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == [name, f"{name}/catalog.db"]


@pytest.mark.parametrize("root", ["s3://bucket/lake#2", "s3://bucket/why?"], ids=["hash", "question-mark"])
def test_an_object_store_warehouse_that_iceberg_would_cut_short_is_refused(root: str) -> None:
    with pytest.raises(ValueError, match="cannot keep in an object key"):
        Settings(lake_root=root).resolved_warehouse()


def test_an_object_store_warehouse_with_a_space_is_kept_as_is() -> None:
    assert Settings(lake_root="s3://bucket/my lake").resolved_warehouse() == "s3://bucket/my lake/warehouse"


# --- the report under bursts ---------------------------------------------------------------------


def test_report_min_interval_defaults_to_a_minute_and_reads_zero() -> None:
    # GIVEN no variable, then ICEGATE_REPORT_MIN_INTERVAL_SECONDS=0 WHEN read THEN a minute, then "every file"
    assert Settings.from_env({}).report_min_interval_seconds == 60
    assert Settings.from_env({"ICEGATE_REPORT_MIN_INTERVAL_SECONDS": "0"}).report_min_interval_seconds == 0


def test_a_negative_report_interval_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"ICEGATE_REPORT_MIN_INTERVAL_SECONDS=-1 must be 0"):
        Settings.from_env({"ICEGATE_REPORT_MIN_INTERVAL_SECONDS": "-1"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ICEGATE_COMMIT_ATTEMPTS": "0"}, "ICEGATE_COMMIT_ATTEMPTS=0 must be at least 1"),
        ({"ICEGATE_GROUP_MAX_FILES": "0"}, "ICEGATE_GROUP_MAX_FILES=0 must be at least 1"),
        ({"ICEGATE_COMMIT_BACKOFF_SECONDS": "-0.5"}, "ICEGATE_COMMIT_BACKOFF_SECONDS=-0.5 must be at least 0"),
        ({"ICEGATE_QUALITY_WEIGHT_ACCURACY": "-100"}, "ICEGATE_QUALITY_WEIGHT_ACCURACY=-100.0 must not be negative"),
        (
            {f"ICEGATE_QUALITY_WEIGHT_{dimension.upper()}": "0" for dimension in QUALITY_DIMENSIONS},
            "at least one weight must be above 0",
        ),
        ({"ICEGATE_QUALITY_FLOOR_VALIDITY": "1.5"}, "ICEGATE_QUALITY_FLOOR_VALIDITY=1.5 must lie in 0–1"),
        ({"ICEGATE_QUALITY_THRESHOLD_POSTS": "150"}, "ICEGATE_QUALITY_THRESHOLD_POSTS=150.0 must lie in 0–100"),
        ({"ICEGATE_MAX_ROWS": "-1"}, "ICEGATE_MAX_ROWS=-1 must be at least 1"),
        ({"ICEGATE_MAX_BYTES": "-1"}, "ICEGATE_MAX_BYTES=-1 must be at least 1"),
        ({"ICEGATE_MAX_UNCOMPRESSED_BYTES": "-2"}, "ICEGATE_MAX_UNCOMPRESSED_BYTES=-2 must be at least 1"),
        ({"ICEGATE_MAX_COLUMNS": "-3"}, "ICEGATE_MAX_COLUMNS=-3 must be at least 1"),
        ({"ICEGATE_MAX_FIELD_BYTES": "-4"}, "ICEGATE_MAX_FIELD_BYTES=-4 must be at least 1"),
        ({"ICEGATE_STREAM_ABOVE_BYTES": "-5"}, "ICEGATE_STREAM_ABOVE_BYTES=-5 must be at least 0"),
        ({"ICEGATE_MAX_STREAM_BYTES": "-6"}, "ICEGATE_MAX_STREAM_BYTES=-6 must be at least 1"),
        ({"ICEGATE_MAX_ROWS": "0"}, "ICEGATE_MAX_ROWS=0 must be at least 1"),
        ({"ICEGATE_SOURCE_ENCODING": "bogus"}, "ICEGATE_SOURCE_ENCODING='bogus' is not a known codec"),
        ({"ICEGATE_MAX_COLUMNS": "0"}, "ICEGATE_MAX_COLUMNS=0 must be at least 1"),
    ],
    ids=[
        "no-commit-attempt",
        "groups-of-none",
        "negative-backoff",
        "negative-weight",
        "all-weights-zero",
        "floor-over-1",
        "threshold-over-100",
        "negative-max-rows",
        "negative-max-bytes",
        "negative-max-uncompressed-bytes",
        "negative-max-columns",
        "negative-max-field-bytes",
        "negative-stream-above-bytes",
        "negative-max-stream-bytes",
        "no-row-allowed",
        "unknown-source-encoding",
        "no-column-allowed",
    ],
)
def test_a_setting_that_cannot_work_is_refused_before_any_file_meets_it(environ: dict[str, str], message: str) -> None:
    # GIVEN / WHEN settings no file could be loaded or scored under  THEN they are refused, naming the variable
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ)
