"""AB-MIL head (Ilse, Tomczak & Welling, ICML 2018): attention pooling, plain or gated.

Plain:  a_k = softmax_k( w^T tanh(V h_k + b_V) + b_w )
Gated:  a_k = softmax_k( w^T (tanh(V h_k + b_V) * sigmoid(U h_k + b_U)) + b_w )
Bag:    z = sum_k a_k h_k;  logit = c^T z + b_c
The softmax runs over the real patches of each bag only. The biases follow the authors' reference code
(every layer is an affine nn.Linear); the paper's equations omit them. The paper's feature extractor
(before the attention) is played here by phi, so the head takes phi's output directly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scangen.models.base import MILHead, MILOutput, masked_softmax, validate_bags, zero_padding


class ABMILHead(MILHead):
    """Attention-based MIL pooling with one attention branch (K = 1) and a linear classifier.

    Shapes: h (B, N, H), mask (B, N) -> logits (B,), bag_embedding (B, H),
    extras["attention"] (B, N) with zeros at padded positions and rows summing to 1.
    ``attention_dim`` is L in the paper (128 in the reference code).
    """

    def __init__(self, dim: int, attention_dim: int = 128, gated: bool = False) -> None:
        super().__init__(dim)
        if int(attention_dim) <= 0:
            raise ValueError(f"attention_dim: expected a positive size, got {attention_dim}")
        self.gated = bool(gated)
        self.name = "abmil_gated" if self.gated else "abmil"
        self.attention_V = nn.Linear(self.dim, int(attention_dim))
        self.attention_U = nn.Linear(self.dim, int(attention_dim)) if self.gated else None
        self.attention_w = nn.Linear(int(attention_dim), 1)
        self.classifier = nn.Linear(self.dim, 1)

    def attention_scores(self, h: Tensor) -> Tensor:
        """Unnormalised attention scores (B, N) before the masked softmax."""
        hidden = torch.tanh(self.attention_V(h))
        if self.attention_U is not None:
            hidden = hidden * torch.sigmoid(self.attention_U(h))
        return self.attention_w(hidden).squeeze(-1)

    def forward(self, h: Tensor, mask: Tensor) -> MILOutput:
        validate_bags(h, mask, self.dim)
        h = zero_padding(h, mask)
        attention = masked_softmax(self.attention_scores(h), mask, dim=1)
        bag = torch.einsum("bn,bnh->bh", attention, h)
        logits = self.classifier(bag).squeeze(-1)
        return MILOutput(logits=logits, bag_embedding=bag, extras={"attention": attention})
