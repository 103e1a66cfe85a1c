"""Model selection on the validation split: every criterion picks the best recorded evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.metrics import scanner_cov
from scangen.store import load_bags
from scangen.train import TrainConfig, train

FAST = dict(fm="phikon-sim", max_steps=24, eval_every=4, patience=100, task_batch_size=8, max_patches_train=16,
            progress=False, num_threads=1, use_scangen=True, scangen_level="bag", lam=5.0, lr=1e-3)


@pytest.mark.parametrize(
    "metric, key",
    [
        ("auc", lambda h, w: h["val_auc"] - 1e-9 * h["val_loss"]),
        ("loss", lambda h, w: -h["val_loss"]),
        ("auc_pcov", lambda h, w: h["val_auc"] - w * h["val_pcov"]),
        ("auc_share", lambda h, w: h["val_auc"] - w * h["val_share"]),
    ],
)
def test_selected_step_maximises_the_validation_criterion(tiny_store: Path, metric: str, key) -> None:
    bags = load_bags(tiny_store, "phikon-sim")
    result = train(TrainConfig(select_metric=metric, cov_weight=2.0, **FAST), bags)
    hist = result.history
    assert hist.height == 6 and (hist["val_pcov"] >= 0).all() and np.isfinite(hist["val_pcov"].to_numpy()).all()
    score = key(hist, 2.0).to_numpy()
    best = hist["step"].to_numpy()[score >= score.max() - 1e-12]
    assert result.best_step in best.tolist()
    assert hist.filter(pl.col("selected") == 1.0)["step"].to_list()[-1] == result.best_step


def test_val_pcov_is_the_probability_cov_of_the_selected_model(tiny_store: Path) -> None:
    from scangen.train import predict_logits
    from scangen.train.trainer import validation_positions

    bags = load_bags(tiny_store, "phikon-sim")
    result = train(TrainConfig(select_metric="auc_pcov", **FAST), bags)
    pos = validation_positions(result.slides)
    logits = predict_logits(result.model, result.bag_tensors, pos)
    spec = result.slides[pos]["specimen_id"].to_numpy()
    row = result.history.filter(pl.col("step") == result.best_step)
    assert np.isclose(row["val_pcov"][0], scanner_cov(logits, spec, on="prob"), rtol=1e-5)
    assert np.isclose(row["val_cov"][0], scanner_cov(logits, spec), rtol=1e-5)
    means = np.array([logits[spec == s].mean() for s in np.unique(spec)])
    stds = np.array([logits[spec == s].std() for s in np.unique(spec)])
    assert np.isclose(row["val_share"][0], stds.mean() / means.std(), rtol=1e-5)
