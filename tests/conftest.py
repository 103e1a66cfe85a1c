"""Shared fixtures: one tiny simulated cohort per test session (seconds to build)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny simulated multi-scanner store (all five simulated FMs), built once per session."""
    from scangen.simulate import simulate_cohort

    return simulate_cohort(tmp_path_factory.mktemp("tiny_store"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The smoke parameter set run by the pipeline once per test session into a fresh temporary root.

    Shared by tests/test_notebooks.py and tests/test_quarto_project.py. The root is new every session
    (no reuse through pytest's cache folder), so a clean clone in CI and a developer's checkout run
    the same thing: notebook 01 simulates the tiny store with the current code, then 02..06 execute.
    Returns the layout, the pipeline's report, the parameter set and the set's results folder.
    """
    from scangen.pipeline.layout import Layout
    from scangen.pipeline.runner import plan, run

    root = tmp_path_factory.mktemp("smoke_root")
    layout = Layout.under(root, sources_from=Layout.default())
    pset, _ = plan("smoke", layout)
    report = run("smoke", layout, log=lambda _msg: None)
    return {"layout": layout, "report": report, "pset": pset, "results": layout.results_dir("smoke")}


QUICK_FM = "hoptimus0-sim"
"""The FM of the per-head training test: the one Table 2 of the paper uses."""
SCANNER_SENSITIVE_FM = "phikon-sim"
"""The FM of the ScanGen-against-baseline test: the lowest robustness index of the five simulated FMs
(notebook 02 on the quick cohort: 0.41), as Phikon has among the five real ones (published 0.476)."""


@pytest.fixture(scope="session")
def quick_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick simulated cohort (seed 0) for QUICK_FM and SCANNER_SENSITIVE_FM, no registered tiles,
    built once per session: the smallest prepared cohort whose task cohort carries a learnable EGFR
    signal. Its embeddings equal those of the full quick store (`data/simulated/quick-seed0`)."""
    from scangen.simulate import simulate_cohort

    return simulate_cohort(tmp_path_factory.mktemp("quick"), size="quick", seed=0,
                           models=[QUICK_FM, SCANNER_SENSITIVE_FM], registered_tiles=False)


@pytest.fixture(scope="session")
def quick_bags(quick_store: Path):
    """Bags of QUICK_FM in the quick store."""
    from scangen.store import load_bags

    return load_bags(quick_store, QUICK_FM)
