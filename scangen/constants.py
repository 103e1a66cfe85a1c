"""The simulated cohort's vocabulary (scanners, magnifications, cohorts, models) and known scanner aliases.

A store's own vocabulary (any scanners, magnifications and task) is read from its data by
`scangen.store.vocabulary`; the names here are the simulator's and the alias table that maps common
spellings of known scanners to one code.
"""

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

SCANNER_ALIASES: dict[str, str] = {
    "Aperio AT2": "AT2",
    "Aperio GT450": "GT450",
    "GT 450": "GT450",
    "NanoZoomer S360MD": "S360MD",
    "NanoZoomer S360": "S360MD",
    "Hamamatsu S360MD": "S360MD",
    "Pannoramic 1000": "P1000",
    "3DHistech Pannoramic 1000": "P1000",
    "UFS B300": "B300",
    "Philips B300": "B300",
    "Ventana DP200": "DP200",
    "Roche DP200": "DP200",
}
"""Other spellings of the known scanners (matched ignoring case, spaces, '-', '_' and '.'; the codes and
`SCANNER_NAMES` match too), e.g. "Philips UFS B300", "UFS-B300" and "ufs_b300" all give "B300"."""

MAGNIFICATIONS: tuple[int, ...] = (40, 20)
MAGNIFICATION_PAIR_SCANNER = "GT450"
"""The simulated cohort's one scanner at both 40x and 20x (real stores: detected from the data by
`scangen.store.vocabulary`)."""

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
