"""`harmonise_bags`: fit a feature harmonisation on training slides and apply it to every slide.

Methods ("none" passes the bags through):
- "standardize": per-scanner mean/SD of patch embeddings (`standardize.py`);
- "combat": empirical-Bayes location/scale per scanner on slide means, label protected (`combat.py`);
- "coral": each scanner's mean and covariance moved to a reference scanner's (`coral.py`).
DANN is not a feature map: its adversary trains with the model (`dann.py`).
The fit reads the bags at `fit_positions` only (features and slide rows); the fitted per-scanner
maps then apply to all bags, one slide at a time, using only that slide's scanner label.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from scangen.harmonise.combat import fit_combat
from scangen.harmonise.coral import fit_coral
from scangen.harmonise.maps import ScannerMaps
from scangen.harmonise.standardize import fit_standardize
from scangen.harmonise.streaming import fit_positions_array
from scangen.store.bags import _BagArrays

B = TypeVar("B", bound=_BagArrays)

METHODS: tuple[str, ...] = ("standardize", "combat", "coral")
"""Feature-map methods `harmonise_bags` fits; "none" is accepted as the identity."""

_FITTERS = {"standardize": fit_standardize, "combat": fit_combat, "coral": fit_coral}


def check_method(method: str) -> str:
    """`method` if it names a feature map (or "none"); ValueError naming the choices otherwise."""
    if method != "none" and method not in _FITTERS:
        raise ValueError(f"method: expected 'none' or one of {METHODS}, got {method!r}")
    return method


def fit_harmoniser(bags: _BagArrays, fit_positions: np.ndarray, method: str, **options: Any) -> ScannerMaps:
    """Fit `method` on the bags at `fit_positions` (ints or a bool mask); options go to its fitter
    (combat: label_column, eb; coral: reference, shrinkage)."""
    if check_method(method) == "none":
        raise ValueError("method: 'none' fits nothing; call harmonise_bags, which passes the bags through")
    positions = fit_positions_array(fit_positions, len(bags))
    return _FITTERS[method](bags, positions, **options)


def harmonise_bags(bags: B, fit_positions: np.ndarray, method: str, **options: Any) -> B:
    """Bags whose features are harmonised by `method` fitted on the bags at `fit_positions` only.

    Returns `bags` itself for "none"; otherwise new bags of the same type sharing slides, offsets and
    per-row fields, with one new feature array of the input's float dtype.
    """
    if check_method(method) == "none":
        return bags
    return fit_harmoniser(bags, fit_positions, method, **options).apply(bags)
