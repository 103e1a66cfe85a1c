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


def test_early_stopping_fires_after_exactly_patience_evaluations_without_improvement() -> None:
    from scangen.train.selection import EarlyStopping

    stopper = EarlyStopping(patience=3)
    keys = [(0.5,), (0.7,), (0.6,), (0.7,), (0.69,)]  # 0.7 again is no improvement (strictly greater wins)
    improved = [stopper.update(step, k) for step, k in zip(range(10, 60, 10), keys)]
    assert improved == [True, True, False, False, False] and stopper.stop and stopper.best_step == 20
    with pytest.raises(RuntimeError):
        stopper.update(60, (0.9,))
    stopper = EarlyStopping(patience=2)
    assert [stopper.update(s, k) for s, k in [(1, (1.0,)), (2, (0.0,)), (3, (2.0,)), (4, (1.0,))]] == [True, False, True, False]
    assert not stopper.stop and stopper.stale == 1


def test_min_step_hides_early_evaluations_from_selection_and_patience() -> None:
    from scangen.train.selection import EarlyStopping

    stopper = EarlyStopping(patience=1, min_step=30)
    assert stopper.update(10, (0.99,)) is False and stopper.update(20, (0.98,)) is False
    assert not stopper.stop and stopper.best_key is None
    assert stopper.update(30, (0.1,)) is True and stopper.best_step == 30
    assert stopper.update(40, (0.05,)) is False and stopper.stop


def test_trainer_applies_select_min_step_and_patience(tiny_store: Path) -> None:
    bags = load_bags(tiny_store, "phikon-sim")
    cfg = TrainConfig(**{**FAST, "patience": 2, "select_min_step": 12})
    hist = train(cfg, bags).history
    steps, selected = hist["step"].to_list(), hist["selected"].to_list()
    assert all(sel == 0.0 for st, sel in zip(steps, selected) if st < 12)
    eligible = hist.filter(pl.col("step") >= 12)
    key = (eligible["val_auc"] - 1e-9 * eligible["val_loss"]).to_list()
    best = eligible["step"][int(np.argmax(key))]
    assert train(cfg, bags).best_step == best >= 12
    # the run stops exactly `patience` eligible evaluations after the last improvement (or at max_steps)
    last_improvement = eligible.filter(pl.col("selected") == 1.0)["step"].to_list()[-1]
    expected_last = min(last_improvement + cfg.patience * cfg.eval_every, cfg.max_steps)
    assert steps[-1] == expected_last
