"""The formats icegate reads: file suffix -> parser, in one registry.

Adding a format means one module in this package and one entry in :data:`FORMATS`.
``icegate.constants.SUPPORTED_SUFFIXES`` keeps a copy of the suffixes for the CDK app (which must not
import pyarrow) and the folder walk; a test ties it to this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

import pyarrow as pa

from icegate.errors import UnsupportedFormat
from icegate.parse.delimited import decode_csv
from icegate.parse.json_records import decode_json
from icegate.parse.parquet import decode_parquet
from icegate.parse.xlsx import decode_xlsx
from icegate.settings import Limits

#: (data, file, limits, encoding) -> every source column as strings under its header, and the format found.
Decoder = Callable[[bytes, str, Limits, str | None], tuple[pa.Table, str]]


@dataclass(frozen=True)
class Format:
    #: Reported in ``ParsedTable.format``.
    name: str
    decode: Decoder


def _csv(data: bytes, file: str, limits: Limits, encoding: str | None) -> tuple[pa.Table, str]:
    return decode_csv(data, file, limits=limits, encoding=encoding), "csv"


def _tsv(data: bytes, file: str, limits: Limits, encoding: str | None) -> tuple[pa.Table, str]:
    return decode_csv(data, file, limits=limits, delimiter="\t", encoding=encoding), "tsv"


def _xlsx(data: bytes, file: str, limits: Limits, encoding: str | None) -> tuple[pa.Table, str]:
    return decode_xlsx(data, file, limits=limits), "xlsx"


def _json(data: bytes, file: str, limits: Limits, encoding: str | None) -> tuple[pa.Table, str]:
    # A .json file holding one object per line is read, and reported, as NDJSON.
    return decode_json(data, file, limits=limits, encoding=encoding)


def _ndjson(data: bytes, file: str, limits: Limits, encoding: str | None) -> tuple[pa.Table, str]:
    return decode_json(data, file, limits=limits, encoding=encoding, lines=True)


def _parquet(data: bytes, file: str, limits: Limits, encoding: str | None) -> tuple[pa.Table, str]:
    return decode_parquet(data, file, limits=limits), "parquet"


_NDJSON = Format("ndjson", _ndjson)

#: File suffix (lower case, after an optional :data:`COMPRESSED_SUFFIX`) -> its format.
FORMATS: Final[Mapping[str, Format]] = {
    ".csv": Format("csv", _csv),
    ".tsv": Format("tsv", _tsv),
    ".xlsx": Format("xlsx", _xlsx),
    ".json": Format("json", _json),
    ".ndjson": _NDJSON,
    ".jsonl": _NDJSON,
    ".parquet": Format("parquet", _parquet),
}
#: Any format may arrive gzip-compressed under this extra suffix (recognised by its magic bytes).
COMPRESSED_SUFFIX: Final = ".gz"


def format_for(name: str) -> Format:
    """The format named by the file's suffix (case-insensitive, a trailing ``.gz`` ignored)."""
    base = PurePosixPath(name.replace("\\", "/")).name.lower()
    suffix = PurePosixPath(base.removesuffix(COMPRESSED_SUFFIX)).suffix
    try:
        return FORMATS[suffix]
    except KeyError:
        supported = ", ".join(FORMATS)
        what = f"suffix {suffix!r}" if suffix else "no suffix"
        raise UnsupportedFormat(
            f"the file has {what}; supported: {supported} (each optionally gzip-compressed, {COMPRESSED_SUFFIX})",
            file=name,
        ) from None


def detect_format(name: str) -> str:
    """The name of the format :func:`format_for` finds."""
    return format_for(name).name
