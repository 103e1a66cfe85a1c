"""Ensembles: which configs may train together, and members equal to runs trained alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scangen.store import Bags, load_bags
from scangen.train import TrainConfig, ensemble_group_key, run_ensemble, run_record

FAST = dict(fm="phikon-sim", max_steps=12, eval_every=4, task_batch_size=8, max_patches_train=16,
            progress=False, num_threads=1)


@pytest.fixture(scope="module")
def tiny_bags(tiny_store: Path) -> Bags:
    return load_bags(tiny_store, "phikon-sim")


def test_group_key_separates_shapes_and_joins_member_settings() -> None:
    base = TrainConfig(**FAST)
    key = ensemble_group_key(base)
    hash(key)
    for same in ({"seed": 3}, {"use_scangen": True, "lam": 3.0}, {"scanner_subset": ("AT2", "B300")},
                 {"split_seed": 2}, {"lr": 1e-3}, {"patience": 2}, {"select_min_step": 4}, {"alpha": 0.2},
                 {"select_metric": "loss"}):
        assert ensemble_group_key(base.replace(**same)) == key, same
    for other in ({"fm": "uni-sim"}, {"head": "abmil"}, {"hidden_dim": 64}, {"max_steps": 16}, {"eval_every": 3},
                  {"harmonize": "combat"}, {"task_batch_size": 4}, {"head_kwargs": {"classifier_hidden": 8}}):
        assert ensemble_group_key(base.replace(**other)) != key, other
    harm = base.replace(harmonize="combat")
    assert ensemble_group_key(harm) != ensemble_group_key(harm.replace(split_seed=1))


def test_run_ensemble_rejects_mixed_groups(tiny_bags: Bags) -> None:
    with pytest.raises(ValueError, match="ensemble_group_key"):
        run_ensemble([TrainConfig(**FAST), TrainConfig(**{**FAST, "head": "abmil"})], tiny_bags)
    assert run_ensemble([], tiny_bags) == []


def test_members_equal_runs_trained_alone(tiny_bags: Bags) -> None:
    configs = [TrainConfig(**FAST), TrainConfig(use_scangen=True, seed=1, **FAST),
               TrainConfig(use_scangen=True, scanner_subset=("AT2", "GT450", "B300"), lam=3.0, split_seed=1, **FAST)]
    records = run_ensemble(configs, tiny_bags)
    for cfg, rec in zip(configs, records):
        alone = run_record(cfg, tiny_bags)
        assert rec.history["step"].to_list() == alone.history["step"].to_list()
        np.testing.assert_allclose(rec.predictions["logit"].to_numpy(), alone.predictions["logit"].to_numpy(),
                                   rtol=0, atol=1e-4)
        assert rec.predictions["slide_id"].to_list() == alone.predictions["slide_id"].to_list()
