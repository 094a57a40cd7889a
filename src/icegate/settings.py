"""One typed settings object, read once from ``ICEGATE_*`` environment variables.

Logic never reads ``os.environ``: it receives a :class:`Settings`. Explicit arguments (CLI options,
tests) beat the environment by way of :meth:`Settings.with_overrides`.
"""

from __future__ import annotations

import codecs
import difflib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from icegate.constants import CATALOG_DB, COMMIT_ATTEMPTS, COMMIT_BACKOFF_SECONDS, ENV_PREFIX, WAREHOUSE_PREFIX
from icegate.dimensions import QUALITY_DIMENSIONS
from icegate.sizing import DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_STREAM_BYTES

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Guards applied by the parser before and while it decodes a file."""

    #: What a default deployment's memory holds (``icegate.sizing``); a deployment sets its own.
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES
    #: Memory follows the decoded size, so a gzip or XLSX file may expand to no more than a plain one.
    max_uncompressed_bytes: int = DEFAULT_MAX_INPUT_BYTES
    max_rows: int = 5_000_000
    max_columns: int = 256
    max_field_bytes: int = 1 * MiB
    #: A CSV/TSV file of an ``insert_new``/``append`` dataset bigger than this (as stored), or one the limits
    #: above would refuse, is streamed: every stage takes it a slice at a time, in memory that does not grow
    #: with it (``icegate.streamed``).
    stream_above_bytes: int = 128 * MiB
    #: The largest streamed file (decoded bytes): what a default deployment's ``/tmp`` takes (``icegate.sizing``).
    max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES

    def __post_init__(self) -> None:
        # A limit under 1 refuses every file, each dead-lettered for it: refused once, here, naming the variable.
        # Streaming every CSV/TSV file (stream_above_bytes 0) is a choice, not a mistake.
        for limit in fields(self):
            value, least = getattr(self, limit.name), 0 if limit.name == "stream_above_bytes" else 1
            if value < least:
                raise ValueError(f"{ENV_PREFIX}{limit.name.upper()}={value} must be at least {least}")


#: Settings fields read from several variables (or parsed specially) rather than from their own name.
_COMPOSITE_FIELDS = ("limits", "quality_weights", "quality_floors", "quality_thresholds", "catalog_properties")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with defaults that run the embedded local mode."""

    #: Local folder or ``s3://bucket[/prefix]`` holding ``processing/``, ``warehouse/``, ``dlq/``.
    lake_root: str = "lake"
    #: pyiceberg catalog type: ``sql`` (SQLite or PostgreSQL), ``glue``, ``rest``, ...
    catalog_type: str = "sql"
    catalog_name: str = "icegate"
    #: SQLAlchemy URI for the ``sql`` catalog, or the REST endpoint. Default: ``<lake>/catalog.db``.
    catalog_uri: str | None = None
    #: Iceberg warehouse location. Default: ``<lake>/warehouse``.
    warehouse: str | None = None
    #: Extra pyiceberg catalog properties (``ICEGATE_CATALOG_PROPERTIES`` as a JSON object).
    catalog_properties: Mapping[str, str] = field(default_factory=dict)
    namespace: str = "instagram_db"
    #: S3 endpoint override (S3-compatible stores, moto in tests).
    s3_endpoint: str | None = None
    #: Encoding of text sources that are not UTF-8; unset means "UTF-8 (or a UTF-16 BOM) or refuse".
    source_encoding: str | None = None
    limits: Limits = field(default_factory=Limits)
    #: Weight overrides by dimension name (``ICEGATE_QUALITY_WEIGHT_<DIMENSION>``).
    quality_weights: Mapping[str, float] = field(default_factory=dict)
    #: Floor overrides (0–1) by dimension name (``ICEGATE_QUALITY_FLOOR_<DIMENSION>``).
    quality_floors: Mapping[str, float] = field(default_factory=dict)
    #: Threshold overrides by dataset name (``ICEGATE_QUALITY_THRESHOLD_<DATASET>``).
    quality_thresholds: Mapping[str, float] = field(default_factory=dict)
    #: Attempts of the loader's own commit loop before it raises ``CommitConflict`` (the retry budgets live
    #: together in ``icegate.constants``).
    commit_attempts: int = COMMIT_ATTEMPTS
    commit_backoff_seconds: float = COMMIT_BACKOFF_SECONDS
    #: Most files one loader commits together (its own and those waiting for the same table).
    group_max_files: int = 50
    #: Region (ISO 3166 code) a phone number written without ``+`` is read in.
    phone_region: str = "US"
    #: The stage Lambdas rebuild the HTML report after a file only when it is older than this (a burst would
    #: otherwise read the whole ledger once per file); 0 rebuilds after every file (``icegate.report``).
    report_min_interval_seconds: int = 60

    def __post_init__(self) -> None:
        if self.report_min_interval_seconds < 0:
            raise ValueError(
                f"{ENV_PREFIX}REPORT_MIN_INTERVAL_SECONDS={self.report_min_interval_seconds} must be 0 (rebuild the "
                "report after every file) or a number of seconds"
            )
        if not self.is_local:
            scheme, _, rest = self.lake_root.partition("://")
            if scheme != "s3" or not rest.split("/")[0]:
                raise ValueError(
                    f"the lake root {self.lake_root!r} ({ENV_PREFIX}LAKE_ROOT or --lake) is not a local folder or "
                    "s3://bucket[/prefix]"
                )
        # Refused here, once, rather than by every file that would meet them (each dead-lettered for it).
        for name, value, least in (
            ("COMMIT_ATTEMPTS", self.commit_attempts, 1),
            ("GROUP_MAX_FILES", self.group_max_files, 1),
            ("COMMIT_BACKOFF_SECONDS", self.commit_backoff_seconds, 0),
        ):
            if value < least:
                raise ValueError(f"{ENV_PREFIX}{name}={value} must be at least {least}")
        if self.source_encoding:
            try:
                codecs.lookup(self.source_encoding)
            except LookupError:
                raise ValueError(
                    f"{ENV_PREFIX}SOURCE_ENCODING={self.source_encoding!r} is not a known codec; use a Python codec "
                    "name such as utf-8, cp1252 or latin-1"
                ) from None
        for dimension, weight in self.quality_weights.items():
            if weight < 0:
                raise ValueError(f"{ENV_PREFIX}QUALITY_WEIGHT_{dimension.upper()}={weight} must not be negative")
        if set(self.quality_weights) >= set(QUALITY_DIMENSIONS) and not any(self.quality_weights.values()):
            raise ValueError(f"{ENV_PREFIX}QUALITY_WEIGHT_*: at least one weight must be above 0")
        for dimension, floor in self.quality_floors.items():
            if not 0 <= floor <= 1:
                raise ValueError(f"{ENV_PREFIX}QUALITY_FLOOR_{dimension.upper()}={floor} must lie in 0–1")
        for dataset, threshold in self.quality_thresholds.items():
            if not 0 <= threshold <= 100:
                raise ValueError(f"{ENV_PREFIX}QUALITY_THRESHOLD_{dataset.upper()}={threshold} must lie in 0–100")
        import phonenumbers  # here: its 70 ms import is not paid by `icegate --help`

        if self.phone_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"{ENV_PREFIX}PHONE_REGION={self.phone_region!r} is not a region phonenumbers knows; "
                "use a two-letter ISO 3166 code such as US, GB or DE"
            )

    @property
    def is_local(self) -> bool:
        return "://" not in self.lake_root or self.lake_root.startswith("file://")

    def lake_path(self, *parts: str) -> str:
        """A location under the lake root, as a local path or an ``s3://`` URI."""
        root = self.lake_root.removeprefix("file://").rstrip("/")
        return "/".join((root, *parts))

    def resolved_catalog_uri(self) -> str:
        if self.catalog_uri:
            return self.catalog_uri
        if self.catalog_type == "sql" and self.is_local:
            # Percent-encoded, as SQLAlchemy decodes it: a '?' or '#' in a folder's name would start the URI's
            # query or fragment (the catalog landing in another folder, shared by another lake), a '%' be decoded.
            return f"sqlite:///{quote(str(Path(self.lake_path(CATALOG_DB)).resolve()))}"
        raise ValueError(
            f"{ENV_PREFIX}CATALOG_URI must be set for a {self.catalog_type!r} catalog on lake root {self.lake_root!r}"
        )

    def resolved_warehouse(self) -> str:
        """The warehouse location exactly as pyiceberg will write under it.

        A local warehouse is a plain absolute path, never a ``file://`` URI: ``Path.as_uri()``
        percent-encodes (``my lake`` → ``my%20lake``) and pyiceberg writes that literal folder, and
        a ``#`` or ``?`` in a URI would be cut off as a fragment or query. pyiceberg splits object
        store URIs the same way, so a ``#`` or ``?`` there is refused rather than lost.
        """
        location = self.warehouse or self.lake_path(WAREHOUSE_PREFIX)
        if "://" not in location:
            return str(Path(location).resolve())
        if location.startswith("file://"):
            return location
        if unsafe := sorted({c for c in location if c in "#?"}):
            raise ValueError(
                f"the warehouse location {location!r} holds {' and '.join(map(repr, unsafe))}, which Iceberg "
                "cannot keep in an object key; choose a lake root or ICEGATE_WAREHOUSE without them"
            )
        return location

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values leave a field as it is."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        _refuse_unknown(env, known_variables())

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        simple: dict[str, Any] = {}
        for f in fields(cls):
            raw = get(f.name.upper())
            if raw is None or f.name in _COMPOSITE_FIELDS:
                continue
            simple[f.name] = _convert(raw, f.type, ENV_PREFIX + f.name.upper())

        if "phone_region" in simple:
            simple["phone_region"] = simple["phone_region"].upper()
        limit_values = {
            f.name: _convert(raw, "int", ENV_PREFIX + f.name.upper())
            for f in fields(Limits)
            if (raw := get(f.name.upper())) is not None
        }
        weights = {
            dim: _convert(raw, "float", f"{ENV_PREFIX}QUALITY_WEIGHT_{dim.upper()}")
            for dim in QUALITY_DIMENSIONS
            if (raw := get(f"QUALITY_WEIGHT_{dim.upper()}")) is not None
        }
        floor_prefix = ENV_PREFIX + "QUALITY_FLOOR_"
        floors = {
            dim: _convert(raw, "float", f"{floor_prefix}{dim.upper()}")
            for dim in QUALITY_DIMENSIONS
            if (raw := get(f"QUALITY_FLOOR_{dim.upper()}")) is not None
        }
        threshold_prefix = ENV_PREFIX + "QUALITY_THRESHOLD_"
        thresholds = {
            name.removeprefix(threshold_prefix).lower(): _convert(value, "float", name)
            for name, value in env.items()
            if name.startswith(threshold_prefix) and value
        }
        properties: dict[str, str] = {}
        if raw_props := get("CATALOG_PROPERTIES"):
            try:
                properties = {str(k): str(v) for k, v in json.loads(raw_props).items()}
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"{ENV_PREFIX}CATALOG_PROPERTIES must be a JSON object: {exc}") from exc
        return cls(
            **simple,
            limits=Limits(**limit_values),
            quality_weights=weights,
            quality_floors=floors,
            quality_thresholds=thresholds,
            catalog_properties=properties,
        )


