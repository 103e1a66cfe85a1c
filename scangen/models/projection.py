"""The projection network phi: a 3-layer MLP from FM embedding space R^D to the ScanGen space R^H.

phi is shared by both data flows of ScanGen training: the task branch applies it to every real patch
before the MIL head, the ScanGen branch applies it to the items (slide means or patches) on which the
contrastive loss is computed. Baselines keep phi too and train it by cross-entropy alone.
"""

from __future__ import annotations

from torch import Tensor, nn

MIN_HIDDEN = 256
MAX_HIDDEN = 512


def default_hidden_dim(in_dim: int) -> int:
    """Hidden (and output) size H of phi for an FM of embedding size D, in [256, 512].

    H = 256 + (D - 768) / 2, rounded to a multiple of 64 and clipped to [256, 512]: 768 -> 256,
    1024 -> 384, 1280 -> 512, 1536 -> 512. The paper only says "between 256 and 512 depending on the
    FM"; this linear rule is our reading (documented in docs/mil_models.md).
    """
    d = int(in_dim)
    if d <= 0:
        raise ValueError(f"in_dim: expected a positive embedding size D, got {in_dim}")
    raw = 256 + (d - 768) / 2
    rounded = 64 * round(raw / 64)
    return int(min(MAX_HIDDEN, max(MIN_HIDDEN, rounded)))


class Projection(nn.Module):
    """phi(e) = W3 a(LN(W2 a(LN(W1 e + b1)) + b2)) + b3, with a = GELU.

    Shapes: (..., D) -> (..., out_dim). LayerNorm (per item, never across the batch) keeps every item's
    projection independent of which other items share its batch, so padding or batch composition
    cannot change results (BatchNorm would break that). Dropout follows each activation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int | None = None,
        out_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if int(in_dim) <= 0:
            raise ValueError(f"in_dim: expected a positive embedding size, got {in_dim}")
        hidden = default_hidden_dim(in_dim) if hidden_dim is None else int(hidden_dim)
        if hidden <= 0:
            raise ValueError(f"hidden_dim: expected a positive size, got {hidden_dim}")
        out = hidden if out_dim is None else int(out_dim)
        if out <= 0:
            raise ValueError(f"out_dim: expected a positive size, got {out_dim}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.in_dim, self.hidden_dim, self.out_dim = int(in_dim), hidden, out
        self.net = nn.Sequential(
            nn.Linear(self.in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Project (..., D) embeddings to (..., out_dim); input is cast to the weights' dtype."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected last dimension D={self.in_dim}, got {x.shape[-1]}")
        weight = self.net[0].weight
        return self.net(x.to(dtype=weight.dtype))

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, out_dim={self.out_dim}"


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (reported in benchmarks and docs)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["Projection", "default_hidden_dim", "count_parameters", "MIN_HIDDEN", "MAX_HIDDEN"]
