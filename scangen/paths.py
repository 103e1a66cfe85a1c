"""Every folder the project reads or writes, in one place.

The repository root is found from this file; `SCANGEN_ROOT` overrides it (e.g. for an installed
package used from another working directory).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT: Path = Path(os.environ.get("SCANGEN_ROOT", Path(__file__).resolve().parent.parent))
DATA: Path = ROOT / "data"
SIMULATED_DATA: Path = DATA / "simulated"
NOTEBOOKS: Path = ROOT / "notebooks"
PARAMS: Path = ROOT / "params"
BUILD: Path = ROOT / "build"
EXECUTED_NOTEBOOKS: Path = BUILD / "notebooks"
NOTEBOOK_RUNS: Path = BUILD / "runs"
"""Executed notebooks of every parameter set, `runs/<set>/` (the pipeline's cache)."""
FAILED_NOTEBOOKS: Path = BUILD / "failed"
"""Executed copies of notebooks that failed, `failed/<set>/`, kept for inspection."""
BUILD_TMP: Path = BUILD / "tmp"
RESULTS: Path = ROOT / "results"
PAPER: Path = ROOT / "paper"


def results_dir(param_set: str) -> Path:
    """Folder holding the result tables and figures of one parameter set."""
    return RESULTS / param_set


def simulated_store(size: str, seed: int) -> Path:
    """Folder of the simulated store generated at `size` with `seed`."""
    return SIMULATED_DATA / f"{size}-seed{seed}"


def relative(path: Path | str) -> Path:
    """`path` relative to the project root when it lies inside it (else unchanged): what notebooks
    print and write into result files, so that neither names this machine's folders."""
    path = Path(path)
    try:
        return path.resolve().relative_to(ROOT.resolve())
    except ValueError:
        return path
