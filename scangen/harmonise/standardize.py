"""Per-scanner standardisation of patch embeddings.

For scanner b, mu_b and sigma_b (D,) are the mean and population SD of every patch embedding of
the fit slides scanned by b (each patch weighs the same); a patch x of scanner b becomes
    y = (x - mu_b) / sigma_b,
so every scanner's fit patches have zero mean and unit SD per feature. A feature that is constant
within a scanner's fit patches (sigma = 0) is only centred. Written by hand: two streamed passes
(means, then centred squares) keep memory at a few chunks, which sklearn's StandardScaler per
scanner group would not (it needs each group's rows as one array).
"""

from __future__ import annotations

import numpy as np

from scangen.harmonise.maps import ScannerMaps
from scangen.harmonise.streaming import centred_second_moments, fit_scanners, scanner_means
from scangen.store.bags import _BagArrays


def fit_standardize(bags: _BagArrays, positions: np.ndarray) -> ScannerMaps:
    """Fit per-scanner mean/SD on the patches of the bags at `positions` (sorted, validated)."""
    scanners, codes = fit_scanners(bags.slides, positions)
    means, counts = scanner_means(bags, positions, codes, len(scanners))
    sq, _ = centred_second_moments(bags, positions, codes, means, full=False)
    var = sq / counts[:, None]
    scale = np.ones_like(var)
    np.divide(1.0, np.sqrt(var), out=scale, where=var > 0)
    return ScannerMaps(
        method="standardize",
        scanners=scanners,
        center=means,
        linear=scale,
        offset=np.zeros_like(means),
        fit_slide_ids=tuple(bags.slides[positions]["slide_id"].to_list()),
        details={"patches": dict(zip(scanners, counts.tolist()))},
    )
