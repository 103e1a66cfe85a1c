"""Fixed vocabulary shared by every module: scanners, magnifications, cohorts, simulated models."""

from __future__ import annotations

SCANNERS_40X: tuple[str, ...] = ("AT2", "GT450", "S360MD", "P1000", "B300", "DP200")
"""Short codes of the six 40x scanners of the multi-scanner cohort."""

SCANNER_NAMES: dict[str, str] = {
    "AT2": "Leica Aperio AT2",
    "GT450": "Leica Aperio GT450",
    "S360MD": "Hamamatsu NanoZoomer S360MD",
    "P1000": "3DHistech P1000",
    "B300": "Philips UFS B300",
    "DP200": "Roche Ventana DP200",
}

MAGNIFICATIONS: tuple[int, ...] = (40, 20)
MAGNIFICATION_PAIR_SCANNER = "GT450"
"""The one scanner that scans at both 40x and 20x (magnification CoV is computed on it)."""

COHORTS: tuple[str, ...] = ("task", "multiscanner")

SIMULATED_MODELS: dict[str, int] = {
    "phikon-sim": 768,
    "uni-sim": 1024,
    "virchow-sim": 1280,
    "gigapath-sim": 1536,
    "hoptimus0-sim": 1536,
}
"""Simulated stand-ins for Phikon, UNI, Virchow, Gigapath, H-optimus-0 and their embedding sizes."""

REAL_MODEL_OF: dict[str, str] = {
    "phikon-sim": "Phikon",
    "uni-sim": "UNI",
    "virchow-sim": "Virchow",
    "gigapath-sim": "Gigapath",
    "hoptimus0-sim": "H-Optimus-0",
}
