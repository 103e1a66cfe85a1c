"""Inference: logits for any set of bags with every patch, in padded batches bounded by a patch budget."""

from __future__ import annotations

import numpy as np
import torch

from scangen.models import MILModel
from scangen.train.batching import BagTensors, collate, inference_batches


@torch.no_grad()
def predict_logits(
    model: MILModel,
    bt: BagTensors,
    positions: np.ndarray,
    *,
    patch_budget: int = 262_144,
    amp: torch.dtype | None = None,
) -> np.ndarray:
    """Logits (len(positions),) float64 of bags `positions`, all patches used, model in eval mode.

    Bags are grouped by length so a padded batch holds at most `patch_budget` patch slots; each
    batch moves to the model's device (the bags may stay on the CPU while the model is on a GPU).
    The model's training mode is restored afterwards.
    """
    positions = np.asarray(positions, dtype=np.int64)
    out = np.empty(positions.size, dtype=np.float64)
    if positions.size == 0:
        return out
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        lengths = bt.lengths.cpu().numpy()[positions]
        for batch in inference_batches(lengths, patch_budget):
            x, mask = collate(bt, positions[batch])
            x, mask = x.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            # Inference in full precision: CoV and flip rate compare small logit differences between
            # scans, which half-precision rounding would coarsen. `amp` is kept for the signature.
            x = x if x.dtype in (torch.float32, torch.float64) else x.float()
            logits = model(x, mask).logits
            out[batch] = logits.float().cpu().numpy()
    finally:
        model.train(was_training)
        if bt.pages is not None:  # hand the evaluated slides' pages back (they stay in the page cache)
            bt.pages.release()
    return out
