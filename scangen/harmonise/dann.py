"""Adversarial scanner removal (DANN, Ganin & Lempitsky 2015): a scanner classifier behind a
gradient-reversal layer.

The reversal layer R is the identity forward and multiplies the gradient by -lambda backward:
    R(z) = z,    dL/dz = -lambda * dL/dR(z).
With L_adv = CE(g(R(z)), scanner), minimising L_task + w * L_adv trains the classifier g to tell
scanners apart while pushing the encoder that produced z (phi) to make them indistinguishable.
At inference the adversary is dropped: the model reads the slide alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; gradient times -scale backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad.neg() * ctx.scale, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """R(x): x forward, -scale * gradient backward."""
    return GradientReversal.apply(x, scale)


class ScannerAdversary(nn.Module):
    """Scanner classifier g: Linear(in_dim, hidden) -> ReLU -> Linear(hidden, n_scanners), fed
    through a gradient-reversal layer of strength `grl_scale` (an attribute a trainer may ramp).

    forward(z (n, in_dim)) -> scanner logits (n, n_scanners); loss(z, scanner (n,) long) -> scalar
    cross-entropy (mean over items), computed in float32.
    """

    def __init__(self, in_dim: int, n_scanners: int, hidden: int = 128, grl_scale: float = 1.0) -> None:
        super().__init__()
        for name, value, low in (("in_dim", in_dim, 1), ("n_scanners", n_scanners, 2), ("hidden", hidden, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"ScannerAdversary: {name} must be an int >= {low}, got {value!r}")
        if not float(grl_scale) >= 0.0:
            raise ValueError(f"ScannerAdversary: grl_scale must be >= 0, got {grl_scale!r}")
        self.n_scanners = n_scanners
        self.grl_scale = float(grl_scale)
        self.classifier = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_scanners))

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.classifier[0].in_features:
            raise ValueError(f"ScannerAdversary: z must be (n, {self.classifier[0].in_features}), got {tuple(z.shape)}")
        return self.classifier(grad_reverse(z.float(), self.grl_scale))

    def loss(self, z: Tensor, scanner: Tensor) -> Tensor:
        """Cross-entropy of the scanner classifier on R(z); gradients reaching z are reversed."""
        if scanner.ndim != 1 or scanner.shape[0] != z.shape[0] or scanner.dtype != torch.long:
            raise ValueError(
                f"ScannerAdversary.loss: scanner must be a LongTensor of shape ({z.shape[0]},), "
                f"got {scanner.dtype} {tuple(scanner.shape)}"
            )
        if scanner.numel() and (int(scanner.min()) < 0 or int(scanner.max()) >= self.n_scanners):
            raise ValueError(f"ScannerAdversary.loss: scanner ids must lie in [0, {self.n_scanners})")
        return F.cross_entropy(self(z), scanner.to(z.device))
