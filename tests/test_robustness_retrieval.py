"""Cross-scanner tile retrieval (plismbench) and WSI-level same-specimen retrieval."""

from __future__ import annotations

import numpy as np
import pytest

from scangen.metrics.retrieval import cross_scanner_retrieval, wsi_retrieval


def tiles(scanner_w: float, tile_w: float, noise: float, seed: int = 0, n_spec: int = 4,
          n_scan: int = 3, m: int = 16, dim: int = 24):
    """Registered tiles: embedding = tile direction (shared by twins) + scanner direction + noise."""
    rng = np.random.default_rng(seed)
    scan_vec = rng.normal(size=(n_scan, dim))
    tile_vec = rng.normal(size=(n_spec, m, dim))
    spec, scan, tid = (a.ravel() for a in np.meshgrid(np.arange(n_spec), np.arange(n_scan), np.arange(m), indexing="ij"))
    x = tile_w * tile_vec[spec, tid] + scanner_w * scan_vec[scan] + noise * rng.normal(size=(spec.size, dim))
    return x.astype(np.float32), tid, np.array([f"sc{c}" for c in scan]), np.array([f"sp{s}" for s in spec])


def test_scanner_free_tiles_retrieve_their_twin():
    res = cross_scanner_retrieval(*tiles(0.0, 1.0, 0.01))
    assert res.mean_top_k == {1: 1.0, 3: 1.0, 5: 1.0, 10: 1.0}
    assert res.mean_cosine > 0.99
    assert res.pairs.height == 3  # 3 scanners -> 3 pairs
    assert res.pairs["n_specimens"].to_list() == [4, 4, 4]


def test_scanner_determined_tiles_never_retrieve_their_twin():
    res = cross_scanner_retrieval(*tiles(10.0, 0.1, 0.1))
    assert res.mean_top_k == {1: 0.0, 3: 0.0, 5: 0.0, 10: 0.0}


def test_topk_is_monotone_and_matches_brute_force():
    x, tid, sc, sp = tiles(1.0, 1.0, 1.0, seed=2, n_spec=1, n_scan=2, m=12)
    res = cross_scanner_retrieval(x, tid, sc, sp, ks=(1, 3, 5, 10))
    vals = [res.mean_top_k[k] for k in (1, 3, 5, 10)]
    assert vals == sorted(vals) and 0.0 < vals[0] < 1.0
    # brute force: rank of the twin among the pooled tiles, self excluded
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    twin = np.r_[np.arange(12, 24), np.arange(0, 12)]
    rank = (sim > sim[np.arange(24), twin][:, None]).sum(axis=1)
    for k in (1, 3, 5, 10):
        assert res.mean_top_k[k] == pytest.approx(float((rank < k).mean()), abs=1e-6)
    assert res.mean_cosine == pytest.approx(float((xn[:12] * xn[12:]).sum(1).mean()), abs=1e-5)


def test_scanner_pool_is_harder_than_specimen_pool_and_queries_subsample():
    x, tid, sc, sp = tiles(0.6, 1.0, 0.6, seed=4, n_spec=6, m=20)
    big = cross_scanner_retrieval(x, tid, sc, sp, pool="scanner")
    small = cross_scanner_retrieval(x, tid, sc, sp, pool="specimen")
    assert all(small.mean_top_k[k] >= big.mean_top_k[k] for k in (1, 3, 5, 10))
    assert small.mean_top_k[1] > big.mean_top_k[1]
    assert big.mean_cosine == pytest.approx(small.mean_cosine)
    sub = cross_scanner_retrieval(x, tid, sc, sp, max_queries=30, seed=1)
    assert sub.pairs["n_queries"].to_list() == [60, 60, 60]
    assert sub.mean_top_k == cross_scanner_retrieval(x, tid, sc, sp, max_queries=30, seed=1).mean_top_k
    assert abs(sub.mean_top_k[10] - big.mean_top_k[10]) < 0.15
    with pytest.raises(ValueError, match="pool must be"):
        cross_scanner_retrieval(x, tid, sc, sp, pool="slide")


def test_duplicate_tile_ids_are_rejected():
    x, tid, sc, sp = tiles(0.0, 1.0, 0.1)
    tid = tid.copy()
    tid[1] = tid[0]
    with pytest.raises(ValueError, match="appears more than once"):
        cross_scanner_retrieval(x, tid, sc, sp)


def wsis(scanner_w: float, spec_w: float, seed: int = 0, n_spec: int = 12, n_scan: int = 4, dim: int = 16):
    rng = np.random.default_rng(seed)
    spec_vec, scan_vec = rng.normal(size=(n_spec, dim)), rng.normal(size=(n_scan, dim))
    spec, scan = (a.ravel() for a in np.meshgrid(np.arange(n_spec), np.arange(n_scan), indexing="ij"))
    x = spec_w * spec_vec[spec] + scanner_w * scan_vec[scan] + 0.05 * rng.normal(size=(spec.size, dim))
    return x.astype(np.float32), np.array([f"sp{s}" for s in spec]), np.array([f"sc{c}" for c in scan])


def test_wsi_retrieval_known_answers():
    x, sp, _ = wsis(0.0, 1.0)
    assert wsi_retrieval(x, sp).top_k == {1: 1.0, 3: 1.0, 5: 1.0, 10: 1.0}
    x, sp, _ = wsis(10.0, 0.1)
    res = wsi_retrieval(x, sp, ks=(1, 5, 10))
    assert res.top_k == {1: 0.0, 5: 0.0, 10: 0.0}  # 11 same-scanner WSIs come first
    assert res.n_queries == 48 and res.n_without_other_scan == 0


def test_wsi_retrieval_counts_lonely_scans():
    x, sp, _ = wsis(0.0, 1.0)
    sp = sp.copy()
    sp[0] = "alone"
    res = wsi_retrieval(x, sp)
    assert res.n_without_other_scan == 1 and res.n_queries == 47
    with pytest.raises(ValueError, match="no specimen has two"):
        wsi_retrieval(x[:3], np.array(["a", "b", "c"]))
