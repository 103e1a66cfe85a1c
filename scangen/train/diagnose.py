"""Loss diagnostics of a trained run (the `diagnostics` of a RunRecord), from its selected model.

Computed on the test split's primary-magnification multiscanner WSIs, every patch used:
- att_term, rep_term: mean weighted attraction / repulsion terms of the ScanGen loss over all
  training steps (NaN for runs without ScanGen);
- d_pos_loss, d_neg_loss: mean cosine distance of positive (same specimen, different scanners) and
  negative (same scanner, different specimens) pairs in the space the ScanGen loss acts on, at the
  run's `scangen_level` (baselines: "slide"): "slide" phi(slide-mean embedding); "bag" the masked
  mean of phi over all patches; "patch" phi of `scangen_patches` patches per WSI drawn with a
  generator seeded by the run's seed (pairs of patches of one WSI belong to neither kind);
- d_pos_cls, d_neg_cls: the same pairs in the classifier's space, the head's pooled bag embedding;
- within_sd, between_sd: within- and between-specimen SD of the test logits;
- norm_<scanner>: per-scanner mean L2 norm of the pooled bag embedding.
"""

from __future__ import annotations

import numpy as np
import torch

from scangen.metrics.diagnostics import logit_spread, pair_distance_means, scanner_norms
from scangen.models import MILModel, masked_mean
from scangen.train.batching import BagTensors, collate, inference_batches
from scangen.train.evaluation import split_positions

DIAGNOSTIC_NAMES = ("att_term", "rep_term", "d_pos_loss", "d_neg_loss", "d_pos_cls", "d_neg_cls",
                    "within_sd", "between_sd")
"""Fixed diagnostic names; `norm_<scanner>` entries follow, one per primary scanner of the test split."""


@torch.no_grad()
def bag_outputs(
    model: MILModel, bt: BagTensors, positions: np.ndarray, patch_budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits (n,), pooled bag embeddings (n, H'), masked mean of phi (n, H)) of bags `positions`,
    every patch used, model in eval mode (training mode restored after)."""
    positions = np.asarray(positions, dtype=np.int64)
    was_training = model.training
    model.eval()
    logits, pooled, mean_phi = [None] * positions.size, [None] * positions.size, [None] * positions.size
    try:
        lengths = bt.lengths.cpu().numpy()[positions]
        for batch in inference_batches(lengths, patch_budget):
            x, mask = collate(bt, positions[batch])
            h = model.embed(x, mask)
            out = model.head(h, mask)
            phi_mean = masked_mean(h, mask)
            for j, b in enumerate(batch.tolist()):
                logits[b] = float(out.logits[j])
                pooled[b] = out.bag_embedding[j].double().cpu().numpy()
                mean_phi[b] = phi_mean[j].double().cpu().numpy()
    finally:
        model.train(was_training)
    return np.asarray(logits, dtype=np.float64), np.stack(pooled), np.stack(mean_phi)


@torch.no_grad()
def loss_space_items(
    model: MILModel, bt: BagTensors, positions: np.ndarray, level: str, n_patches: int, seed: int,
    mean_phi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(items (n_items, H), index of each item's bag in `positions`) in the ScanGen loss's space."""
    n = positions.size
    if level == "bag":
        return mean_phi, np.arange(n)
    was_training = model.training
    model.eval()
    try:
        if level == "slide":
            z = model.project(bt.means[torch.as_tensor(positions, device=bt.device)])
            return z.double().cpu().numpy(), np.arange(n)
        gen = torch.Generator(device=bt.storage).manual_seed(int(seed))
        x, mask = collate(bt, positions, n_patches, gen)
        z = model.project(x[mask])
        owner = np.repeat(np.arange(n), mask.sum(dim=1).cpu().numpy())
        return z.double().cpu().numpy(), owner
    finally:
        model.train(was_training)


def run_diagnostics(result, patch_budget: int | None = None) -> dict[str, float]:
    """Diagnostics (module docstring) of a `TrainResult`; names DIAGNOSTIC_NAMES then norm_<scanner>."""
    cfg = result.config
    pos = split_positions(result.slides, "test")
    rows = result.slides[pos]
    spec, scan = rows["specimen_id"].to_numpy(), rows["scanner"].to_numpy()
    budget = cfg.eval_patch_budget if patch_budget is None else patch_budget
    if result.outputs is not None:
        logits, pooled, mean_phi = result.outputs.take(pos)
    else:
        logits, pooled, mean_phi = bag_outputs(result.model, result.bag_tensors, pos, budget)
    level = cfg.scangen_level if cfg.use_scangen else "slide"
    items, owner = loss_space_items(result.model, result.bag_tensors, pos, level, cfg.scangen_patches, cfg.seed, mean_phi)
    d_pos_loss, d_neg_loss = pair_distance_means(items, spec[owner], scan[owner])
    d_pos_cls, d_neg_cls = pair_distance_means(pooled, spec, scan)
    within, between = logit_spread(logits, spec, scan)
    att, rep = result.loss_terms
    out = {"att_term": att, "rep_term": rep, "d_pos_loss": d_pos_loss, "d_neg_loss": d_neg_loss,
           "d_pos_cls": d_pos_cls, "d_neg_cls": d_neg_cls, "within_sd": within, "between_sd": between}
    out.update({f"norm_{k}": v for k, v in scanner_norms(pooled, scan).items()})
    return {k: float(v) for k, v in out.items()}
