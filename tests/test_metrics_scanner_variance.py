"""scanner_variance: exact decomposition on hand-made logits, invariances, and errors."""

from __future__ import annotations

import numpy as np
import pytest

from scangen.metrics.scanner_variance import scanner_variance


def _grid(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten a specimens x scanners table into (values, specimen, scanner)."""
    s, c = np.meshgrid(np.arange(table.shape[0]), np.arange(table.shape[1]), indexing="ij")
    return table.ravel(), np.char.add("s", s.ravel().astype(str)), np.char.add("c", c.ravel().astype(str))


def test_additive_logits_have_no_residual_and_recover_offsets() -> None:
    a = np.array([-2.0, 0.5, 1.5])  # specimen effects
    o = np.array([0.3, -0.1, -0.2])  # scanner offsets (sum 0)
    res = scanner_variance(*_grid(a[:, None] + o[None, :]))
    assert res.residual_sd == pytest.approx(0.0, abs=1e-12)
    assert [res.offsets[f"c{i}"] for i in range(3)] == pytest.approx(o.tolist())
    assert res.offset_sd == pytest.approx(float(o.std()))
    assert res.between_sd == pytest.approx(float(a.std()))
    assert res.within_sd == pytest.approx(float(o.std()))  # every specimen spreads by the offsets alone
    assert res.scanner_share == pytest.approx(float(o.std() / a.std()))
    assert res.median_abs_mean == pytest.approx(1.5)
    assert (res.n_specimens, res.n_scanners) == (3, 3)


def test_hand_computed_residual() -> None:
    table = np.array([[0.0, 2.0], [1.0, 1.0]])
    # means 1, 1; deviations [-1, 1], [0, 0]; offsets -0.5, 0.5; residuals [-0.5, 0.5], [0.5, -0.5]
    res = scanner_variance(*_grid(table))
    assert res.offsets == pytest.approx({"c0": -0.5, "c1": 0.5})
    assert res.residual_sd == pytest.approx(0.5)
    assert res.within_sd == pytest.approx(0.5)  # (1 + 0) / 2
    assert res.between_sd == pytest.approx(0.0)
    assert res.scanner_share > 1e9  # no spread between specimens: share is huge but finite


def test_share_is_invariant_to_scale_and_shift_unlike_cov() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(8, 6)) + rng.normal(size=(8, 1)) * 3
    base = scanner_variance(*_grid(table))
    moved = scanner_variance(*_grid(2.5 * table - 4.0))
    assert moved.scanner_share == pytest.approx(base.scanner_share)
    assert moved.residual_sd == pytest.approx(2.5 * base.residual_sd)


def test_missing_scans_and_row_order() -> None:
    values, spec, scan = _grid(np.arange(12, dtype=float).reshape(4, 3) ** 1.5)
    keep = np.ones(12, bool)
    keep[[2, 7]] = False  # two specimens miss one scanner each
    perm = np.random.default_rng(1).permutation(int(keep.sum()))
    a = scanner_variance(values[keep], spec[keep], scan[keep])
    b = scanner_variance(values[keep][perm], spec[keep][perm], scan[keep][perm])
    assert a == b


def test_rescans_are_averaged_per_scanner() -> None:
    table = np.array([[0.0, 2.0], [1.0, 3.0], [5.0, 5.0]])
    once = scanner_variance(*_grid(table))
    values, spec, scan = _grid(table)
    # specimen s0 rescanned on c0 at 0.0 +- 1.0: the pair's mean stays 0.0
    twice = scanner_variance(np.concatenate([values[1:], [-1.0, 1.0]]), np.concatenate([spec[1:], ["s0", "s0"]]),
                             np.concatenate([scan[1:], ["c0", "c0"]]))
    assert twice == once


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        scanner_variance([1.0, 2.0], ["a", "a"], ["x"])
    with pytest.raises(ValueError, match="at least two scanners"):
        scanner_variance([1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"], ["x", "x", "x", "y"])
    with pytest.raises(ValueError, match="at least two scanners"):
        scanner_variance([1.0, 2.0, 3.0], ["a", "a", "b"], ["x", "y", "x"])
    with pytest.raises(ValueError, match="at least two specimens"):
        scanner_variance([1.0, 2.0], ["a", "a"], ["x", "y"])
