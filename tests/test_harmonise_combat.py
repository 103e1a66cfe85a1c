"""ComBat: known answers (an additive scanner shift removed), agreement with neuroCombat on the fit
set, the protected label, and clear errors."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from scangen.harmonise import fit_harmoniser, harmonise_bags
from test_harmonise_maps import make_bags, paired_cohort


def _spread_across_scanners(bags) -> float:
    """Largest per-feature range, over scanners, of one specimen's slide means (max over specimens)."""
    means = bags.mean_embeddings()
    spec = bags.slides["specimen_id"].to_numpy()
    return max(float(np.ptp(means[spec == s], axis=0).max()) for s in np.unique(spec))


def test_additive_scanner_shift_is_removed_exactly_without_eb() -> None:
    """x = base_s + shift_b: without shrinkage ComBat maps every scan of a specimen to the same point,
    fit and held-out specimens alike."""
    bags, _, fit = paired_cohort(shift=3.0)
    before = _spread_across_scanners(bags)
    out = harmonise_bags(bags, fit, "combat", eb=False)
    assert before > 3.0
    assert _spread_across_scanners(out) < 1e-4


def test_additive_scanner_shift_is_removed_with_eb() -> None:
    bags, _, fit = paired_cohort(shift=3.0, dim=40)
    out = harmonise_bags(bags, fit, "combat")
    assert _spread_across_scanners(out) < 0.05 * _spread_across_scanners(bags)


def test_fit_set_matches_neurocombat_output() -> None:
    """With no protected covariate, the fitted per-scanner map on the fit slides' means equals the
    harmonised data neuroCombat returns for them."""
    from neuroCombat import neuroCombat

    bags, _, fit = paired_cohort(scale=(1.0, 1.5, 0.7), dim=12)
    maps = fit_harmoniser(bags, fit, "combat", label_column=None)
    sub = bags.select(fit)
    means = sub.mean_embeddings().astype(np.float64)
    covars = pd.DataFrame({"scanner": sub.slides["scanner"].to_numpy()})
    with contextlib.redirect_stdout(io.StringIO()):
        ref = neuroCombat(means.T, covars, "scanner")["data"].T
    np.testing.assert_allclose(maps.transform(means, sub.slides), ref, atol=1e-4)


def _imbalanced_cohort(seed: int = 0):
    """Scanner A's slides are 80% positive, B's 20%; label adds +2 to feature 0; B adds +3 everywhere."""
    rng = np.random.default_rng(seed)
    feats, scans, labels = [], [], []
    for name, share, shift in (("A", 0.8, 0.0), ("B", 0.2, 3.0)):
        for i in range(40):
            y = int(i < share * 40)
            x = rng.normal(0.0, 1.0, size=(20, 4)) + rng.normal(0.0, 0.5, size=4) + shift
            x[:, 0] += 2.0 * y
            feats.append(x.astype(np.float32))
            scans.append(name)
            labels.append(y)
    return make_bags(feats, scans, labels), np.arange(80)


def test_protected_label_keeps_its_effect_while_the_scanner_shift_goes() -> None:
    bags, fit = _imbalanced_cohort()
    y = bags.slides["egfr"].to_numpy()
    scanner = bags.slides["scanner"].to_numpy()

    def class_means(b):
        m = b.mean_embeddings()[:, 0]
        return {(s, c): m[(scanner == s) & (y == c)].mean() for s in "AB" for c in (0, 1)}

    kept = class_means(harmonise_bags(bags, fit, "combat"))
    for c in (0, 1):
        assert abs(kept[("A", c)] - kept[("B", c)]) < 0.3
    assert abs((kept[("A", 1)] - kept[("A", 0)]) - 2.0) < 0.4
    naive = class_means(harmonise_bags(bags, fit, "combat", label_column=None))
    assert abs(naive[("A", 0)] - naive[("B", 0)]) > 0.6  # unprotected: the label imbalance is "corrected" away


def test_errors_name_the_problem() -> None:
    bags, _, fit = paired_cohort(n_specimens=2)
    with pytest.raises(ValueError, match="fewer than 2 fit slides"):
        harmonise_bags(bags, fit, "combat")
    x = [np.random.default_rng(i).normal(size=(5, 3)).astype(np.float32) for i in range(4)]
    confounded = make_bags(x, ["A", "A", "B", "B"], labels=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="constant within every scanner"):
        harmonise_bags(confounded, np.arange(4), "combat")
    with pytest.raises(ValueError, match="label_column 'kras'"):
        harmonise_bags(confounded, np.arange(4), "combat", label_column="kras")
    assert harmonise_bags(confounded, np.arange(4), "combat", label_column=None).features.shape == (20, 3)
