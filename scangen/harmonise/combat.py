"""ComBat (Johnson, Li & Rabinovic 2007): empirical-Bayes location/scale adjustment per scanner.

Fit (library): `neuroCombat.neuroCombat` (J.-P. Fortin's implementation, the engine of
neuroHarmonize; sample variances with ddof=1 as R's sva::ComBat) on the slide-mean embeddings of
the fit slides: samples = fit WSIs, features = the D embedding dimensions (the empirical-Bayes
priors pool over them), batch = scanner label, and the task label as a protected categorical
covariate, so a scanner whose fit slides carry more positives does not lose that signal.
Why slide means, not patches: ComBat's model treats samples as independent draws of one batch and
the label as a property of each sample; a WSI is the unit that carries both (its patches are
neither independent nor individually labelled), and a patch-level fit would hand the slide's label
to every patch.

Apply (a few lines here, because neuroCombat's own `neuroCombatFromTraining` fails on NumPy 2 and
neuroHarmonize pins NumPy < 2): with grand mean alpha, pooled SD sigma, and scanner estimates
gamma*_b, delta*_b (D,), the fitted adjustment
    y = ((x - m0) / sigma - gamma*_b) / sqrt(delta*_b) * sigma + m0
is an affine map per scanner, with m0 = alpha + mean_fit(X) beta: the label term at the fit set's
mean, exactly as `neuroCombatFromTraining` does. Held-out slides have no label at test time, and
training slides must not receive a label-dependent shift either (it would leak the label into the
features), so every slide gets the same label-free map. Being affine, it applies to every patch
and the mean of the harmonised patches equals the harmonised slide mean.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd

from scangen.harmonise.maps import ScannerMaps
from scangen.harmonise.streaming import fit_scanners, slide_means
from scangen.store.bags import _BagArrays


def _label_values(bags: _BagArrays, positions: np.ndarray, label_column: str | None) -> np.ndarray | None:
    """Labels of the fit slides as strings, or None when no covariate is protected."""
    if label_column is None:
        return None
    slides = bags.slides
    if label_column not in slides.columns:
        raise ValueError(
            f"combat: label_column {label_column!r} is not a slides column ({slides.columns}); "
            "pass label_column=None to protect no covariate"
        )
    values = slides[positions][label_column]
    if values.null_count():
        raise ValueError(f"combat: column {label_column!r} has {values.null_count()} missing labels among the fit slides")
    return values.cast(str).to_numpy().astype(str)


def _check_design(scanners: np.ndarray, labels: np.ndarray | None, label_column: str | None) -> None:
    """Each scanner needs two fit slides; a label constant within every scanner is confounded with it."""
    names, counts = np.unique(scanners, return_counts=True)
    if np.any(counts < 2):
        few = dict(zip(names[counts < 2].tolist(), counts[counts < 2].tolist()))
        raise ValueError(f"combat: scanners {few} have fewer than 2 fit slides; ComBat needs a variance per scanner")
    if labels is None or np.unique(labels).size < 2:
        return
    if all(np.unique(labels[scanners == s]).size == 1 for s in names):
        raise ValueError(
            f"combat: label {label_column!r} is constant within every scanner of the fit set, so it cannot be "
            "told apart from the scanner effect; pass label_column=None"
        )


def fit_combat(
    bags: _BagArrays, positions: np.ndarray, *, label_column: str | None = "egfr", eb: bool = True
) -> ScannerMaps:
    """Fit ComBat on the slide means of the bags at `positions`; see the module docstring.

    label_column: slides column protected as a categorical covariate (None: none); eb: empirical
    Bayes shrinkage of the scanner estimates (False: plain per-scanner location/scale estimates).
    """
    from neuroCombat import neuroCombat

    scanners, codes = fit_scanners(bags.slides, positions)
    batch = np.asarray(scanners)[codes]
    labels = _label_values(bags, positions, label_column)
    _check_design(batch, labels, label_column)
    means = slide_means(bags, positions)
    covars = pd.DataFrame({"scanner": batch})
    categorical = []
    if labels is not None and np.unique(labels).size > 1:
        covars["label"] = labels
        categorical = ["label"]
    with contextlib.redirect_stdout(io.StringIO()):
        est = neuroCombat(means.T, covars, "scanner", categorical_cols=categorical, eb=eb)["estimates"]
    order = [list(np.asarray(est["batches"]).astype(str)).index(s) for s in scanners]
    gamma = np.asarray(est["gamma.star"], dtype=np.float64)[order]
    delta = np.asarray(est["delta.star"], dtype=np.float64)[order]
    sigma = np.sqrt(np.asarray(est["var.pooled"], dtype=np.float64)[:, 0])
    label_term = np.asarray(est["mod.mean"], dtype=np.float64).mean(axis=1)  # mean_fit(X) beta, (D,)
    m0 = np.asarray(est["stand.mean"], dtype=np.float64)[:, 0] + label_term
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(delta)) and np.all(delta > 0) and np.all(sigma > 0)):
        raise ValueError("combat: the fit produced non-finite or non-positive estimates (constant features?)")
    return ScannerMaps(
        method="combat",
        scanners=scanners,
        center=m0[None, :] + sigma[None, :] * gamma,
        linear=1.0 / np.sqrt(delta),
        offset=np.repeat(m0[None, :], len(scanners), axis=0),
        fit_slide_ids=tuple(bags.slides[positions]["slide_id"].to_list()),
        details={
            "gamma_star": gamma, "delta_star": delta, "label_column": label_column if categorical else None,
            "eb": eb, "level": "slide_mean", "slides": {s: int(np.sum(batch == s)) for s in scanners},
        },
    )