def known_variables() -> frozenset[str]:
    """Every ``ICEGATE_*`` variable :meth:`Settings.from_env` reads."""
    # Imported here: the dataset contracts import polars, which `icegate --help` must not pay for.
    from icegate.datasets import all_datasets

    names = {f.name.upper() for f in fields(Settings) if f.name not in _COMPOSITE_FIELDS} | {"CATALOG_PROPERTIES"}
    names |= {f.name.upper() for f in fields(Limits)}
    names |= {f"QUALITY_{kind}_{dimension.upper()}" for kind in ("WEIGHT", "FLOOR") for dimension in QUALITY_DIMENSIONS}
    names |= {f"QUALITY_THRESHOLD_{dataset.upper()}" for dataset in all_datasets()}
    return frozenset(ENV_PREFIX + name for name in names)


def _refuse_unknown(env: Mapping[str, str], known: frozenset[str]) -> None:
    """A misspelt variable would otherwise leave its default in place without a word."""
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
    if not unknown:
        return
    problems = []
    for name in unknown:
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        problems.append(f"{name} (did you mean {closest[0]}?)" if closest else name)
    raise ValueError(
        f"unknown setting{'s' if len(unknown) > 1 else ''} {'; '.join(problems)}: "
        f"no {ENV_PREFIX}* variable of that name exists; rename or unset it"
    )


def _convert(raw: str, type_name: object, name: str) -> Any:
    kind = str(type_name)
    try:
        if kind.startswith("int"):
            return int(raw.replace("_", ""))
        if kind.startswith("float"):
            value = float(raw)
            if not math.isfinite(value):
                # NaN compares False with everything: a NaN threshold would pass every file.
                raise ValueError(f"{raw!r} is not finite")
            return value
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.split(' ')[0]}") from exc
    return raw


@cache
def load_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
