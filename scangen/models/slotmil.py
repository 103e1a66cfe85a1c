"""SlotMIL head (Keum, Kim, Lee & Lee 2023, "Slot-Mixup with Subsampling", arXiv 2311.17466).

No official code exists. What the paper's abstract and its ICLR 2024 reviews state is followed; every
choice they leave open is listed, with its source, in docs/mil_models.md:
- Slots: S learnable vectors (inducing points) attend over the real patches of a bag with
  multi-head attention pooling (PMA of the Set Transformer, Lee et al. 2019):
      A = softmax_patches( (S W_q)(h W_k)^T / sqrt(d_head) )   per head, padded patches masked out
      H = LN(S + W_o [A (h W_v)]_heads);  slots = LN(H + FF(H))          -> (B, S, d)
- Readout: a single learnable seed pools the S slots with the same block (PMA with one seed), then
  a linear layer gives the logit.
- Training (``train_loss`` in train mode only), the paper's "SubMix" recipe, ON by default:
  1. subsampling: each bag keeps ceil(rate * n) of its n real patches, uniformly without
     replacement, redrawn at every call;
  2. Slot-Mixup: slots of bag i and of a partner bag perm[i] are interpolated with one
     lambda ~ Beta(alpha, alpha) per batch, labels mixed with the same lambda, BCE on soft labels.
  Evaluation (``forward``) always sees every patch and never mixes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scangen.models.augment import compact, mix, mixup_plan, subsample_from_keys, subsample_keys
from scangen.models.base import MILHead, MILOutput, under_vmap, validate_bags, validate_targets, zero_padding


SLOT_EPS = 1e-8
"""Added to the per-slot weight sums in "queries" normalisation (as in slot attention)."""

DEFAULT_NUM_SLOTS = 16
"""S: the paper uses a small fixed number of slots; 16 is the example value its reviews quote."""

DEFAULT_SUBSAMPLE_RATE = 0.5
"""Fraction of each bag's patches kept in training. The paper tunes it per dataset (value not
readable here); 0.5 is ours. Set 1.0 to switch subsampling off."""

DEFAULT_MIXUP_ALPHA = 1.0
"""Beta(alpha, alpha) parameter of Slot-Mixup's lambda (the paper's value not readable here); 1.0
(lambda uniform on [0, 1], the original mixup's CIFAR setting) is ours. Set 0 to switch it off."""


class AttentionBlock(nn.Module):
    """Set-Transformer multihead attention block MAB(X, Y) with a key mask.

    X (B, M, d) queries, or (1, M, d) queries shared by every bag (learned slots or seed: projected
    once, then broadcast; expanding them to B rows first would make vmapped members broadcast each
    weight over the B bags), Y (B, N, d) keys/values, key_mask (B, N) bool or None
    -> (out (B, M, d), attention (B, heads, M, N)).
    out = LN(H + FF(H)), H = LN(X + W_o MultiHead(X, Y, Y)), FF = Linear-ReLU-Linear (width d).
    ``normalize="keys"``: softmax over the keys (PMA); ``"queries"``: softmax over the queries, then
    each query's weights renormalised over the real keys (one round of slot attention).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, normalize: str = "keys") -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"num_heads: {num_heads} must divide the feature size {dim}")
        if normalize not in ("keys", "queries"):
            raise ValueError(f"attention_norm: expected 'keys' or 'queries', got {normalize!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.normalize = normalize
        self.w_q = nn.Linear(dim, dim)
        self.w_k = nn.Linear(dim, dim)
        self.w_v = nn.Linear(dim, dim)
        self.w_o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        """(B, L, d) -> (B, heads, L, d_head) (B may be 1)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, y: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q, k, v = self._split(self.w_q(x)), self._split(self.w_k(y)), self._split(self.w_v(y))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, heads, M, N)
        keep = None if key_mask is None else key_mask[:, None, None, :]
        if self.normalize == "keys":  # PMA: each query's weights form a distribution over the keys
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            attention = scores.softmax(dim=-1)
        else:  # slot attention: queries compete for each key, then a weighted mean over the keys
            attention = scores.softmax(dim=-2)
            if keep is not None:
                attention = attention.masked_fill(~keep, 0.0)
            attention = attention / (attention.sum(dim=-1, keepdim=True) + SLOT_EPS)
        pooled = (attention @ v).transpose(1, 2).reshape(y.shape[0], x.shape[1], self.dim)
        hidden = self.norm1(x + self.dropout(self.w_o(pooled)))
        return self.norm2(hidden + self.dropout(self.ff(hidden))), attention


