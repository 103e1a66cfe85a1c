"""Scanner predictability: chance for scanner-free embeddings, ~1 for scanner-determined ones."""

from __future__ import annotations

import numpy as np
import pytest

from scangen.metrics.predictability import scanner_predictability


def slides(scanner_w: float, seed: int = 0, n_spec: int = 30, n_scan: int = 5, dim: int = 16):
    rng = np.random.default_rng(seed)
    spec_vec, scan_vec = rng.normal(size=(n_spec, dim)), rng.normal(size=(n_scan, dim))
    spec, scan = (a.ravel() for a in np.meshgrid(np.arange(n_spec), np.arange(n_scan), indexing="ij"))
    x = spec_vec[spec] + scanner_w * scan_vec[scan] + 0.3 * rng.normal(size=(spec.size, dim))
    return x.astype(np.float32), np.array([f"sc{c}" for c in scan]), np.array([f"sp{s}" for s in spec])


def test_scanner_free_is_near_chance():
    res = scanner_predictability(*slides(0.0))
    assert res.chance == pytest.approx(0.2)
    assert abs(res.balanced_accuracy - res.chance) < 0.1


def test_scanner_determined_is_near_one():
    res = scanner_predictability(*slides(3.0))
    assert res.balanced_accuracy > 0.97
    assert res.n_splits == 5 and len(res.fold_balanced_accuracy) == 5


def test_deterministic_and_grouped():
    x, sc, sp = slides(0.5, seed=1)
    assert scanner_predictability(x, sc, sp, seed=3) == scanner_predictability(x, sc, sp, seed=3)
    res = scanner_predictability(x[:10], sc[:10], sp[:10], n_splits=5)
    assert res.n_splits == 2  # only two specimens -> two folds


def test_errors():
    x, sc, sp = slides(0.5)
    with pytest.raises(ValueError, match="at least two scanners"):
        scanner_predictability(x, np.full(len(sc), "A"), sp)
    with pytest.raises(ValueError, match="two specimens"):
        scanner_predictability(x, sc, np.full(len(sp), "s"))
    with pytest.raises(ValueError, match="differ in length"):
        scanner_predictability(x, sc[:-1], sp)
