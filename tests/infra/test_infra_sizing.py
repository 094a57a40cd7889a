"""Memory vs file-size limit: each function's memory holds the largest file the deployment lets through."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App
from infra_support import Synth, synthesise

from cdk.config import PipelineConfig
from icegate.constants import ENV_MAX_BYTES, ENV_MAX_UNCOMPRESSED_BYTES, HANDLERS, SCORE
from icegate.settings import Limits, Settings
from icegate.sizing import MB, MEMORY_SHARE, STAGE_PROFILES, STREAM_SCRATCH_PER_BYTE


def _deployed(synth: Synth) -> dict[str, dict[str, Any]]:
    """Stage -> its function's properties in the template."""
    return {stage: synth.doc["Resources"][lid]["Properties"] for stage, lid in synth.functions_by_stage.items()}


def _limits_as_deployed(properties: dict[str, Any]) -> Limits:
    """The limits the function's code reads: icegate.settings over the function's environment."""
    return Settings.from_env(properties["Environment"]["Variables"]).limits


def test_every_data_stage_holds_the_largest_file_the_deployment_lets_through(any_synth: Synth) -> None:
    # GIVEN the synthesised functions: their memory and the limits their environment sets
    functions = _deployed(any_synth)
    for stage, profile in STAGE_PROFILES.items():
        limits = _limits_as_deployed(functions[stage])
        memory = functions[stage]["MemorySize"]
        # WHEN a file of exactly the limit goes through the stage
        largest = max(limits.max_bytes, limits.max_uncompressed_bytes)
        # THEN its measured peak, with the margin, fits the function's memory
        assert profile.peak_mib(largest) <= memory * MEMORY_SHARE, (
            f"{stage}: {largest / MB:.0f} MB needs ~{profile.peak_mib(largest):.0f} MiB, has {memory} MB"
        )


def test_every_function_reads_the_same_limit_derived_from_the_memory(any_synth: Synth) -> None:
    # GIVEN the stack's settings
    config = any_synth.stack.config
    # WHEN we read each function's environment
    env = {stage: p["Environment"]["Variables"] for stage, p in _deployed(any_synth).items()}
    # THEN every function has the one limit that the configured memory allows, for raw and decoded bytes
    assert set(env) == set(HANDLERS)
    assert {e[ENV_MAX_BYTES] for e in env.values()} == {str(config.max_file_bytes)}
    assert {e[ENV_MAX_UNCOMPRESSED_BYTES] for e in env.values()} == {str(config.max_file_bytes)}


def test_less_memory_for_one_stage_lowers_the_limit_of_the_whole_deployment(tmp_path: Any) -> None:
    # GIVEN the scorer as it was deployed before (1024 MB: ~950 MiB peak on a 185 MB CSV)
    synth = synthesise({"stack_name": "IcegateSmallScorer", "functions": {SCORE: {"memory_mb": 1024}}}, tmp_path)
    # WHEN we read the parser's limit
    limits = _limits_as_deployed(_deployed(synth)["parse"])
    # THEN the parser refuses a 185 MB file instead of letting the scorer run out of memory
    assert limits.max_bytes < 185 * MB
    assert limits.max_bytes == synth.stack.config.max_file_bytes
    assert synth.stack.config.max_file_bytes < PipelineConfig().max_file_bytes


def test_default_deployment_and_local_mode_take_the_same_largest_file() -> None:
    # GIVEN the default deployment and the local default limits
    # WHEN we compare their limits
    # THEN a file that loads locally is not refused by a default deployment, nor the other way round
    assert PipelineConfig().max_file_bytes == Limits().max_bytes == Limits().max_uncompressed_bytes


def test_memory_too_small_for_any_file_is_refused_naming_the_stage() -> None:
    # GIVEN context that leaves the validator 256 MB, under the ~221 MiB it takes before any data plus margin
    app = App(context={"functions": {"validate": {"memory_mb": 256}}})
    # WHEN the stack reads it
    # THEN it refuses, naming the stage's memory setting
    with pytest.raises(ValueError, match=r"functions\.validate\.memory_mb"):
        PipelineConfig.from_context(app.node)


def test_every_data_stage_has_the_scratch_disk_the_largest_streamed_file_needs(any_synth: Synth) -> None:
    # GIVEN the synthesised functions: their /tmp and the streamed-file limit their environment sets
    functions = _deployed(any_synth)
    for stage in STAGE_PROFILES:
        limits = _limits_as_deployed(functions[stage])
        scratch_mib = functions[stage]["EphemeralStorage"]["Size"]
        # WHEN a streamed file of exactly the limit goes through the stage
        # THEN its scratch Parquet fits the stage's /tmp
        assert limits.max_stream_bytes * STREAM_SCRATCH_PER_BYTE <= scratch_mib * 1024 * 1024, stage
        # AND streaming begins where the memory-derived limit would refuse a file
        assert limits.stream_above_bytes <= limits.max_bytes < limits.max_stream_bytes, stage
