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

Options (both off by default, i.e. the spec's loss):
- ``pair_norm``: per-kind normalisation, L = alpha L_att / |P| + (1 - alpha) L_rep / |N| (a kind
  with no pair contributes 0). The spec's single denominator lets the more numerous kind dominate:
  a batch of K specimens on C scanners has K C(C-1)/2 attraction but C K(K-1)/2 repulsion pairs.
- ``distance="cosine_norm"``, a length-aware distance (see `distance_matrix`): cosine distance is
  blind to vector length, yet a scanner can shift the norm of an embedding (on the simulated cohort
  the per-scanner mean norm of GAP's bag embedding orders the scanners' logit offsets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_EPS = 1e-8
DISTANCES = ("cosine", "cosine_norm")


@dataclass(frozen=True)
class ScanGenTerms:
    """Loss and its parts: the weighted, pair-averaged loss, the raw sums, and the pair counts."""

    loss: Tensor
    attraction: Tensor
    repulsion: Tensor
    n_attraction: int
    n_repulsion: int
    weighted_attraction: Tensor | None = None
    """The attraction part of `loss` (alpha L_att over its denominator); loss = this + weighted_repulsion."""
    weighted_repulsion: Tensor | None = None
    """The repulsion part of `loss` ((1 - alpha) L_rep over its denominator)."""


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


def norm_aware_distance_matrix(z: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Length-aware distance d_ij = |z_i - z_j|^2 / (|z_i|^2 + |z_j|^2 + eps^2), (n, H) -> (n, n).

    Equal to 1 - 2 <z_i, z_j> / (|z_i|^2 + |z_j|^2) = 1 - cos_ij * 2 r / (1 + r^2) with
    r = |z_j| / |z_i|. Why this form: (1) it is the cosine distance when the norms are equal, so the
    paper's margins keep their meaning; (2) it lies in [0, 2] like the cosine distance (the
    numerator is at most (|z_i| + |z_j|)^2 <= 2 (|z_i|^2 + |z_j|^2)); (3) it is 0 only when
    z_i = z_j, so two scans pointing the same way but with different lengths are still pulled
    together (same direction, norm ratio r: d = (1 - r)^2 / (1 + r^2), e.g. 0.10 for r = 1.58);
    (4) it is invariant to a common rescaling of all items, so the loss cannot be lowered by
    shrinking every embedding. eps keeps it finite and differentiable at z_i = z_j = 0.
    """
    sq = (z * z).sum(dim=1)
    return 1.0 - 2.0 * (z @ z.T) / (sq.unsqueeze(0) + sq.unsqueeze(1) + eps * eps)


def distance_matrix(z: Tensor, distance: str = "cosine", eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise distances (n, n) of items z (n, H): "cosine" (the paper's) or "cosine_norm"."""
    if distance == "cosine":
        return cosine_distance_matrix(z, eps)
    if distance == "cosine_norm":
        return norm_aware_distance_matrix(z, eps)
    raise ValueError(f"distance: expected one of {DISTANCES}, got {distance!r}")


def scangen_loss_terms(
    z: Tensor,
    specimen: Tensor,
    scanner: Tensor,
    alpha: float,
    margin: float,
    eps: float = DEFAULT_EPS,
    *,
    distance: str = "cosine",
    pair_norm: bool = False,
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
    if distance not in DISTANCES:
        raise ValueError(f"distance: expected one of {DISTANCES}, got {distance!r}")
    att_mask, rep_mask = _pair_masks(specimen.to(z.device), scanner.to(z.device))
    n_att, n_rep = int(att_mask.sum().item()), int(rep_mask.sum().item())
    zero = z.sum() * 0.0
    if n_att + n_rep == 0:
        return ScanGenTerms(zero, zero, zero, 0, 0, zero, zero)
    d = distance_matrix(z, distance, eps)
    attraction = torch.where(att_mask, d.square(), torch.zeros_like(d)).sum()
    hinge = torch.clamp(margin - d, min=0.0).square()
    repulsion = torch.where(rep_mask, hinge, torch.zeros_like(d)).sum()
    if pair_norm:
        w_att = alpha * attraction / n_att if n_att else zero
        w_rep = (1.0 - alpha) * repulsion / n_rep if n_rep else zero
    else:
        w_att = alpha * attraction / (n_att + n_rep)
        w_rep = (1.0 - alpha) * repulsion / (n_att + n_rep)
    return ScanGenTerms(w_att + w_rep, attraction, repulsion, n_att, n_rep, w_att, w_rep)


def scangen_loss(
    z: Tensor,
    specimen: Tensor,
    scanner: Tensor,
    alpha: float,
    margin: float,
    *,
    eps: float = DEFAULT_EPS,
    distance: str = "cosine",
    pair_norm: bool = False,
    return_counts: bool = False,
    return_terms: bool = False,
) -> Tensor | tuple:
    """ScanGen loss, a scalar tensor; with ``return_counts`` also (|P|, |N|).

    z (n, H) float; specimen, scanner (n,) integer ids; alpha in [0, 1]; margin m > 0;
    ``distance`` "cosine" (paper) or "cosine_norm" (length-aware); ``pair_norm`` per-kind
    normalisation (module docstring). With ``return_terms``: (loss, {"attraction": t,
    "repulsion": t, "n_att": int, "n_rep": int}) where t are the weighted parts, so that
    loss = attraction + repulsion; with both flags: (loss, (|P|, |N|), terms).
    Returns an attached zero (no warning) when the batch holds no valid pair.
    """
    terms = scangen_loss_terms(z, specimen, scanner, alpha, margin, eps, distance=distance, pair_norm=pair_norm)
    counts = (terms.n_attraction, terms.n_repulsion)
    parts = {
        "attraction": terms.weighted_attraction,
        "repulsion": terms.weighted_repulsion,
        "n_att": terms.n_attraction,
        "n_rep": terms.n_repulsion,
    }
    if return_counts and return_terms:
        return terms.loss, counts, parts
    if return_terms:
        return terms.loss, parts
    if return_counts:
        return terms.loss, counts
    return terms.loss


__all__ = [
    "ScanGenTerms",
    "DISTANCES",
    "cosine_distance_matrix",
    "distance_matrix",
    "norm_aware_distance_matrix",
    "scangen_loss",
    "scangen_loss_terms",
    "scangen_pair_counts",
]
