"""CORAL: second moments matched to the reference scanner, reference untouched, Ledoit-Wolf
shrinkage equal to sklearn's, the reference rule and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_lw

from scangen.harmonise import fit_harmoniser, harmonise_bags
from scangen.harmonise.coral import ledoit_wolf_shrinkage
from test_harmonise_maps import make_bags


def _correlated_cohort(seed: int = 0, dim: int = 5, slides: int = 6, patches: int = 400):
    """Three scanners with different means and covariances (x = z @ M_b + m_b)."""
    rng = np.random.default_rng(seed)
    feats, scans = [], []
    for name in ("A", "B", "C"):
        mix = rng.normal(0.0, 1.0, size=(dim, dim)) + 2 * np.eye(dim)
        shift = rng.normal(0.0, 3.0, size=dim)
        for _ in range(slides):
            feats.append((rng.normal(size=(patches, dim)) @ mix + shift).astype(np.float32))
            scans.append(name)
    bags = make_bags(feats, scans)
    return bags, np.arange(len(bags))


def _moments(bags, name):
    rows = np.repeat(bags.slides["scanner"].to_numpy(), bags.lengths) == name
    x = bags.features[rows].astype(np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False, bias=True)


def test_every_scanner_gets_the_reference_mean_and_covariance() -> None:
    bags, fit = _correlated_cohort()
    maps = fit_harmoniser(bags, fit, "coral", reference="B", shrinkage=0.0)
    out = maps.apply(bags)
    mu_ref, cov_ref = _moments(bags, "B")
    for name in ("A", "B", "C"):
        mu, cov = _moments(out, name)
        np.testing.assert_allclose(mu, mu_ref, atol=1e-3 * (1 + np.abs(mu_ref).max()))
        np.testing.assert_allclose(cov, cov_ref, atol=1e-3 * np.abs(cov_ref).max())
    before = _moments(bags, "A")[1]
    assert np.abs(before - cov_ref).max() > 0.5 * np.abs(cov_ref).max()
    rows_b = np.repeat(bags.slides["scanner"].to_numpy(), bags.lengths) == "B"
    np.testing.assert_allclose(out.features[rows_b], bags.features[rows_b], atol=1e-4)


def test_ledoit_wolf_shrinkage_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 20)) @ rng.normal(size=(20, 20))
    xc = x - x.mean(axis=0)
    cov = xc.T @ xc / len(x)
    fourth = float(np.sum(np.sum(xc * xc, axis=1) ** 2))
    assert ledoit_wolf_shrinkage(cov, fourth, len(x)) == pytest.approx(sklearn_lw(x), rel=1e-9)


def test_reference_is_the_scanner_with_most_fit_slides() -> None:
    bags, fit = _correlated_cohort(slides=4)
    scanners = bags.slides["scanner"].to_numpy()
    fit_c_heavy = np.concatenate([np.flatnonzero(scanners == "A")[:2], np.flatnonzero(scanners == "B")[:3],
                                  np.flatnonzero(scanners == "C")])
    maps = fit_harmoniser(bags, fit_c_heavy, "coral")
    assert maps.details["reference"] == "C"
    np.testing.assert_array_equal(maps.linear[maps.scanners.index("C")], np.eye(bags.dim))
    assert 0.0 <= min(maps.details["shrinkage"].values()) <= max(maps.details["shrinkage"].values()) <= 1.0


def test_errors_name_the_problem() -> None:
    bags, fit = _correlated_cohort(slides=2)
    with pytest.raises(ValueError, match="reference scanner 'Z'"):
        harmonise_bags(bags, fit, "coral", reference="Z")
    with pytest.raises(ValueError, match="shrinkage"):
        harmonise_bags(bags, fit, "coral", shrinkage=1.5)
    few = make_bags([np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)] * 2, ["A", "B"])
    with pytest.raises(ValueError, match="singular"):
        harmonise_bags(few, np.array([0, 1]), "coral", shrinkage=0.0)
    assert np.isfinite(harmonise_bags(few, np.array([0, 1]), "coral").features).all()
