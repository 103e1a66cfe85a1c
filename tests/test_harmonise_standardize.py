"""Per-scanner standardisation: known answers on hand-built bags."""

from __future__ import annotations

import numpy as np

from scangen.harmonise import fit_harmoniser, harmonise_bags
from test_harmonise_maps import make_bags, paired_cohort


def test_fit_patches_have_zero_mean_and_unit_sd_per_scanner() -> None:
    bags, _, fit = paired_cohort(scale=(1.0, 2.5, 0.4))
    out = harmonise_bags(bags, fit, "standardize")
    labels = bags.slides["scanner"].to_numpy()
    row_scanner = np.repeat(labels, bags.lengths)
    fit_rows = np.repeat(np.isin(np.arange(len(bags)), fit), bags.lengths)
    for name in ("A", "B", "C"):
        x = out.features[fit_rows & (row_scanner == name)].astype(np.float64)
        np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-5)


def test_held_out_slides_use_the_fitted_mean_and_sd() -> None:
    """Fitted mu_B, sigma_B equal numpy's over B's fit patches; a held-out patch mu_B + 2 sigma_B maps to 2."""
    bags, _, fit = paired_cohort()
    maps = fit_harmoniser(bags, fit, "standardize")
    b = maps.scanners.index("B")
    fit_b = [i for i in fit if bags.slides["scanner"][int(i)] == "B"]
    ref = np.concatenate([bags.bag(int(i)) for i in fit_b]).astype(np.float64)
    np.testing.assert_allclose(maps.center[b], ref.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(1.0 / maps.linear[b], ref.std(axis=0), rtol=1e-5)
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    probe = make_bags([np.stack([mu + 2 * sd, mu]).astype(np.float32)], ["B"])
    np.testing.assert_allclose(maps.apply(probe).features, [[2.0] * bags.dim, [0.0] * bags.dim], atol=1e-4)


def test_constant_feature_is_only_centred() -> None:
    x = [np.column_stack([np.full(5, 3.0), np.arange(5.0)]).astype(np.float32) for _ in range(2)]
    bags = make_bags(x, ["A", "A"])
    out = harmonise_bags(bags, np.array([0, 1]), "standardize")
    np.testing.assert_allclose(out.features[:, 0], 0.0)
    np.testing.assert_allclose(out.features[:, 1].std(), 1.0, atol=1e-6)
