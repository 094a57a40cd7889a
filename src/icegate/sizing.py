"""How large a file each stage can take in its memory: the one home of the memory-per-input-MB ratio.

A file held whole is in every stage's memory (Arrow/polars), so its peak grows in a line with the
input: ``peak MiB = base + slope x input MB``. (A big CSV/TSV file is streamed instead, a slice at a
time: its memory stays flat, and the stages' ``/tmp`` bounds it: ``max_stream_bytes`` below.) The
lines below are measured by ``benchmarks/bench_memory.py``; the CDK app derives each deployment's file-size limit
(``ICEGATE_MAX_BYTES``) from its functions' memory with them, and ``icegate.settings`` derives the local
default from the default memory, so a file that loads locally also loads in a default deployment.

Standard library only: ``cdk/`` imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from icegate.constants import DEAD_LETTER, LOAD, PARSE, SCORE, VALIDATE

#: Input sizes are in MB (10^6 bytes), as S3 and ``ls`` report files; memory in MiB, as Lambda counts it.
MB: Final = 1_000_000


@dataclass(frozen=True)
class MemoryProfile:
    """A stage's peak RSS as a line in the input's size."""

    #: Interpreter, imports and fixed buffers: the peak of an (almost) empty file.
    base_mib: float
    #: Growth per MB of (uncompressed) input.
    mib_per_mb: float

    def peak_mib(self, input_bytes: int) -> float:
        return self.base_mib + self.mib_per_mb * input_bytes / MB


#: Least-squares lines over posts CSVs of 23, 46, 93 and 185 MB, each stage in a fresh process
#: (``benchmarks/bench_memory.py``; the load is into an empty table). The dead-letter stage copies
#: server-side and holds no data, so the file's size does not bound it.
STAGE_PROFILES: Final[Mapping[str, MemoryProfile]] = MappingProxyType(
    {
        PARSE: MemoryProfile(base_mib=211, mib_per_mb=3.51),
        VALIDATE: MemoryProfile(base_mib=221, mib_per_mb=3.95),
        SCORE: MemoryProfile(base_mib=209, mib_per_mb=3.83),
        LOAD: MemoryProfile(base_mib=231, mib_per_mb=4.50),
    }
)

#: The parser's line for formats that cost more memory per decoded byte than CSV (the other stages see
#: the same table whatever the format). JSON goes through Python objects: about 2.7x CSV per byte.
#: XLSX (1.8 MiB per unzipped MB) and Parquet (limited by its in-memory size) cost less than CSV.
PARSE_FORMAT_PROFILES: Final[Mapping[str, MemoryProfile]] = MappingProxyType(
    {
        "json": MemoryProfile(base_mib=162, mib_per_mb=9.58),
        "ndjson": MemoryProfile(base_mib=162, mib_per_mb=9.00),
    }
)

#: The predicted peak may take at most this share of a function's memory. The rest is margin for what
#: the benchmark does not see: the Lambda runtime's own share of the sandbox, wider rows, JSON and XLSX
#: decoding heavier than CSV, a loader merging into a large table, and allocator fragmentation.
MEMORY_SHARE: Final = 2 / 3

#: Memory (MB) of each stage's function by default: the CDK app's defaults, and what the local
#: default file-size limit is derived from.
DEFAULT_MEMORY_MB: Final[Mapping[str, int]] = MappingProxyType(
    {PARSE: 2048, VALIDATE: 2048, SCORE: 2048, LOAD: 3008, DEAD_LETTER: 512}
)


def format_weight(fmt: str) -> float:
    """How many CSV bytes one decoded byte of ``fmt`` weighs in the parser's memory (at least 1).

    A file of this format may decode to at most ``ICEGATE_MAX_UNCOMPRESSED_BYTES / weight`` bytes; since
    its base is no higher than CSV's, the parser's peak then stays under CSV's at the full limit.
    """
    profile = PARSE_FORMAT_PROFILES.get(fmt)
    if profile is None:
        return 1.0
    return max(1.0, profile.mib_per_mb / STAGE_PROFILES[PARSE].mib_per_mb)


def stage_max_input_bytes(stage: str, memory_mb: int) -> int:
    """The largest input one stage takes in ``memory_mb``, margin included (0: not even an empty file)."""
    profile = STAGE_PROFILES[stage]
    usable_mib = memory_mb * MEMORY_SHARE - profile.base_mib
    return max(0, math.floor(usable_mib / profile.mib_per_mb * MB))


def max_input_bytes(memory_mb: Mapping[str, int]) -> int:
    """The largest input every data stage takes with these memory settings: the smallest of theirs."""
    return min(stage_max_input_bytes(stage, memory_mb[stage]) for stage in STAGE_PROFILES)


def limiting_stage(memory_mb: Mapping[str, int]) -> str:
    """The stage whose memory sets the limit (the first in pipeline order on a tie)."""
    return min(STAGE_PROFILES, key=lambda stage: stage_max_input_bytes(stage, memory_mb[stage]))


#: The local default of ``ICEGATE_MAX_BYTES``: what a default deployment takes.
DEFAULT_MAX_INPUT_BYTES: Final = max_input_bytes(DEFAULT_MEMORY_MB)

#: The data stages' ``/tmp`` (MiB, Lambda's most): a streamed file passes through it as scratch Parquet.
EPHEMERAL_STORAGE_MB: Final = 10_240
#: Scratch a stage holds per decoded byte of a streamed file: at most its input and its output Parquet at
#: once, each smaller than the text it came from (lz4-compressed columns); 1.0 leaves that as margin.
STREAM_SCRATCH_PER_BYTE: Final = 1.0


def max_stream_bytes(ephemeral_storage_mb: int) -> int:
    """The largest streamed file (decoded bytes) a stage's ``/tmp`` takes: memory no longer bounds it."""
    return math.floor(ephemeral_storage_mb * 1024 * 1024 / STREAM_SCRATCH_PER_BYTE)


#: The local default of ``ICEGATE_MAX_STREAM_BYTES``: what a default deployment takes.
DEFAULT_MAX_STREAM_BYTES: Final = max_stream_bytes(EPHEMERAL_STORAGE_MB)
