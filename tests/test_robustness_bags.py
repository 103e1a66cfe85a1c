"""Store-level helpers of scangen.metrics.robustness on hand-built Bags (no simulator needed)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.metrics import robustness as rb
from scangen.store.bags import Bags, RegisteredBags


def build(with_tissue: bool = True, scanner_w: float = 0.0, seed: int = 0):
    """6 specimens x 3 scanners at 40x + one 20x GT450 scan each; 6 patches per slide."""
    rng = np.random.default_rng(seed)
    scanners = ["AT2", "GT450", "P1000"]
    rows, feats, tissue, tiles = [], [], [], []
    lab_vec, scan_vec = rng.normal(size=(3, 12)), rng.normal(size=(4, 12))
    tile_vec = rng.normal(size=(6, 6, 12))
    for s in range(6):
        for c, (sc, mag) in enumerate([(x, 40) for x in scanners] + [("GT450", 20)]):
            rows.append({"slide_id": f"s{s}-{sc}-{mag}", "specimen_id": f"s{s}", "cohort": "multiscanner",
                         "scanner": sc, "magnification": mag, "egfr": s % 2})
            lab = np.arange(6) % 3
            feats.append(2 * lab_vec[lab] + tile_vec[s] + scanner_w * scan_vec[c] + 0.05 * rng.normal(size=(6, 12)))
            tissue.append(lab)
            tiles.append(np.arange(6))
    slides = pl.DataFrame(rows).with_columns(pl.col("magnification").cast(pl.Int16))
    x = np.concatenate(feats).astype(np.float32)
    offsets = np.arange(0, 6 * len(rows) + 1, 6, dtype=np.int64)
    tc = np.concatenate(tissue).astype(np.int8) if with_tissue else None
    bags = Bags(slides, x, offsets, np.zeros((len(x), 2), np.int32), tc)
    reg = RegisteredBags(slides, x, offsets, np.concatenate(tiles).astype(np.int32), tc)
    return bags, reg


def test_select_scans_keeps_40x_multiscanner():
    bags, _ = build()
    sel = rb.select_scans(bags)
    assert len(sel) == 18 and set(sel.slides["magnification"].to_list()) == {40}
    assert len(rb.select_scans(bags, magnification=None)) == 24
    with pytest.raises(ValueError, match="no slide has cohort='task'"):
        rb.select_scans(bags, cohort="task")


def test_patch_table_subsample_is_reproducible_and_capped():
    bags, _ = build()
    t1 = rb.patch_table(bags, max_patches_per_slide=2, seed=1)
    t2 = rb.patch_table(bags, max_patches_per_slide=2, seed=1)
    assert len(t1.features) == 2 * len(bags)
    assert np.array_equal(t1.features, t2.features)
    assert np.bincount(t1.slide_index).max() == 2
    # 20x and 40x GT450 scans are told apart when both magnifications are kept
    assert {"GT450", "GT450@20x"} <= set(rb.patch_table(bags).scanner)


def test_bag_metrics_on_scanner_free_store():
    bags, reg = build(scanner_w=0.0)
    assert rb.robustness_index_bags(bags).value == 1.0
    assert rb.cross_scanner_retrieval_bags(reg).mean_top_k[1] == 1.0
    assert rb.wsi_retrieval_bags(bags).top_k[1] == 1.0
    res = rb.scanner_predictability_bags(bags, n_splits=3)
    assert res.n_scanners == 3 and res.balanced_accuracy < 0.7


def test_bag_metrics_on_scanner_determined_store():
    bags, reg = build(scanner_w=20.0)
    assert rb.robustness_index_bags(bags, k=5).value == 0.0
    assert rb.cross_scanner_retrieval_bags(reg, ks=(1, 3)).mean_top_k == {1: 0.0, 3: 0.0}
    assert rb.scanner_predictability_bags(bags, n_splits=3).balanced_accuracy == 1.0


def test_missing_labels_raise_clear_errors():
    bags, _ = build(with_tissue=False)
    with pytest.raises(ValueError, match="no tissue_class"):
        rb.robustness_index_bags(bags)
    with pytest.raises(ValueError, match="biological label column"):
        rb.robustness_index_bags(bags, level="slide", label="grade")
    res = rb.robustness_index_bags(bags, level="slide", label="egfr", k=3)
    assert 0.0 <= res.value <= 1.0
