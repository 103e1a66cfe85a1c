"""M models of one architecture as stacked parameters: the batched forward of the ensemble trainer.

Every parameter of `MILModel` is held as one leaf tensor of shape (M, *shape), member m's copy at
index m. phi runs as explicit batched matmuls (`torch.baddbmm`/`matmul` over the member dimension):
    x (M, R, D) -> Linear -> LayerNorm -> GELU -> Dropout -> Linear -> LN -> GELU -> Dropout -> Linear
with each member's dropout masks drawn from that member's own generator (so a member's random
stream never depends on the other members). The head runs through `torch.func.functional_call`,
either vmapped over the members (every head without dropout: gap, abmil, abmil_gated, dsmil and
SlotMIL, whose subsampling and mixup draws are made per member from its own generator before the
vmapped call, `SlotMILHead.draw_augmentation`) or member by member (head dropout draws random
numbers inside the call, which vmap cannot take from per-member generators); the loop swaps each
member's global RNG state in and out so head dropout is per-member too. Inference vmaps the head too,
except for heads that say `vmap_inference = False` (SlotMIL: see there).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from scangen.models import MILModel


class _HeadCall(nn.Module):
    """Wrapper so functional_call can reach the head's `train_loss` (mode "loss") and forward ("eval")."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, h: Tensor, mask: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None,
                draws: dict[str, Tensor] | None = None, width: int | None = None):
        if draws is not None:  # augmentations drawn beforehand (SlotMIL under vmap)
            return self.head.augmented(h, mask, y, draws, width)[0]
        if y is not None:
            return self.head.train_loss(h, mask, y, generator)[0]
        out = self.head(h, mask)
        return out.logits, out.bag_embedding


def head_is_vmappable(model: MILModel) -> bool:
    """True when the head draws no random numbers inside its training call (no dropout > 0; SlotMIL's
    augmentations are drawn before it)."""
    return not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.head.modules())