class SlotMILHead(MILHead):
    """Slot-MIL: S slots pooled from the patches, a one-seed readout over the slots, a linear logit.

    Shapes: h (B, N, H), mask (B, N) -> logits (B,), bag_embedding (B, H);
    extras (forward): "attention" (B, S, N) slot-over-patch weights averaged over heads (0 at padded
    positions, each slot's row sums to 1), "slots" (B, S, H).
    ``attention_norm``: "keys" (default, PMA: each slot is a weighted mean of the patches with a
    softmax over patches) or "queries" (slot-attention style: slots compete for each patch).
    Training options (used by ``train_loss`` only while ``self.training``; defaults = the paper's
    subsampling + Slot-Mixup recipe): ``subsample_rate`` in (0, 1] (1 = off), ``mixup_alpha`` >= 0
    (0 = off), ``mixup_prob`` the chance a batch is mixed (1 = every batch of >= 2 bags).
    """

    name = "slotmil"
    vmap_inference = False
    """The ensemble trainer predicts member by member: vmapped over 10 members, every patch's key and
    value projections and attention copies of a whole inference batch are held at once (measured on
    the quick cohort, hoptimus0-sim, 402 bags: 28.3 s and +3.3 GB vmapped, 15.6 s and +1.8 GB
    looped); training batches are small, so training stays vmapped."""

    def __init__(
        self,
        dim: int,
        num_slots: int = DEFAULT_NUM_SLOTS,
        num_heads: int = 4,
        dropout: float = 0.0,
        attention_norm: str = "keys",
        subsample_rate: float = DEFAULT_SUBSAMPLE_RATE,
        mixup_alpha: float = DEFAULT_MIXUP_ALPHA,
        mixup_prob: float = 1.0,
    ) -> None:
        super().__init__(dim)
        if int(num_slots) <= 0:
            raise ValueError(f"num_slots: expected a positive number of slots, got {num_slots}")
        if int(num_heads) <= 0:
            raise ValueError(f"num_heads: expected a positive number of heads, got {num_heads}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        if not 0.0 < float(subsample_rate) <= 1.0:
            raise ValueError(f"subsample_rate: expected a rate in (0, 1], got {subsample_rate}")
        if not (float(mixup_alpha) >= 0.0 and math.isfinite(float(mixup_alpha))):
            raise ValueError(f"mixup_alpha: expected a finite Beta parameter >= 0 (0 = off), got {mixup_alpha}")
        if not 0.0 <= float(mixup_prob) <= 1.0:
            raise ValueError(f"mixup_prob: expected a probability in [0, 1], got {mixup_prob}")
        self.num_slots, self.num_heads = int(num_slots), int(num_heads)
        self.subsample_rate = float(subsample_rate)
        self.mixup_alpha = float(mixup_alpha)
        self.mixup_prob = float(mixup_prob)
        self.slots = nn.Parameter(torch.empty(1, self.num_slots, self.dim))
        self.seed = nn.Parameter(torch.empty(1, 1, self.dim))
        nn.init.xavier_uniform_(self.slots)
        nn.init.xavier_uniform_(self.seed)
        self.pool = AttentionBlock(self.dim, self.num_heads, dropout, normalize=attention_norm)
        self.readout = AttentionBlock(self.dim, self.num_heads, dropout)
        self.classifier = nn.Linear(self.dim, 1)

    def aggregate(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Slots (B, S, H) and head-averaged attention (B, S, N) of the slots over the real patches."""
        h = zero_padding(h, mask)
        slots, attention = self.pool(self.slots.to(h.dtype), h, mask)  # (1, S, H) queries shared by the bags
        return slots, attention.mean(dim=1)

    def classify(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, H) slots -> logits (B,), bag embedding (B, H) via the one-seed readout."""
        pooled, _ = self.readout(self.seed.to(slots.dtype), slots)  # (1, 1, H) seed shared by the bags
        bag = pooled.squeeze(1)
        return self.classifier(bag).squeeze(-1), bag

    def forward(self, h: Tensor, mask: Tensor) -> MILOutput:
        validate_bags(h, mask, self.dim)
        slots, attention = self.aggregate(h, mask)
        logits, bag = self.classify(slots)
        return MILOutput(logits=logits, bag_embedding=bag, extras={"attention": attention, "slots": slots})

    def draw_augmentation(self, batch: int, width: int, generator: torch.Generator | None = None
                          ) -> dict[str, Tensor]:
        """The random draws of one training call on a (batch, width) bag batch, in `train_loss`'s order:
        "keys" (batch, width) float64 for subsampling (when on), then the mixup plan (when on) as
        "lam" (0-d float64) and "perm" (batch,) int64, with lam = 1 and perm the identity for a batch
        the plan leaves unmixed (exactly the unmixed values: 1 * x + 0 * x[perm] = x)."""
        draws: dict[str, Tensor] = {}
        if self.subsample_rate < 1.0:
            draws["keys"] = subsample_keys((batch, width), generator)
        if self.mixup_alpha > 0.0:
            plan = mixup_plan(batch, self.mixup_alpha, self.mixup_prob, generator)
            lam, perm = (1.0, torch.arange(batch)) if plan is None else plan
            draws["lam"], draws["perm"] = torch.tensor(lam, dtype=torch.float64), perm
            draws["mixed"] = torch.tensor(plan is not None)
        return draws

    def augmented(self, h: Tensor, mask: Tensor, y: Tensor, draws: dict[str, Tensor], width: int | None = None
                  ) -> tuple[Tensor, MILOutput]:
        """Loss and outputs of the SubMix recipe given its draws (`draw_augmentation`): subsample by the
        keys, compact to `width` columns (None: the longest kept bag), pool, mix slots and labels.
        With `width` given it reads no tensor value, so the ensemble trainer vmaps it over members
        whose draws come from their own generators."""
        target = y.to(h.dtype)
        if "keys" in draws:
            mask = subsample_from_keys(mask, draws["keys"], self.subsample_rate)
            h, mask = compact(h, mask, width)
        slots, _ = self.aggregate(h, mask)
        extras: dict[str, Tensor] = {}
        if "lam" in draws:
            lam, perm = draws["lam"], draws["perm"]
            slots, target = mix(slots, lam, perm), mix(target, lam, perm)
            if not under_vmap(lam) and bool(draws["mixed"]):
                extras["mixup_lambda"] = lam.to(h.dtype)
                extras["mixup_perm"] = perm.to(h.device)
        logits, bag = self.classify(slots)
        extras.update({"slots": slots, "kept_patches": mask.sum(dim=1), "targets": target})
        out = MILOutput(logits=logits, bag_embedding=bag, extras=extras)
        return F.binary_cross_entropy_with_logits(logits, target), out

    def augmented_width(self, width: int) -> int:
        """Columns after subsampling and compaction of a width-N batch, fixed for every draw:
        ceil(rate * N) (the most patches a bag of N keeps), N when subsampling is off."""
        return width if self.subsample_rate >= 1.0 else max(1, math.ceil(self.subsample_rate * width))

    def train_loss(
        self, h: Tensor, mask: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, MILOutput]:
        """Loss with subsampling and Slot-Mixup when enabled and in train mode; plain BCE otherwise.

        Order of the random draws from ``generator`` (fixed, so a seeded run is reproducible):
        subsampling keys, then the mixup plan (coin for ``mixup_prob`` < 1, lambda, permutation).
        extras: "slots" (B, S, H) after mixing, "kept_patches" (B,) patches seen per bag,
        "targets" (B,) the (possibly mixed) soft labels used, and when mixup ran "mixup_lambda" (0-d)
        and "mixup_perm" (B,) (bag i was mixed with bag perm[i]).
        """
        validate_bags(h, mask, self.dim)
        validate_targets(y, h.shape[0])
        draws = self.draw_augmentation(h.shape[0], h.shape[1], generator) if self.training else {}
        return self.augmented(h, mask, y, draws)
