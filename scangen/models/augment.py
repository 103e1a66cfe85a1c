"""Training-time bag augmentations used by SlotMIL (Keum et al. 2023): patch subsampling and mixup.

Both draw from an optional ``torch.Generator`` (on CPU or on a CUDA device: draws are made on the
generator's device and then moved to the data's), so a seeded trainer gets reproducible
augmentations; without one they draw from torch's global CPU RNG.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _gen_device(generator: torch.Generator | None) -> torch.device:
    """Device the draws must be made on: the generator's own (CPU or CUDA), CPU for the global RNG."""
    return torch.device("cpu") if generator is None else generator.device


def _rand(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) float64 draws from ``generator`` (or the global RNG), on the generator's device."""
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=_gen_device(generator))


def subsample_mask(mask: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Keep, in each bag, ceil(rate * n_b) of its n_b real patches chosen uniformly without replacement.

    mask (B, N) bool -> (B, N) bool, a subset of ``mask`` with at least one True per bag.
    """
    if not 0.0 < float(rate) <= 1.0:
        raise ValueError(f"subsample_rate: expected a rate in (0, 1], got {rate}")
    if float(rate) == 1.0:
        return mask.clone()
    return subsample_from_keys(mask, subsample_keys(tuple(mask.shape), generator), rate)


def subsample_keys(shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """The random keys (B, N) float64 of one `subsample_mask` call: uniform draws, one per position."""
    return _rand(shape, generator)


def subsample_from_keys(mask: Tensor, keys: Tensor, rate: float) -> Tensor:
    """`subsample_mask` given its keys (B, N): each bag keeps its ceil(rate * n_b) real patches of
    smallest key. Pure tensor code (no draw, no value read), so it runs under ``torch.func.vmap``."""
    counts = mask.sum(dim=1)
    keep = torch.clamp(torch.ceil(counts.double() * float(rate)), min=1).long()
    keys = keys.to(mask.device).masked_fill(~mask, 2.0)  # padded positions rank after every real patch
    ranks = keys.argsort(dim=1).argsort(dim=1)
    return mask & (ranks < keep.unsqueeze(1))


def compact(h: Tensor, mask: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
    """Move each bag's real patches to the front (keeping their order) and drop all-padding columns.

    (B, N, H), (B, N) -> (B, N', H), (B, N') with N' = max_b n_b, or N' = ``width`` when given (at
    least max_b n_b; no value read, so it runs under vmap). Used after subsampling so that attention
    cost scales with the kept patches only.
    """
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    if width is None:
        width = int(mask.sum(dim=1).max().item())
    order = order[:, :width]
    new_mask = mask.gather(1, order)
    new_h = h.gather(1, order.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
    return new_h, new_mask


def sample_beta(alpha: float, generator: torch.Generator | None = None) -> float:
    """One draw of lambda ~ Beta(alpha, alpha), seeded from ``generator`` (numpy's Beta sampler)."""
    if not (float(alpha) > 0.0 and math.isfinite(float(alpha))):
        raise ValueError(f"mixup_alpha: expected a positive finite Beta parameter, got {alpha}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_gen_device(generator)).item())
    return float(np.random.default_rng(seed).beta(float(alpha), float(alpha)))


def mixup_plan(
    batch: int, alpha: float, prob: float = 1.0, generator: torch.Generator | None = None
) -> tuple[float, Tensor] | None:
    """Draw a mixup plan for a batch: (lambda, partner permutation (B,) int64), or None (no mixup).

    Mixup is skipped for a batch of one bag or with probability 1 - ``prob``. One lambda per batch, as
    in the original mixup; bag i is mixed with bag perm[i].
    """
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"mixup_prob: expected a probability in [0, 1], got {prob}")
    if batch < 2 or float(prob) == 0.0:
        return None
    if float(prob) < 1.0 and float(_rand((1,), generator).item()) >= float(prob):
        return None
    lam = sample_beta(alpha, generator)
    perm = torch.randperm(batch, generator=generator, device=_gen_device(generator)).cpu()
    return lam, perm


def mix(x: Tensor, lam: float | Tensor, perm: Tensor) -> Tensor:
    """lam * x + (1 - lam) * x[perm] along the first (batch) dimension. ``lam``: a float or a 0-d
    float64 tensor (both weights formed in float64, then cast to x's dtype)."""
    if isinstance(lam, Tensor):
        keep, other = lam.to(x.device, x.dtype), (1.0 - lam).to(x.device, x.dtype)
    else:
        keep, other = lam, 1.0 - lam
    return keep * x + other * x.index_select(0, perm.to(x.device))
