"""Robustness index: known answers, agreement with croma (PathoROB re-implementation), errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scangen.metrics.robustness_index import (
    cosine_topk,
    encode_labels,
    knn_balanced_accuracy,
    pathorob_k_candidates,
    robustness_index,
)


def cohort(scanner_w: float, label_w: float, noise: float, seed: int = 0, n_spec: int = 20,
           n_scan: int = 4, per: int = 5, n_labels: int = 3, dim: int = 32):
    """Rows = (specimen, scanner, patch); embedding = label + scanner + noise directions."""
    rng = np.random.default_rng(seed)
    lab_vec = rng.normal(size=(n_labels, dim))
    scan_vec = rng.normal(size=(n_scan, dim))
    spec, scan, lab = np.meshgrid(np.arange(n_spec), np.arange(n_scan), np.arange(per), indexing="ij")
    spec, scan = spec.ravel(), scan.ravel()
    lab = rng.integers(n_labels, size=spec.size)
    x = label_w * lab_vec[lab] + scanner_w * scan_vec[scan] + noise * rng.normal(size=(spec.size, dim))
    return x.astype(np.float32), lab, np.array([f"sc{c}" for c in scan]), np.array([f"sp{s}" for s in spec])


def test_scanner_determined_cohort_has_ri_zero():
    x, lab, scan, spec = cohort(scanner_w=10.0, label_w=0.3, noise=0.3)
    res = robustness_index(x, lab, scan, spec)
    assert res.value == 0.0
    assert res.so == 0 and res.os > 0
    assert all(v == 0.0 for v in res.curve.values())


def test_scanner_free_cohort_has_ri_one():
    x, lab, scan, spec = cohort(scanner_w=0.0, label_w=5.0, noise=0.3)
    res = robustness_index(x, lab, scan, spec)
    assert res.value == 1.0
    assert res.knn_balanced_accuracy[res.k] == 1.0
    assert all(v == 1.0 for v in res.curve.values())


def test_ri_decreases_with_scanner_strength():
    values = [robustness_index(*cohort(w, 1.0, 1.0, seed=3), k=11).value for w in (0.0, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("seed,scanner_w", [(0, 0.6), (1, 1.0), (2, 0.3)])
def test_agrees_with_croma(seed: int, scanner_w: float):
    from croma import RI

    x, lab, scan, spec = cohort(scanner_w=scanner_w, label_w=1.0, noise=1.0, seed=seed)
    manifest = pd.DataFrame(
        {"sample_id": np.arange(len(lab)).astype(str), "image_path": "-", "label": lab.astype(str),
         "group_id": spec, "scanner": scan}
    )
    ks = [1, 3, 5, 7, 9, 11, 21, 31, 41]
    ref = RI.compute(x, manifest, confounder_column="scanner", k_candidates=ks)
    ref_curve = RI.compute_curve(x, manifest, confounder_column="scanner", k_values=ks)
    ours = robustness_index(x, lab.astype(str), scan, spec, k_candidates=ks)
    assert ours.k == ref.k
    assert ours.value == pytest.approx(ref.value, abs=1e-12)
    assert ours.support == pytest.approx(ref.support, abs=1e-12)
    for k in ks:
        assert ours.curve[k] == pytest.approx(ref_curve[k], abs=1e-12)


def test_own_specimen_is_never_a_neighbour():
    x, lab, scan, spec = cohort(1.0, 1.0, 1.0)
    neigh, sim = cosine_topk(x, 15, exclude_group=encode_labels(spec, "spec"))
    assert (neigh >= 0).all()
    assert not (spec[neigh] == spec[:, None]).any()
    assert (np.diff(sim, axis=1) <= 1e-6).all()


def test_knn_vote_ties_go_to_first_seen_label():
    labels = np.array([0, 1, 0, 1])
    neigh = np.array([[1, 2], [0, 3], [1, 0], [0, 2]])
    bacc = knn_balanced_accuracy(labels, neigh, [1, 2])
    assert bacc[1] == 0.0  # every nearest neighbour has the other label
    assert bacc[2] == 0.5  # 1-1 ties -> label 0


def test_given_k_and_candidates():
    x, lab, scan, spec = cohort(0.5, 1.0, 1.0)
    res = robustness_index(x, lab, scan, spec, k=7)
    assert res.k == 7 and res.k_selected_by == "given" and list(res.curve) == [7]
    assert pathorob_k_candidates(41) == (1, 3, 5, 7, 9, 11, 21, 31)


def test_deterministic():
    x, lab, scan, spec = cohort(0.7, 1.0, 1.0, seed=5)
    assert robustness_index(x, lab, scan, spec) == robustness_index(x, lab, scan, spec)


def test_errors_name_the_problem():
    x, lab, scan, spec = cohort(0.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="biological label"):
        robustness_index(x, None, scan, spec)
    with pytest.raises(ValueError, match="rows"):
        robustness_index(x[:-1], lab, scan, spec)
    with pytest.raises(ValueError, match="NaN"):
        robustness_index(x, lab.astype(float) * np.nan, scan, spec)
    with pytest.raises(ValueError, match="k must be"):
        robustness_index(x, lab, scan, spec, k=len(lab))
    bad = x.copy()
    bad[3] = 0
    with pytest.raises(ValueError, match="all zeros"):
        robustness_index(bad, lab, scan, spec)
