"""Fixtures for the CDK tests: the stack synthesised once per session, in both landing-bucket variants."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # infra_support, whatever pytest's import mode

from infra_support import CREATED_CONTEXT, IMPORTED_CONTEXT, Synth, synthesise


@pytest.fixture(scope="session")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The stack with two imported landing buckets (the scrapers' existing ones), cdk-nag applied."""
    return synthesise(IMPORTED_CONTEXT, tmp_path_factory.mktemp("cdk-imported"))


@pytest.fixture(scope="session")
def created(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The stack with its defaults: it creates the landing bucket itself, cdk-nag applied."""
    return synthesise(CREATED_CONTEXT, tmp_path_factory.mktemp("cdk-created"))


@pytest.fixture(scope="session", params=["imported", "created"])
def any_synth(request: pytest.FixtureRequest) -> Synth:
    """Both variants, for the properties that must hold either way."""
    synth: Synth = request.getfixturevalue(request.param)
    return synth
