"""icegate.sizing: the largest input a stage takes in its memory, from the measured peak per input MB."""

from __future__ import annotations

import pytest

from icegate.constants import LOAD, PARSE, SCORE, VALIDATE
from icegate.sizing import (
    DEFAULT_MEMORY_MB,
    MB,
    MEMORY_SHARE,
    STAGE_PROFILES,
    limiting_stage,
    max_input_bytes,
    stage_max_input_bytes,
)

MEMORY_SETTINGS = (512, 1024, 2048, 3008, 4096, 10_240)


@pytest.mark.parametrize("memory_mb", MEMORY_SETTINGS, ids=[f"{m}MB" for m in MEMORY_SETTINGS])
@pytest.mark.parametrize("stage", sorted(STAGE_PROFILES))
def test_stage_limit_is_the_largest_input_whose_peak_fits_with_margin(stage: str, memory_mb: int) -> None:
    # GIVEN a stage's measured profile and a memory setting
    profile = STAGE_PROFILES[stage]
    # WHEN we ask for its largest input
    largest = stage_max_input_bytes(stage, memory_mb)
    # THEN its predicted peak fits the usable share of the memory, and one MB more would not
    assert profile.peak_mib(largest) <= memory_mb * MEMORY_SHARE
    if largest:
        assert profile.peak_mib(largest + MB) > memory_mb * MEMORY_SHARE


def test_scorer_at_its_old_1024_mb_cannot_take_the_185_mb_csv_it_ran_out_of_memory_on() -> None:
    # GIVEN the scorer's old memory (it peaked at ~950 MiB on a 185 MB CSV: no margin left)
    # WHEN we ask what it takes
    # THEN it is well under 185 MB
    assert stage_max_input_bytes(SCORE, 1024) < 185 * MB


def test_the_deployment_limit_is_set_by_its_tightest_stage() -> None:
    # GIVEN the default memory with the loader given far less than the others
    memory = {**DEFAULT_MEMORY_MB, LOAD: 1024}
    # WHEN we derive the limit
    # THEN it is the loader's, and below what any other stage would take
    assert limiting_stage(memory) == LOAD
    assert max_input_bytes(memory) == stage_max_input_bytes(LOAD, 1024)
    assert all(max_input_bytes(memory) < stage_max_input_bytes(s, memory[s]) for s in (PARSE, VALIDATE, SCORE))


def test_more_memory_never_lowers_the_limit() -> None:
    for stage in STAGE_PROFILES:
        limits = [stage_max_input_bytes(stage, m) for m in MEMORY_SETTINGS]
        assert limits == sorted(limits), stage
