"""Degenerate inputs to the embedding-robustness metrics raise clear errors (no 1.0, no warning flood),
and the store-level helpers follow the store's own primary magnification."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from test_robustness_bags import build

from scangen.metrics import robustness as rb
from scangen.metrics.predictability import scanner_predictability
from scangen.metrics.retrieval import cross_scanner_retrieval, wsi_retrieval
from scangen.metrics.robustness_index import robustness_index


def _data(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    labels = np.arange(n) % 2
    scanners = np.array(["A", "B", "C"])[np.arange(n) % 3]
    specimens = np.array([f"p{i // 3}" for i in range(n)])
    return x, labels, scanners, specimens


def test_robustness_index_single_class_raises_without_warnings() -> None:
    x, labels, scanners, specimens = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"single class \(1 for all 24 rows\)"):
            robustness_index(x, np.ones_like(labels), scanners, specimens)
    with pytest.raises(ValueError, match=r"single class \('tumour' for all 24 rows\).*1.0 by construction"):
        robustness_index(x, np.array(["tumour"] * 24), scanners, specimens)


def test_robustness_index_one_scanner_or_one_specimen_raises() -> None:
    x, labels, scanners, specimens = _data()
    with pytest.raises(ValueError, match="one scanner; it needs at least two scanners"):
        robustness_index(x, labels, np.array(["A"] * 24), specimens)
    with pytest.raises(ValueError, match="one specimen; it needs at least two specimens"):
        robustness_index(x, labels, scanners, np.array(["p"] * 24))


def test_retrieval_and_probe_degenerate_inputs() -> None:
    x, _, scanners, specimens = _data()
    tiles = np.arange(24) // 3
    with pytest.raises(ValueError, match=r"at least two scanners, got \['A'\]"):
        cross_scanner_retrieval(x, tiles, np.array(["A"] * 24), specimens)
    with pytest.raises(ValueError, match="at least two specimens"):
        wsi_retrieval(x, np.array(["p"] * 24))
    with pytest.raises(ValueError, match="at least two scanners"):
        scanner_predictability(x, np.array(["A"] * 24), specimens)
    with pytest.raises(ValueError, match="at least two specimens"):
        scanner_predictability(x, scanners, np.array(["p"] * 24))


def test_bags_helpers_use_the_primary_magnification_and_explain_missing_labels() -> None:
    bags, reg = build()
    slides = bags.slides.with_columns(pl.col("magnification").replace_strict({40: 25, 20: 10}, return_dtype=pl.Int16))
    bags25 = type(bags)(slides, bags.features, bags.offsets, bags.coords, bags.tissue_class)
    sel = rb.select_scans(bags25)
    assert len(sel) == 18 and set(sel.slides["magnification"].to_list()) == {25}
    assert len(rb.select_scans(bags25, magnification=10)) == 6
    with pytest.raises(ValueError, match="expected an integer, 'primary' or None"):
        rb.select_scans(bags25, magnification="40x")
    unlabelled = type(bags)(slides.with_columns(pl.lit(None, dtype=pl.Int8).alias("egfr")), bags.features,
                            bags.offsets, bags.coords, None, task_label=None)
    with pytest.raises(ValueError, match="'egfr' is empty.*embedding-only"):
        rb.robustness_index_bags(unlabelled, level="slide", label="egfr")
    with pytest.raises(ValueError, match="import per-patch labels"):
        rb.robustness_index_bags(unlabelled, level="patch")
    assert rb.wsi_retrieval_bags(bags25).n_queries == 18
    reg25 = type(reg)(slides, reg.features, reg.offsets, reg.tile_id, reg.tissue_class)
    pairs = rb.cross_scanner_retrieval_bags(reg25).pairs  # labelled by bare names at the primary 25x
    assert sorted(set(pairs["scanner_a"]) | set(pairs["scanner_b"])) == ["AT2", "GT450", "P1000"]
    both = rb.cross_scanner_retrieval_bags(reg25, magnification=None).pairs
    assert "GT450@10x" in set(both["scanner_b"]) | set(both["scanner_a"])