class StackedModel:
    """Stacked parameters {name: (M, ...)} of M models shaped like `template`, and their forward passes."""

    def __init__(self, models: list[MILModel]) -> None:
        if not models:
            raise ValueError("models: expected at least one member")
        self.template = copy.deepcopy(models[0])
        self.call = _HeadCall(self.template.head)
        self.vmappable = head_is_vmappable(self.template)
        names = [n for n, _ in models[0].named_parameters()]
        self.params: dict[str, Tensor] = {
            n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).clone().requires_grad_(True)
            for n in names
        }
        phi = self.template.phi.net
        self.dropout = float(phi[3].p)
        self.ln_eps = (float(phi[1].eps), float(phi[5].eps))

    @property
    def size(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def subset(self, idx: list[int] | None) -> dict[str, Tensor]:
        """Parameters of members `idx` (all when None); indexing keeps the autograd link to the leaves."""
        if idx is None or idx == list(range(self.size)):
            return self.params
        index = torch.as_tensor(idx, device=next(iter(self.params.values())).device)
        return {k: v.index_select(0, index) for k, v in self.params.items()}

    def keep(self, idx: list[int]) -> None:
        """Drop every member not in `idx` (stopped members): new leaves holding the kept rows."""
        self.params = {k: v.detach()[idx].clone().requires_grad_(True) for k, v in self.params.items()}

    def member_state(self, m: int) -> dict[str, Tensor]:
        """state_dict of member m (detached copies), loadable into a MILModel."""
        return {k: v[m].detach().clone() for k, v in self.params.items()}

    def phi(self, p: dict[str, Tensor], x: Tensor, drops: tuple[Tensor, Tensor] | None = None,
            last: bool = True) -> Tensor:
        """phi of the members of `p`: x (A, R, D) or shared (R, D) -> (A, R, H); `drops` are the two
        dropout keep-masks (A, R, H) already scaled by 1 / (1 - p) (None: no dropout, eval).
        `last=False` stops before phi's final Linear (`phi_last` applies it): since that layer is
        affine, it commutes with a mean over patches, which GAP's inference exploits."""

        def linear(h: Tensor, i: int) -> Tensor:
            w, b = p[f"phi.net.{i}.weight"], p[f"phi.net.{i}.bias"]
            if h.ndim == 2:  # shared input: one (R, D) x (D, A*H) product instead of A broadcast ones
                a, out_dim, in_dim = w.shape
                wide = torch.addmm(b.reshape(1, a * out_dim), h, w.reshape(a * out_dim, in_dim).t())
                return wide.reshape(h.shape[0], a, out_dim).transpose(0, 1)
            return torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))

        def norm(h: Tensor, i: int, eps: float) -> Tensor:
            g, b = p[f"phi.net.{i}.weight"], p[f"phi.net.{i}.bias"]
            return F.layer_norm(h, (h.shape[-1],), eps=eps) * g[:, None, :] + b[:, None, :]

        h = F.gelu(norm(linear(x, 0), 1, self.ln_eps[0]))
        if drops is not None:
            h = h * drops[0]
        h = F.gelu(norm(linear(h, 4), 5, self.ln_eps[1]))
        if drops is not None:
            h = h * drops[1]
        return linear(h, 8) if last else h

    def phi_last(self, p: dict[str, Tensor], h: Tensor) -> Tensor:
        """phi's final Linear on h (A, R, H) of the members of `p`."""
        w, b = p["phi.net.8.weight"], p["phi.net.8.bias"]
        return torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))

    def dropout_masks(self, shapes: list[tuple[int, ...]], padded: tuple[int, ...], gens: list[torch.Generator],
                      device: torch.device) -> tuple[Tensor, Tensor] | None:
        """Two keep-masks (A, prod(padded), H), scaled by 1 / (1 - p), for phi's two dropouts.

        Member a draws a (*shapes[a], H) block from gens[a] (its own layout, so its stream does not
        depend on the other members), placed at the leading corner of the padded (*padded, H) block;
        padding entries are 1. None when phi has no dropout.
        """
        if self.dropout == 0.0:
            return None
        hidden = self.template.phi.hidden_dim
        out = []
        for _ in range(2):
            masks = torch.ones((len(shapes), *padded, hidden), device=device)
            for a, (shape, gen) in enumerate(zip(shapes, gens)):
                u = torch.rand((*shape, hidden), generator=gen, device=gen.device).to(device)
                masks[(a, *[slice(0, k) for k in shape])] = (u >= self.dropout).float() / (1.0 - self.dropout)
            out.append(masks.reshape(len(shapes), -1, hidden))
        return out[0], out[1]

    def head_losses(self, p: dict[str, Tensor], h: Tensor, mask: Tensor, y: Tensor, widths: list[int],
                    gens: list[torch.Generator], rng_states: list[Tensor] | None) -> Tensor:
        """Task losses (A,) of the members of `p`: h (A, B, N, H), mask (A, B, N), y (A, B). Looped
        members see only their own N = widths[a] patch columns and draw from gens[a]."""
        head_p = {k: v for k, v in p.items() if k.startswith("head.")}
        if self.vmappable:
            self.template.eval()  # no randomness in these calls; eval() keeps vmap free of dropout calls
            head = self.template.head
            if hasattr(head, "draw_augmentation"):
                draws = self.augmentation_draws(h.shape[1], h.shape[2], widths, gens, h.device)
                width = head.augmented_width(h.shape[2])
                return vmap(lambda q, hh, mm, yy, dd: functional_call(
                    self.call, q, (hh, mm, yy), {"draws": dd, "width": width}))(head_p, h, mask, y, draws)
            return vmap(lambda q, hh, mm, yy: functional_call(self.call, q, (hh, mm, yy)))(head_p, h, mask, y)
        self.template.train()
        losses = []
        for a, width in enumerate(widths):
            q = {k: v[a] for k, v in head_p.items()}
            args = (h[a, :, :width], mask[a, :, :width], y[a], gens[a])
            losses.append(_with_rng_state(rng_states, a, lambda: functional_call(self.call, q, args)))
        return torch.stack(losses)

    def augmentation_draws(self, batch: int, n: int, widths: list[int], gens: list[torch.Generator],
                           device: torch.device) -> dict[str, Tensor]:
        """Each member's head augmentation draws for its (batch, widths[a]) task batch, from gens[a] (the
        draws the head makes alone), stacked over members; subsampling keys padded to n columns (padded
        patches rank last whatever their key)."""
        head = self.template.head
        per = [head.draw_augmentation(batch, w, gen) for w, gen in zip(widths, gens)]
        out = {}
        for k in per[0]:
            parts = [d[k].to(device) for d in per]
            if k == "keys":
                parts = [F.pad(t, (0, n - t.shape[1]), value=2.0) for t in parts]
            out[k] = torch.stack(parts)
        return out

    @torch.no_grad()
    def predict(self, p: dict[str, Tensor], x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eval-mode outputs of the members of `p` for shared bags x (B, N, D), mask (B, N): logits (A, B),
        pooled bag embeddings (A, B, H') and the masked mean of phi (A, B, H)."""
        b, n, d = x.shape
        real = mask.reshape(-1)
        gap = getattr(self.template.head, "name", "") == "gap"
        # phi on the real patches only, no padding: (A, P, H); for GAP without its final affine layer,
        # which is applied after pooling (the mean of an affine map is the affine map of the mean)
        packed = self.phi(p, x.reshape(b * n, d)[real], last=not gap)
        a, hidden = packed.shape[0], packed.shape[2]
        bag_of = torch.arange(b, device=x.device).repeat_interleave(n)[real]
        counts = mask.sum(dim=1).clamp(min=1).to(packed.dtype)
        mean_phi = packed.new_zeros((a, b, hidden)).index_add_(1, bag_of, packed) / counts[None, :, None]
        head_p = {k: v for k, v in p.items() if k.startswith("head.")}
        self.template.eval()
        if gap:  # GAP's bag embedding is the mean of phi: each bag becomes a one-patch bag
            mean_phi = self.phi_last(p, mean_phi)
            h, mask = mean_phi[:, :, None, :], torch.ones((b, 1), dtype=torch.bool, device=x.device)
        else:
            h = packed.new_zeros((a, b * n, hidden))
            h[:, real] = packed
            h = h.reshape(a, b, n, hidden)
        if self.vmappable and getattr(self.template.head, "vmap_inference", True):
            logits, pooled = vmap(lambda q, hh: functional_call(self.call, q, (hh, mask)))(head_p, h)
            return logits, pooled, mean_phi
        outs = [functional_call(self.call, {k: v[a] for k, v in head_p.items()}, (h[a], mask)) for a in range(h.shape[0])]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), mean_phi


def _with_rng_state(states: list[Tensor] | None, a: int, fn):
    """Run fn with member a's global CPU RNG state (saved back after), so head dropout is per member."""
    if states is None:
        return fn()
    before = torch.get_rng_state()
    torch.set_rng_state(states[a])
    try:
        return fn()
    finally:
        states[a] = torch.get_rng_state()
        torch.set_rng_state(before)
