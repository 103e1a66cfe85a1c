"""ScanGen "bag" level: one item per WSI = masked mean of phi over its (subsampled) patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scangen.losses import scangen_loss
from scangen.models import build_model
from scangen.store import Bags, load_bags
from scangen.train import TrainConfig, assign_splits, run_experiment
from scangen.train.batching import BagTensors, collate
from scangen.train.samplers import ScanGenSampler
from scangen.train.trainer import scangen_embeddings

FAST = dict(fm="phikon-sim", max_steps=8, eval_every=4, task_batch_size=8, max_patches_train=16,
            progress=False, num_threads=1)


@pytest.fixture(scope="module")
def setup(tiny_store: Path) -> tuple[Bags, BagTensors, TrainConfig, ScanGenSampler]:
    bags = load_bags(tiny_store, "phikon-sim")
    cfg = TrainConfig(use_scangen=True, scangen_level="bag", scangen_k=3, **FAST)
    slides = assign_splits(bags.slides, cfg)
    sampler = ScanGenSampler(slides, cfg.scangen_k, np.random.default_rng(0), cfg.scanner_subset)
    return bags, BagTensors.from_bags(bags, torch.device("cpu")), cfg, sampler


def _model(bags: Bags, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(bags.dim, "gap", 64)


def test_bag_items_are_gap_bag_embeddings_with_pairs(setup) -> None:
    bags, bt, cfg, sampler = setup
    batch = sampler.next()
    model = _model(bags).eval()
    full = cfg.replace(max_patches_train=None)
    z, spec, scan = scangen_embeddings(model, bt, batch, full, torch.Generator().manual_seed(0))
    assert z.shape == (batch.positions.size, 64) and spec.shape == scan.shape == (batch.positions.size,)
    x, mask = collate(bt, batch.positions)
    with torch.no_grad():
        expected = model(x, mask).bag_embedding
    torch.testing.assert_close(z.detach(), expected, rtol=1e-5, atol=1e-6)
    _, (n_att, n_rep) = scangen_loss(z, spec, scan, cfg.alpha, cfg.margin, return_counts=True)
    assert n_att > 0 and n_rep > 0


def test_bag_items_subsample_deterministically_and_train_phi(setup) -> None:
    bags, bt, cfg, sampler = setup
    batch = sampler.next()
    cfg = cfg.replace(max_patches_train=8)
    model = _model(bags).train()
    model.phi.eval()  # no dropout: the two draws below must differ only through patch subsampling
    z1, spec, scan = scangen_embeddings(model, bt, batch, cfg, torch.Generator().manual_seed(3))
    z2, _, _ = scangen_embeddings(model, bt, batch, cfg, torch.Generator().manual_seed(3))
    z3, _, _ = scangen_embeddings(model, bt, batch, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(z1, z2)
    assert int(bt.lengths[torch.as_tensor(batch.positions)].min()) > cfg.max_patches_train
    assert not torch.allclose(z1, z3)  # every bag is subsampled, so another draw gives other means
    loss = scangen_loss(z1, spec, scan, cfg.alpha, cfg.margin)
    loss.backward()
    grads = [p.grad for p in model.phi.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in model.head.parameters())


def test_bag_level_runs_are_deterministic_and_differ_from_slide(setup) -> None:
    bags, _, cfg, _ = setup
    a = run_experiment(cfg, bags)
    b = run_experiment(cfg, bags)
    assert a.equals(b)
    c = run_experiment(cfg.replace(scangen_level="slide"), bags)
    assert not np.array_equal(a["logit"].to_numpy(), c["logit"].to_numpy())
