"""Ensembles: which configs may train together, members equal to runs trained alone (every head, float32
and bfloat16 training), bit-identical reruns, and early stopping per member inside an ensemble."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scangen.models import HEADS
from scangen.store import Bags, load_bags
from scangen.train import TrainConfig, ensemble_group_key, run_ensemble, run_record

FAST = dict(fm="phikon-sim", max_steps=12, eval_every=4, task_batch_size=8, max_patches_train=16,
            progress=False, num_threads=1)
LOGIT_TOL = 1e-4
"""Absolute logit tolerance between a member and the same config trained alone (float32 rounding of
batched vs single matmuls; observed differences are below 1e-6 on the tiny cohort)."""
LOGIT_TOL_BF16 = 2e-3
"""The same with bfloat16 training (`amp_cpu`): where a member's stacked product differs from its single
one in the last float32 bit, the bf16 rounding of phi's backward can turn that into a neighbouring
bf16 value (2^-8 relative) and training carries it on. Measured: tiny cohort, 12 steps, below 2e-3;
quick cohort, hoptimus0-sim, 100 steps, 3 seeds x (baseline, ScanGen): 5 of 6 members within 5e-7,
one ScanGen member 1.7e-2 with the same selected step (float32: all within 5e-7)."""


@pytest.fixture(scope="module")
def tiny_bags(tiny_store: Path) -> Bags:
    return load_bags(tiny_store, "phikon-sim")


def test_group_key_separates_shapes_and_joins_member_settings() -> None:
    base = TrainConfig(**FAST)
    key = ensemble_group_key(base)
    hash(key)
    for same in ({"seed": 3}, {"use_scangen": True, "lam": 3.0}, {"scanner_subset": ("AT2", "B300")},
                 {"split_seed": 2}, {"patience": 2}, {"select_min_step": 4}, {"alpha": 0.2},
                 {"select_metric": "loss"}, {"scangen_level": "bag"}, {"trace_test": True}):
        assert ensemble_group_key(base.replace(**same)) == key, same
    for other in ({"fm": "uni-sim"}, {"head": "abmil"}, {"hidden_dim": 64}, {"max_steps": 16}, {"eval_every": 3},
                  {"harmonize": "combat"}, {"task_batch_size": 4}, {"head_kwargs": {"classifier_hidden": 8}},
                  {"lr": 1e-3}, {"amp_cpu": True}):
        assert ensemble_group_key(base.replace(**other)) != key, other
    harm = base.replace(harmonize="combat")
    assert ensemble_group_key(harm) != ensemble_group_key(harm.replace(split_seed=1))


def test_run_ensemble_rejects_mixed_groups(tiny_bags: Bags) -> None:
    with pytest.raises(ValueError, match="ensemble_group_key"):
        run_ensemble([TrainConfig(**FAST), TrainConfig(**{**FAST, "head": "abmil"})], tiny_bags)
    assert run_ensemble([], tiny_bags) == []


def _members(head: str) -> list[TrainConfig]:
    kw = dict(head=head, **FAST)
    return [
        TrainConfig(**kw),
        TrainConfig(use_scangen=True, seed=1, **kw),
        TrainConfig(use_scangen=True, scangen_level="bag", split_seed=1, seed=2, patience=1, **kw),
        TrainConfig(use_scangen=True, scangen_level="patch", scanner_subset=("AT2", "GT450", "B300"), lam=3.0,
                    seed=3, trace_test=True, scangen_distance="cosine_norm", scangen_pair_norm=True, **kw),
    ]


@pytest.mark.parametrize("head", sorted(HEADS))
def test_members_equal_runs_trained_alone(tiny_bags: Bags, head: str) -> None:
    configs = _members(head)
    records = run_ensemble(configs, tiny_bags)
    for cfg, rec in zip(configs, records):
        alone = run_record(cfg, tiny_bags)
        assert rec.history["step"].to_list() == alone.history["step"].to_list()
        assert rec.history["selected"].to_list() == alone.history["selected"].to_list()
        assert rec.predictions["slide_id"].to_list() == alone.predictions["slide_id"].to_list()
        assert rec.predictions["best_step"][0] == alone.predictions["best_step"][0]
        np.testing.assert_allclose(rec.predictions["logit"].to_numpy(), alone.predictions["logit"].to_numpy(),
                                   rtol=0, atol=LOGIT_TOL)
        np.testing.assert_allclose(rec.history["val_auc"].to_numpy(), alone.history["val_auc"].to_numpy(), atol=1e-6)


def test_two_ensemble_runs_are_bit_identical(tiny_bags: Bags) -> None:
    configs = _members("abmil")
    a, b = run_ensemble(configs, tiny_bags), run_ensemble(configs, tiny_bags)
    for ra, rb in zip(a, b):
        assert ra.predictions.equals(rb.predictions) and ra.history.equals(rb.history)
        assert ra.diagnostics == rb.diagnostics or all(
            (np.isnan(x) and np.isnan(rb.diagnostics[k])) or x == rb.diagnostics[k] for k, x in ra.diagnostics.items())


def test_a_stopped_member_keeps_its_selection_while_the_others_train_on(tiny_bags: Bags) -> None:
    quick_stop = TrainConfig(**{**FAST, "patience": 1, "max_steps": 24})
    long_run = TrainConfig(**{**FAST, "patience": 100, "max_steps": 24, "seed": 1})
    short, long = run_ensemble([quick_stop, long_run], tiny_bags)
    assert long.history["step"].to_list() == [4, 8, 12, 16, 20, 24]
    steps = short.history["step"].to_list()
    selected = short.history.filter(short.history["selected"] == 1.0)["step"].to_list()
    assert steps[-1] == min(selected[-1] + 4, 24)  # exactly `patience` (1) evaluation after the last improvement
    assert short.predictions["best_step"][0] == selected[-1]
    alone = run_record(quick_stop, tiny_bags)
    np.testing.assert_allclose(short.predictions["logit"].to_numpy(), alone.predictions["logit"].to_numpy(), atol=LOGIT_TOL)


def test_adversary_and_harmonised_members_equal_runs_alone(tiny_bags: Bags) -> None:
    pytest.importorskip("scangen.harmonise")
    kw = dict(harmonize="combat", **FAST)
    configs = [TrainConfig(adversary_weight=0.5, **kw),
               TrainConfig(use_scangen=True, adversary_weight=1.0, scangen_level="bag", seed=1, **kw),
               TrainConfig(seed=2, **kw)]
    for cfg, rec in zip(configs, run_ensemble(configs, tiny_bags)):
        alone = run_record(cfg, tiny_bags)
        np.testing.assert_allclose(rec.predictions["logit"].to_numpy(), alone.predictions["logit"].to_numpy(), atol=LOGIT_TOL)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_final_outputs_equal_the_selected_models_own_forward(tiny_bags: Bags, head: str) -> None:
    """The batched inference (phi on real patches only, GAP pooled before phi's last affine layer,
    outputs reused from the selecting evaluation) gives the logits of the selected model's plain
    padded forward (`predict_logits`), for members with and without a traced test split."""
    from scangen.train.predict import predict_logits
    from scangen.train.trainer import train_group

    kw = dict(head=head, **FAST)
    configs = [TrainConfig(**kw), TrainConfig(use_scangen=True, seed=1, trace_test=True, **kw)]
    for result in train_group(configs, tiny_bags):
        out = result.outputs
        plain = predict_logits(result.model, result.bag_tensors, out.positions)
        assert np.abs(out.logits - plain).max() < 1e-5, head
        assert out.mean_phi.shape == (out.positions.size, result.model.phi.out_dim)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_bf16_training_members_equal_runs_alone_and_rerun_bit_identical(tiny_bags: Bags, head: str) -> None:
    """amp_cpu (bfloat16 autocast in training) keeps the ensemble's guarantees: every member equals its
    run alone within LOGIT_TOL_BF16, a rerun is bit-identical, the autocast is really on (the numbers differ
    from float32 training) and the final pass is float32 (it equals the selected model's own forward)."""
    from scangen.train.predict import predict_logits
    from scangen.train.trainer import train_group

    configs = [c.replace(amp_cpu=True) for c in _members(head)]
    first, again = run_ensemble(configs, tiny_bags), run_ensemble(configs, tiny_bags)
    for cfg, rec, rec2 in zip(configs, first, again):
        assert rec.predictions.equals(rec2.predictions) and rec.history.equals(rec2.history)
        alone = run_record(cfg, tiny_bags)
        assert rec.history["selected"].to_list() == alone.history["selected"].to_list()
        np.testing.assert_allclose(rec.predictions["logit"].to_numpy(), alone.predictions["logit"].to_numpy(),
                                   rtol=0, atol=LOGIT_TOL_BF16)
    fp32 = run_ensemble(_members(head), tiny_bags)
    assert any(not np.array_equal(a.predictions["logit"].to_numpy(), b.predictions["logit"].to_numpy())
               for a, b in zip(first, fp32))
    for result in train_group(configs[:2], tiny_bags):
        assert result.amp == torch.bfloat16
        out = result.outputs
        assert np.abs(out.logits - predict_logits(result.model, result.bag_tensors, out.positions)).max() < 1e-5
