"""The ScanGen contrastive loss (a reworking of Hadsell et al. 2006 with cosine distance).

For a batch of n projected items z_i = phi(e_i) with specimen s_i and scanner c_i:
    d_ij  = 1 - cos(z_i, z_j)                                  (in [0, 2])
    P     = {(i, j): i < j, s_i = s_j, c_i != c_j}             attraction pairs
    N     = {(i, j): i < j, c_i = c_j, s_i != s_j}             repulsion pairs
    L_att = sum_P d_ij^2,   L_rep = sum_N max(0, m - d_ij)^2
    L     = (alpha L_att + (1 - alpha) L_rep) / (|P| + |N|)
Pairs with the same specimen AND the same scanner (duplicate scans) belong to neither set. With no
valid pair, L is a zero still attached to the graph (``z.sum() * 0``) so ``backward`` works; the
trainer detects that case through the pair counts (``scangen_pair_counts`` or ``return_counts``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_EPS = 1e-8


@dataclass(frozen=True)
class ScanGenTerms:
    """Loss and its parts: the weighted, pair-averaged loss, the raw sums, and the pair counts."""

    loss: Tensor
    attraction: Tensor
    repulsion: Tensor
    n_attraction: int
    n_repulsion: int


def _check_ids(ids: Tensor, n: int, name: str) -> None:
    if not isinstance(ids, Tensor) or ids.ndim != 1 or ids.shape[0] != n:
        shape = tuple(getattr(ids, "shape", ()))
        raise ValueError(f"{name}: expected a 1-D tensor of {n} ids (one per item), got shape {shape}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer ids, got dtype {ids.dtype}")


def _pair_masks(specimen: Tensor, scanner: Tensor) -> tuple[Tensor, Tensor]:
    """Upper-triangular (n, n) bool masks of attraction and repulsion pairs."""
    n = specimen.shape[0]
    same_s = specimen.unsqueeze(0) == specimen.unsqueeze(1)
    same_c = scanner.unsqueeze(0) == scanner.unsqueeze(1)
    upper = torch.ones((n, n), dtype=torch.bool, device=specimen.device).triu(diagonal=1)
    return upper & same_s & ~same_c, upper & same_c & ~same_s


def scangen_pair_counts(specimen: Tensor, scanner: Tensor) -> tuple[int, int]:
    """(|P|, |N|): numbers of attraction and repulsion pairs in a batch with these ids."""
    if not isinstance(specimen, Tensor) or specimen.ndim != 1:
        raise ValueError(f"specimen: expected a 1-D tensor of ids, got shape {tuple(getattr(specimen, 'shape', ()))}")
    _check_ids(specimen, specimen.shape[0], "specimen")
    _check_ids(scanner, specimen.shape[0], "scanner")
    att, rep = _pair_masks(specimen, scanner.to(specimen.device))
    return int(att.sum().item()), int(rep.sum().item())


def cosine_distance_matrix(z: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """d_ij = 1 - <z_i, z_j> / (sqrt(|z_i|^2 + eps^2) sqrt(|z_j|^2 + eps^2)), (n, H) -> (n, n).

    The eps inside the square root keeps the map smooth at z_i = 0 (gradient defined, cos = 0 there)
    and changes the cosine of non-zero vectors by a relative O(eps^2 / |z|^2) only.
    """
    norms = torch.sqrt((z * z).sum(dim=1) + eps * eps)
    unit = z / norms.unsqueeze(1)
    return 1.0 - unit @ unit.T


def scangen_loss_terms(
    z: Tensor,
    specimen: Tensor,
    scanner: Tensor,
    alpha: float,
    margin: float,
    eps: float = DEFAULT_EPS,
) -> ScanGenTerms:
    """Compute the ScanGen loss and its parts; see the module docstring for the formula."""
    if not isinstance(z, Tensor) or z.ndim != 2:
        shape = tuple(getattr(z, "shape", ()))
        raise ValueError(f"z: expected an (n, H) tensor of projected embeddings, got shape {shape}")
    if not z.is_floating_point():
        raise ValueError(f"z: expected a floating-point tensor, got dtype {z.dtype}")
    n = z.shape[0]
    _check_ids(specimen, n, "specimen")
    _check_ids(scanner, n, "scanner")
    alpha, margin = float(alpha), float(margin)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a weight in [0, 1], got {alpha}")
    if not (margin > 0.0 and math.isfinite(margin)):
        raise ValueError(f"margin: expected a finite radius m > 0, got {margin}")
    if not (float(eps) > 0.0):
        raise ValueError(f"eps: expected a small positive number, got {eps}")
    att_mask, rep_mask = _pair_masks(specimen.to(z.device), scanner.to(z.device))
    n_att, n_rep = int(att_mask.sum().item()), int(rep_mask.sum().item())
    zero = z.sum() * 0.0
    if n_att + n_rep == 0:
        return ScanGenTerms(zero, zero, zero, 0, 0)
    d = cosine_distance_matrix(z, eps)
    attraction = torch.where(att_mask, d.square(), torch.zeros_like(d)).sum()
    hinge = torch.clamp(margin - d, min=0.0).square()
    repulsion = torch.where(rep_mask, hinge, torch.zeros_like(d)).sum()
    loss = (alpha * attraction + (1.0 - alpha) * repulsion) / (n_att + n_rep)
    return ScanGenTerms(loss, attraction, repulsion, n_att, n_rep)


def scangen_loss(
    z: Tensor,
    specimen: Tensor,
    scanner: Tensor,
    alpha: float,
    margin: float,
    *,
    eps: float = DEFAULT_EPS,
    return_counts: bool = False,
) -> Tensor | tuple[Tensor, tuple[int, int]]:
    """ScanGen loss, a scalar tensor; with ``return_counts`` also (|P|, |N|).

    z (n, H) float; specimen, scanner (n,) integer ids; alpha in [0, 1]; margin m > 0.
    Returns an attached zero (no warning) when the batch holds no valid pair.
    """
    terms = scangen_loss_terms(z, specimen, scanner, alpha, margin, eps)
    if return_counts:
        return terms.loss, (terms.n_attraction, terms.n_repulsion)
    return terms.loss


__all__ = [
    "ScanGenTerms",
    "cosine_distance_matrix",
    "scangen_loss",
    "scangen_loss_terms",
    "scangen_pair_counts",
]
