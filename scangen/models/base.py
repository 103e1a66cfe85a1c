"""Shared pieces of every MIL head: the output record, the head base class and masked helpers.

Bags arrive padded: ``h`` is (B, N, H) and ``mask`` (B, N) is True on real patches. Every head must
ignore padded positions completely (their values may be anything), so that a bag alone and the same
bag inside a padded batch give the same output.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class MILOutput:
    """What a head returns for a batch of B bags.

    logits: (B,) one logit per bag (the prediction used for AUC and CoV).
    bag_embedding: (B, H') the bag representation fed to the final classifier.
    extras: named tensors specific to a head (attention weights, instance scores, ...).
    """

    logits: Tensor
    bag_embedding: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


def under_vmap(t: Tensor) -> bool:
    """True when ``t`` is a member slice inside ``torch.func.vmap`` (the batched ensemble trainer).

    Checks that read tensor values (``bool(...)``) are skipped there: vmap forbids data-dependent
    control flow, and the ensemble trainer validates the stacked inputs before the vmapped call.
    """
    return bool(torch._C._functorch.is_batchedtensor(t))


def validate_bags(h: Tensor, mask: Tensor, dim: int | None = None) -> None:
    """Raise ValueError unless ``h`` (B, N, H) float and ``mask`` (B, N) bool describe valid bags.

    Every bag must hold at least one real patch: an empty bag has no defined prediction (this
    value check is skipped under vmap, see `under_vmap`).
    """
    if not isinstance(h, Tensor) or h.ndim != 3:
        raise ValueError(f"h: expected a (B, N, H) tensor, got shape {tuple(getattr(h, 'shape', ()))}")
    if not h.is_floating_point():
        raise ValueError(f"h: expected a floating-point tensor, got dtype {h.dtype}")
    if dim is not None and h.shape[-1] != dim:
        raise ValueError(f"h: expected feature size H={dim}, got {h.shape[-1]}")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True = real patch), got {getattr(mask, 'dtype', type(mask))}")
    if tuple(mask.shape) != tuple(h.shape[:2]):
        raise ValueError(f"mask: expected shape {tuple(h.shape[:2])} matching h's (B, N), got {tuple(mask.shape)}")
    if h.shape[0] == 0:
        raise ValueError("h: the batch holds no bag (B = 0)")
    if under_vmap(h) or under_vmap(mask):
        return
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"mask: bag(s) {empty[:10]} have no real patch; every bag needs at least one")


def validate_targets(y: Tensor, batch: int) -> None:
    """Raise ValueError unless ``y`` is a (B,) tensor of targets in [0, 1] (soft labels allowed)."""
    if not isinstance(y, Tensor) or tuple(y.shape) != (batch,):
        raise ValueError(f"y: expected a ({batch},) tensor of bag labels, got shape {tuple(getattr(y, 'shape', ()))}")
    yf = y.float()
    if under_vmap(yf):
        return
    if bool(((yf < 0) | (yf > 1) | torch.isnan(yf)).any()):
        raise ValueError("y: labels must lie in [0, 1]")


def zero_padding(h: Tensor, mask: Tensor) -> Tensor:
    """Return ``h`` with padded rows set to exactly 0 (so NaN/inf padding cannot leak)."""
    return torch.where(mask.unsqueeze(-1), h, torch.zeros((), dtype=h.dtype, device=h.device))


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` where ``mask`` (broadcastable) is False gets weight 0.

    Callers guarantee at least one True entry along ``dim`` (validated bags), so no row is all -inf.
    """
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=dim)


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean over real patches: (B, N, H), (B, N) -> (B, H).

    When no bag is padded (training batches of subsampled patches usually are not) the zeroing of
    padded rows, and its backward pass, is skipped: the sum is the same.
    """
    acc = torch.promote_types(h.dtype, torch.float32)  # half precision would round counts (1001 -> 1000)
    batched = under_vmap(h) or under_vmap(mask)
    real = h if (not batched and bool(mask.all())) else zero_padding(h, mask)
    total = real.sum(dim=1, dtype=acc)
    return (total / mask.sum(dim=1, keepdim=True).to(acc)).to(h.dtype)


class MILHead(nn.Module, abc.ABC):
    """Aggregator + classifier mapping a padded batch of bags to one logit per bag.

    Subclasses implement ``forward(h, mask) -> MILOutput``. ``loss`` is BCE-with-logits unless a head
    overrides it (DS-MIL); ``train_loss`` is forward + loss unless a head adds training-time
    augmentation (SlotMIL).
    """

    name: str = "base"

    def __init__(self, dim: int) -> None:
        super().__init__()
        if int(dim) <= 0:
            raise ValueError(f"dim: expected a positive feature size, got {dim}")
        self.dim = int(dim)

    @abc.abstractmethod
    def forward(self, h: Tensor, mask: Tensor) -> MILOutput:
        """Aggregate (B, N, H) patch features under a (B, N) mask into a MILOutput."""

    def loss(self, out: MILOutput, y: Tensor) -> Tensor:
        """Mean binary cross-entropy of ``out.logits`` against labels ``y`` (B,) in [0, 1]."""
        validate_targets(y, out.logits.shape[0])
        return F.binary_cross_entropy_with_logits(out.logits, y.to(out.logits.dtype))

    def train_loss(
        self, h: Tensor, mask: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, MILOutput]:
        """Training loss and output; the default ignores ``generator`` (no stochastic augmentation)."""
        out = self(h, mask)
        return self.loss(out, y), out
