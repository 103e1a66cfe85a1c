"""Model selection and early stopping, checked against the trainer's own history (public API only).

For every selection rule in `SELECT_METRICS` the expected key of each evaluation is recomputed here from
the history's validation columns; then: an evaluation is marked `selected` exactly when its key beats
every earlier one (ties keep the earlier model), `best_step` is the step of the best key, training
stops after exactly `patience` evaluations without improvement (or at `max_steps`), and the returned
model is the selected one (its validation AUC is the history's AUC at `best_step`). Runs on the tiny
cohort, whose numbers mean nothing: only the bookkeeping is tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.metrics import roc_auc
from scangen.store import load_bags
from scangen.train import TrainConfig
from scangen.train.config import SELECT_METRICS
from scangen.train.predict import predict_logits
from scangen.train.trainer import train

W = 0.1
RULES = {
    "auc": lambda h: list(zip(h["val_auc"], -h["val_loss"])),
    "loss": lambda h: list(zip(-h["val_loss"], h["val_auc"])),
    "auc_cov": lambda h: list(zip(h["val_auc"] - W * h["val_cov"], -h["val_loss"])),
    "auc_pcov": lambda h: list(zip(h["val_auc"] - W * h["val_pcov"], -h["val_loss"])),
    "auc_share": lambda h: list(zip(h["val_auc"] - W * h["val_share"], -h["val_loss"])),
}
"""Selection key of each rule (higher is better, compared as tuples), as TrainConfig documents them."""
SETTINGS = dict(fm="phikon-sim", device="cpu", progress=False, num_threads=1, max_steps=60, eval_every=2, patience=3,
                cov_weight=W, max_patches_train=8, task_batch_size=4)


@pytest.fixture(scope="module")
def bags(tiny_store: Path):
    return load_bags(tiny_store, "phikon-sim")


def _val_auc_of_returned_model(result) -> float:
    slides = result.slides.with_row_index("_pos").filter(
        (pl.col("cohort") == "multiscanner") & (pl.col("split") == "val") & (pl.col("magnification") == 40))
    logits = predict_logits(result.model, result.bag_tensors, slides["_pos"].to_numpy().astype(np.int64),
                            patch_budget=result.config.eval_patch_budget, amp=result.amp)
    return roc_auc(slides["egfr"].to_numpy(), logits)


def test_every_selection_rule_has_a_known_key():
    assert set(SELECT_METRICS) <= set(RULES), f"add the rule of {set(SELECT_METRICS) - set(RULES)} to this test"


@pytest.mark.parametrize("metric", SELECT_METRICS)
def test_selection_and_early_stopping_follow_the_rule(bags, metric: str):
    stopped_early = 0
    for seed in range(3):
        result = train(TrainConfig(select_metric=metric, seed=seed, **SETTINGS), bags)
        h = {c: result.history[c].to_numpy() for c in result.history.columns}
        keys = RULES[metric](h)
        improved = [i == 0 or keys[i] > max(keys[:i]) for i in range(len(keys))]
        assert h["selected"].astype(bool).tolist() == improved
        best = max(range(len(keys)), key=lambda i: (keys[i], -i))  # first of equal optima
        assert result.best_step == h["step"][best]
        last_improvement = max(i for i, ok in enumerate(improved) if ok)
        stale_after = len(keys) - 1 - last_improvement
        gaps = np.diff([i for i, ok in enumerate(improved) if ok] + [len(keys)]) - 1
        assert (gaps[:-1] < SETTINGS["patience"]).all()  # never stopped while patience was left
        if h["step"][-1] < SETTINGS["max_steps"]:
            assert stale_after == SETTINGS["patience"]  # exactly `patience` evaluations without improvement
            stopped_early += 1
        else:
            assert stale_after <= SETTINGS["patience"]
        assert _val_auc_of_returned_model(result) == pytest.approx(h["val_auc"][best], abs=1e-6)
    assert stopped_early >= 1  # the patience rule was exercised


def test_minimum_selection_step_applies_to_both_arms(bags):
    if "select_min_step" not in TrainConfig.__dataclass_fields__:
        pytest.skip("TrainConfig.select_min_step not in this version of the trainer")
    for use_scangen in (False, True):
        result = train(TrainConfig(select_min_step=8, use_scangen=use_scangen, seed=0, **SETTINGS), bags)
        h = result.history
        eligible = h.filter(pl.col("step") >= 8)
        assert eligible.height >= 1 and result.best_step >= 8
        keys = RULES["auc"]({c: eligible[c].to_numpy() for c in eligible.columns})
        best = max(range(len(keys)), key=lambda i: (keys[i], -i))
        assert result.best_step == eligible["step"][best]
