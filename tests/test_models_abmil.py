"""AB-MIL (Ilse et al. 2018): plain and gated attention equations on a small hand-made case."""

from __future__ import annotations

import math

import pytest
import torch

from scangen.models import ABMILHead


def set_weights(head: ABMILHead) -> None:
    with torch.no_grad():
        head.attention_V.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        head.attention_V.bias.copy_(torch.tensor([0.0, 0.5]))
        head.attention_w.weight.copy_(torch.tensor([[2.0, 1.0]]))
        head.attention_w.bias.fill_(0.3)  # a shared offset: cancels in the softmax
        head.classifier.weight.copy_(torch.tensor([[1.0, -2.0]]))
        head.classifier.bias.fill_(0.1)
        if head.attention_U is not None:
            head.attention_U.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
            head.attention_U.bias.copy_(torch.tensor([-0.5, 0.0]))


PATCHES = [[1.0, 0.0], [0.0, 1.0], [-1.0, 2.0]]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def expected(gated: bool) -> tuple[list[float], list[float], float]:
    """Attention, bag and logit computed by hand from the paper's equations (with the biases)."""
    scores = []
    for x1, x2 in PATCHES:
        v = [math.tanh(x1 + 0.0), math.tanh(-x2 + 0.5)]
        if gated:
            u = [sigmoid(x2 - 0.5), sigmoid(x1 + x2)]
            v = [v[0] * u[0], v[1] * u[1]]
        scores.append(2.0 * v[0] + 1.0 * v[1] + 0.3)
    exps = [math.exp(s) for s in scores]
    a = [e / sum(exps) for e in exps]
    bag = [sum(a[k] * PATCHES[k][d] for k in range(3)) for d in range(2)]
    return a, bag, bag[0] - 2.0 * bag[1] + 0.1


@pytest.mark.parametrize("gated", [False, True])
def test_attention_equations_by_hand(gated):
    head = ABMILHead(2, attention_dim=2, gated=gated).double().eval()
    set_weights(head)
    h = torch.tensor([PATCHES + [[9.0, 9.0]]], dtype=torch.float64)  # one padded row
    mask = torch.tensor([[True, True, True, False]])
    out = head(h, mask)
    a, bag, logit = expected(gated)
    torch.testing.assert_close(out.extras["attention"][0, :3], torch.tensor(a, dtype=torch.float64))
    assert out.extras["attention"][0, 3].item() == 0.0
    torch.testing.assert_close(out.bag_embedding[0], torch.tensor(bag, dtype=torch.float64))
    assert out.logits.item() == pytest.approx(logit, abs=1e-12)


def test_gating_changes_the_attention():
    torch.manual_seed(0)
    plain = ABMILHead(2, attention_dim=2, gated=False).double()
    gated = ABMILHead(2, attention_dim=2, gated=True).double()
    set_weights(plain)
    set_weights(gated)
    h = torch.tensor([PATCHES], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert not torch.allclose(plain(h, mask).extras["attention"], gated(h, mask).extras["attention"])


def test_single_patch_bag_gets_full_attention():
    head = ABMILHead(4, gated=True)
    out = head(torch.randn(1, 1, 4), torch.ones(1, 1, dtype=torch.bool))
    assert out.extras["attention"].item() == pytest.approx(1.0)


def test_invalid_attention_dim():
    with pytest.raises(ValueError, match="attention_dim"):
        ABMILHead(4, attention_dim=0)
