"""DS-MIL head (Li, Li & Eliceiri, CVPR 2021), following the authors' code (binli123/dsmil-wsi).

Two streams over the same patch features h_k (here: phi's output), for one output class:
- instance stream: c_k = w_i^T h_k + b_i (one score per patch); its max over the bag is the
  max-pooling prediction, and the argmax over REAL patches is the critical instance m.
- bag stream: q_k = q(h_k) (query network, R^H -> R^128), v_k = v(h_k) (value network),
  a_k = softmax_k( <q_k, q_m> / sqrt(128) ) over the real patches, bag b = sum_k a_k v_k, and the
  bag logit is a Conv1d(1, 1, kernel=H) over the (1 x H) class-by-feature bag matrix (with C = 1
  class it is an affine map R^H -> R).
Training loss (the authors' training script): 0.5 * BCE(bag logit) + 0.5 * BCE(max instance logit).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scangen.models.base import (
    MILHead,
    MILOutput,
    masked_softmax,
    validate_bags,
    validate_targets,
    zero_padding,
)

ValueNet = Literal["identity", "linear", "linear_relu"]
Predict = Literal["average_probs", "average_logits", "bag"]


def _value_network(dim: int, kind: str, dropout: float) -> nn.Module:
    """The value map v: identity (current official default), dropout+linear (2021 release), or +ReLU."""
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim))
    if kind == "linear_relu":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim), nn.ReLU())
    raise ValueError(f"value_network: expected one of 'identity', 'linear', 'linear_relu', got {kind!r}")


class DSMILHead(MILHead):
    """Dual-stream MIL with masked critical-instance selection and masked attention.

    Shapes: h (B, N, H), mask (B, N) -> logits (B,), bag_embedding (B, H).
    extras: "instance_logits" (B, N; 0 at padded positions), "max_instance_logit" (B,),
    "bag_logit" (B,), "attention" (B, N; 0 at padded positions), "critical_index" (B,) int64.

    ``predict`` chooses ``logits``: "average_probs" (default; the official evaluation averages the
    two streams' sigmoid probabilities and we return the logit of that average), "average_logits"
    (the paper's c = (c_m + c_b) / 2), or "bag" (bag stream only).
    ``nonlinear_query`` selects q = Linear-ReLU-Linear-Tanh (official default) vs a single Linear.
    """

    name = "dsmil"

    def __init__(
        self,
        dim: int,
        query_dim: int = 128,
        nonlinear_query: bool = True,
        value_network: ValueNet = "identity",
        dropout_v: float = 0.0,
        predict: Predict = "average_probs",
    ) -> None:
        super().__init__(dim)
        if int(query_dim) <= 0:
            raise ValueError(f"query_dim: expected a positive size, got {query_dim}")
        if not 0.0 <= float(dropout_v) < 1.0:
            raise ValueError(f"dropout_v: expected a probability in [0, 1), got {dropout_v}")
        if predict not in ("average_probs", "average_logits", "bag"):
            raise ValueError(f"predict: expected 'average_probs', 'average_logits' or 'bag', got {predict!r}")
        self.query_dim = int(query_dim)
        self.predict = predict
        self.instance_classifier = nn.Linear(self.dim, 1)
        if nonlinear_query:
            self.q = nn.Sequential(
                nn.Linear(self.dim, self.query_dim),
                nn.ReLU(),
                nn.Linear(self.query_dim, self.query_dim),
                nn.Tanh(),
            )
        else:
            self.q = nn.Linear(self.dim, self.query_dim)
        self.v = _value_network(self.dim, value_network, float(dropout_v))
        self.fcc = nn.Conv1d(1, 1, kernel_size=self.dim)

    def forward(self, h: Tensor, mask: Tensor) -> MILOutput:
        validate_bags(h, mask, self.dim)
        h = zero_padding(h, mask)
        instance = self.instance_classifier(h).squeeze(-1)  # (B, N)
        masked_instance = instance.masked_fill(~mask, float("-inf"))
        max_instance, critical = masked_instance.max(dim=1)  # (B,), (B,) — never a padded patch
        queries = self.q(h)  # (B, N, Q)
        q_crit = queries.gather(1, critical.view(-1, 1, 1).expand(-1, 1, queries.shape[-1]))  # (B, 1, Q)
        scores = (queries * q_crit).sum(dim=-1) / math.sqrt(self.query_dim)  # (B, N)
        attention = masked_softmax(scores, mask, dim=1)
        values = self.v(h)  # (B, N, H)
        bag = torch.einsum("bn,bnh->bh", attention, values)
        # the Conv1d over the (C=1) x H bag matrix is one dot product plus bias: computed as F.linear
        # with its weight (same parameters), which under vmap stays the same product for any number of
        # stacked members (a batched conv does not)
        bag_logit = F.linear(bag, self.fcc.weight.reshape(1, -1), self.fcc.bias).reshape(-1)
        logits = self._combine(bag_logit, max_instance)
        extras = {
            "instance_logits": instance.masked_fill(~mask, 0.0),
            "max_instance_logit": max_instance,
            "bag_logit": bag_logit,
            "attention": attention,
            "critical_index": critical,
        }
        return MILOutput(logits=logits, bag_embedding=bag, extras=extras)

    def _combine(self, bag_logit: Tensor, max_instance: Tensor) -> Tensor:
        """Prediction logit from the two streams according to ``self.predict``."""
        if self.predict == "bag":
            return bag_logit
        if self.predict == "average_logits":
            return 0.5 * (bag_logit + max_instance)
        # logit(0.5 sigmoid(a) + 0.5 sigmoid(b)), computed in log space for stability
        log_p = torch.logaddexp(F.logsigmoid(bag_logit), F.logsigmoid(max_instance))
        log_q = torch.logaddexp(F.logsigmoid(-bag_logit), F.logsigmoid(-max_instance))
        return log_p - log_q

    def loss(self, out: MILOutput, y: Tensor) -> Tensor:
        """0.5 * BCE(bag logit, y) + 0.5 * BCE(max instance logit, y), each a batch mean."""
        bag_logit = out.extras["bag_logit"]
        validate_targets(y, bag_logit.shape[0])
        target = y.to(bag_logit.dtype)
        bag_loss = F.binary_cross_entropy_with_logits(bag_logit, target)
        max_loss = F.binary_cross_entropy_with_logits(out.extras["max_instance_logit"], target)
        return 0.5 * bag_loss + 0.5 * max_loss
