"""Loss diagnostics: the pure functions on hand-built items, and the trainer's use of them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.metrics import within_specimen_sd
from scangen.metrics.diagnostics import logit_spread, pair_distance_means, scanner_norms
from scangen.store import load_bags
from scangen.train import TrainConfig, run_record, train
from scangen.train.diagnose import bag_outputs, run_diagnostics
from scangen.train.evaluation import split_positions

FAST = dict(fm="phikon-sim", max_steps=8, eval_every=4, task_batch_size=8, max_patches_train=16,
            progress=False, num_threads=1)


def test_pair_distance_means_hand_computed() -> None:
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    spec = ["a", "a", "b", "b", "b"]
    scan = ["X", "Y", "X", "Y", "X"]  # items 2 and 4: same specimen AND scanner -> neither kind
    # P: (0,1) d=1, (2,3) d=1-1/sqrt2, (3,4) d=1-1/sqrt2; N: (0,2) d=0, (0,4) d=0, (1,3) d=1-1/sqrt2
    c = 1 - 1 / math.sqrt(2)
    d_pos, d_neg = pair_distance_means(z, spec, scan)
    assert d_pos == pytest.approx((1 + 2 * c) / 3, abs=1e-12)
    assert d_neg == pytest.approx(c / 3, abs=1e-12)
    only_one = pair_distance_means(z[:2], spec[:2], scan[:2])
    assert only_one[0] == pytest.approx(1.0) and math.isnan(only_one[1])
    with pytest.raises(ValueError, match="specimen"):
        pair_distance_means(z, spec[:3], scan)


def test_logit_spread_and_scanner_norms_hand_computed() -> None:
    within, between = logit_spread([1.0, 3.0, -1.0, -1.0], ["a", "a", "b", "b"], ["X", "Y", "X", "Y"])
    assert within == pytest.approx(0.5) and between == pytest.approx(1.5)
    norms = scanner_norms(np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]), ["X", "Y", "X"])
    assert norms == {"X": pytest.approx(7.5), "Y": pytest.approx(1.0)}
    assert list(norms) == ["X", "Y"]


@pytest.fixture(scope="module")
def tiny_bags(tiny_store: Path):
    return load_bags(tiny_store, "phikon-sim")


def test_run_diagnostics_read_the_selected_models_test_outputs(tiny_bags) -> None:
    cfg = TrainConfig(use_scangen=True, scangen_level="bag", **FAST)
    result = train(cfg, tiny_bags)
    diag = run_diagnostics(result)
    pos = split_positions(result.slides, "test")
    rows = result.slides[pos]
    logits, pooled, mean_phi = result.outputs.take(pos)  # the trainer's batched final pass
    # the same outputs from the extracted nn.Module (checkpoint path), up to float32 rounding
    alone = bag_outputs(result.model, result.bag_tensors, pos, cfg.eval_patch_budget)
    for got, ref in zip(alone, (logits, pooled, mean_phi)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert diag["within_sd"] == pytest.approx(within_specimen_sd(logits, rows["specimen_id"].to_numpy()), rel=1e-9)
    # GAP's pooled bag embedding IS the bag-level loss item: both spaces give the same distances
    np.testing.assert_allclose(pooled, mean_phi, rtol=1e-6, atol=1e-7)
    assert diag["d_pos_loss"] == pytest.approx(diag["d_pos_cls"], rel=1e-5)
    assert diag["d_neg_loss"] == pytest.approx(diag["d_neg_cls"], rel=1e-5)
    norms = np.linalg.norm(pooled, axis=1)
    scan = rows["scanner"].to_numpy()
    for s in np.unique(scan):
        assert diag[f"norm_{s}"] == pytest.approx(norms[scan == s].mean(), rel=1e-9)
    hist = result.history
    att = hist["att_term"].to_numpy()
    assert att.min() - 1e-9 <= diag["att_term"] <= att.max() + 1e-9  # the mean over steps lies in the per-eval range


def test_baseline_diagnostics_use_the_slide_level_and_predicted_logits(tiny_bags) -> None:
    rec = run_record(TrainConfig(**FAST), tiny_bags)
    test = rec.predictions.filter((pl.col("split") == "test") & (pl.col("magnification") == 40))
    within, between = logit_spread(test["logit"].to_numpy(), test["specimen_id"].to_numpy(), test["scanner"].to_numpy())
    assert rec.diagnostics["within_sd"] == pytest.approx(within, rel=1e-6)
    assert rec.diagnostics["between_sd"] == pytest.approx(between, rel=1e-6)
    assert rec.diagnostics["d_pos_loss"] != pytest.approx(rec.diagnostics["d_pos_cls"])  # different spaces
