"""GAP head: global average pooling of the real patches, then an MLP classifier (the paper's default)."""

from __future__ import annotations

from torch import Tensor, nn

from scangen.models.base import MILHead, MILOutput, masked_mean, validate_bags


class GAPHead(MILHead):
    """bag = (1/n) sum_k h_k over the n real patches; logit = W2 ReLU(W1 bag + b1) + b2.

    Shapes: h (B, N, H), mask (B, N) -> logits (B,), bag_embedding (B, H).
    ``classifier_hidden`` defaults to H // 2 (the paper says only "an MLP classifier").
    """

    name = "gap"

    def __init__(self, dim: int, classifier_hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim)
        hidden = max(1, self.dim // 2) if classifier_hidden is None else int(classifier_hidden)
        if hidden <= 0:
            raise ValueError(f"classifier_hidden: expected a positive size, got {classifier_hidden}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.classifier = nn.Sequential(
            nn.Linear(self.dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(self, h: Tensor, mask: Tensor) -> MILOutput:
        validate_bags(h, mask, self.dim)
        bag = masked_mean(h, mask)
        logits = self.classifier(bag).squeeze(-1)
        return MILOutput(logits=logits, bag_embedding=bag, extras={})
