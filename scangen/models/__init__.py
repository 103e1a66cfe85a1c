"""Models: the projection phi, the MIL heads (GAP, AB-MIL, DS-MIL, SlotMIL) and MILModel.

Heads are built by name through ``HEADS`` / ``build_head``; ``build_model`` pairs a head with phi.
Method notes (which detail comes from which paper or code): docs/mil_models.md.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from scangen.models.abmil import ABMILHead
from scangen.models.base import MILHead, MILOutput, masked_mean, masked_softmax, validate_bags
from scangen.models.dsmil import DSMILHead
from scangen.models.gap import GAPHead
from scangen.models.mil_model import MILModel
from scangen.models.projection import Projection, count_parameters, default_hidden_dim
from scangen.models.slotmil import SlotMILHead

HEADS: dict[str, Callable[..., MILHead]] = {
    "gap": GAPHead,
    "abmil": partial(ABMILHead, gated=False),
    "abmil_gated": partial(ABMILHead, gated=True),
    "dsmil": DSMILHead,
    "slotmil": SlotMILHead,
}
"""Head name -> constructor taking (dim, **kwargs)."""


def build_head(name: str, dim: int, **kwargs: Any) -> MILHead:
    """Build the MIL head ``name`` (one of HEADS) for features of size ``dim``."""
    if name not in HEADS:
        raise ValueError(f"head: unknown MIL head {name!r}; expected one of {sorted(HEADS)}")
    try:
        return HEADS[name](dim, **kwargs)
    except TypeError as exc:  # unknown keyword for this head
        raise ValueError(f"head {name!r}: invalid arguments {sorted(kwargs)}: {exc}") from exc


def build_model(
    in_dim: int,
    head: str = "gap",
    hidden_dim: int | None = None,
    *,
    phi_dropout: float = 0.0,
    **head_kwargs: Any,
) -> MILModel:
    """phi (in_dim -> hidden_dim, default ``default_hidden_dim(in_dim)``) followed by head ``head``."""
    phi = Projection(in_dim, hidden_dim=hidden_dim, dropout=phi_dropout)
    return MILModel(phi, build_head(head, phi.out_dim, **head_kwargs))


__all__ = [
    "ABMILHead",
    "DSMILHead",
    "GAPHead",
    "HEADS",
    "MILHead",
    "MILModel",
    "MILOutput",
    "Projection",
    "SlotMILHead",
    "build_head",
    "build_model",
    "count_parameters",
    "default_hidden_dim",
    "masked_mean",
    "masked_softmax",
    "validate_bags",
]
