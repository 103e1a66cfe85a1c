"""Shared fixtures: one tiny simulated cohort per test session (seconds to build)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny simulated multi-scanner store (all five simulated FMs), built once per session."""
    from scangen.simulate import simulate_cohort

    return simulate_cohort(tmp_path_factory.mktemp("tiny_store"), size="tiny", seed=0)
