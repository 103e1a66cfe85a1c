"""MILModel: the shared projection phi followed by a MIL head, as used by both ScanGen branches.

Task branch:    logits = head(scatter(phi(x[mask])))   (phi only ever sees real patches)
ScanGen branch: z = project(items) = phi(items)         (items: slide means or patches, (n, D))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scangen.models.base import MILHead, MILOutput, validate_bags
from scangen.models.projection import Projection


class MILModel(nn.Module):
    """phi: R^D -> R^H applied patch-wise, then a MIL head on the (B, N, H) padded batch."""

    def __init__(self, phi: Projection, head: MILHead) -> None:
        super().__init__()
        if phi.out_dim != head.dim:
            raise ValueError(f"head: expects feature size {head.dim} but phi outputs {phi.out_dim}")
        self.phi = phi
        self.head = head

    @property
    def in_dim(self) -> int:
        """Embedding size D the model expects."""
        return self.phi.in_dim

    def embed(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, N, D) padded bags -> (B, N, H) with phi applied to real patches and zeros elsewhere."""
        validate_bags(x, mask, self.phi.in_dim)
        if bool(mask.all()):  # no padding (usual for subsampled training batches): skip gather and scatter
            return self.phi(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
        z = self.phi(x[mask])  # (n_real, H), row-major order of the mask
        h = z.new_zeros((x.shape[0], x.shape[1], z.shape[-1]))
        h[mask] = z
        return h

    def forward(self, x: Tensor, mask: Tensor) -> MILOutput:
        """Predict one logit per bag: x (B, N, D), mask (B, N) bool -> MILOutput."""
        return self.head(self.embed(x, mask), mask)

    def project(self, x: Tensor) -> Tensor:
        """phi(x) for the ScanGen branch: (n, D) -> (n, H)."""
        if x.ndim != 2:
            raise ValueError(f"x: expected (n, D) items for project(), got shape {tuple(x.shape)}")
        return self.phi(x)

    def task_loss(
        self, x: Tensor, mask: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, MILOutput]:
        """Task loss (head's ``train_loss``: BCE, DS-MIL's two-stream loss, SlotMIL augmentations)."""
        return self.head.train_loss(self.embed(x, mask), mask, y, generator)
