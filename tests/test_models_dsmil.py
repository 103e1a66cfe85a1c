"""DS-MIL (Li et al. 2021): critical instance under masking, attention equation, loss and outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scangen.models import DSMILHead

DIM = 6


def make_head(**kwargs) -> DSMILHead:
    torch.manual_seed(0)
    return DSMILHead(DIM, **kwargs).double().eval()


def test_padded_instance_is_never_critical():
    head = make_head()
    with torch.no_grad():
        head.instance_classifier.weight.zero_()
        head.instance_classifier.weight[0, 0] = 1.0
        head.instance_classifier.bias.zero_()
    # real patches all score negative; a zero (padded) row would score 0 and win if not masked
    h = torch.zeros(2, 5, DIM, dtype=torch.float64)
    h[0, :3, 0] = torch.tensor([-3.0, -0.5, -2.0])
    h[1, :2, 0] = torch.tensor([-4.0, -1.0])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = head(h, mask)
    assert out.extras["critical_index"].tolist() == [1, 1]
    torch.testing.assert_close(out.extras["max_instance_logit"], torch.tensor([-0.5, -1.0], dtype=torch.float64))
    # garbage with huge values in the padding changes nothing either
    h_bad = h.clone()
    h_bad[~mask] = 1e9
    out_bad = head(h_bad, mask)
    assert out_bad.extras["critical_index"].tolist() == [1, 1]
    torch.testing.assert_close(out_bad.logits, out.logits)
    assert torch.all(out.extras["instance_logits"][~mask] == 0)


def test_attention_matches_official_formula():
    head = make_head(value_network="linear")
    g = torch.Generator().manual_seed(1)
    h = torch.randn(1, 7, DIM, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 7, dtype=torch.bool)
    mask[0, 5:] = False
    out = head(h, mask)
    feats = h[0, :5]
    scores = head.instance_classifier(feats).squeeze(-1)
    m = int(scores.argmax())
    queries = head.q(feats)
    a = torch.softmax(queries @ head.q(feats[m]) / math.sqrt(128), dim=0)
    bag = a @ head.v(feats)
    bag_logit = (head.fcc.weight.flatten() * bag).sum() + head.fcc.bias
    assert out.extras["critical_index"].item() == m
    torch.testing.assert_close(out.extras["attention"][0, :5], a)
    torch.testing.assert_close(out.bag_embedding[0], bag)
    torch.testing.assert_close(out.extras["bag_logit"], bag_logit.reshape(1))


def test_loss_is_half_bag_half_max_instance():
    head = make_head()
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 4, DIM, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 1:] = False
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    loss, out = head.train_loss(h, mask, y)
    expected = 0.5 * F.binary_cross_entropy_with_logits(out.extras["bag_logit"], y) + 0.5 * (
        F.binary_cross_entropy_with_logits(out.extras["max_instance_logit"], y)
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert head.loss(out, y).item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("predict", ["average_probs", "average_logits", "bag"])
def test_prediction_modes(predict):
    head = make_head(predict=predict)
    g = torch.Generator().manual_seed(3)
    h = torch.randn(4, 5, DIM, generator=g, dtype=torch.float64) * 3
    out = head(h, torch.ones(4, 5, dtype=torch.bool))
    a, b = out.extras["bag_logit"], out.extras["max_instance_logit"]
    if predict == "bag":
        want = a
    elif predict == "average_logits":
        want = 0.5 * (a + b)
    else:
        p = 0.5 * torch.sigmoid(a) + 0.5 * torch.sigmoid(b)
        want = torch.log(p) - torch.log1p(-p)
    torch.testing.assert_close(out.logits, want)


def test_average_probs_is_stable_for_extreme_logits():
    head = make_head()
    a = torch.tensor([80.0, -80.0, 50.0], dtype=torch.float64)
    b = torch.tensor([90.0, -70.0, -50.0], dtype=torch.float64)
    logit = head._combine(a, b)
    assert torch.isfinite(logit).all()
    assert logit[2].item() == pytest.approx(0.0, abs=1e-9)  # 0.5 * (1 + 0) = 0.5


@pytest.mark.parametrize("value_network", ["identity", "linear", "linear_relu"])
@pytest.mark.parametrize("nonlinear_query", [True, False])
def test_variants_build_and_run(value_network, nonlinear_query):
    head = make_head(value_network=value_network, nonlinear_query=nonlinear_query)
    out = head(torch.randn(2, 3, DIM, dtype=torch.float64), torch.ones(2, 3, dtype=torch.bool))
    assert out.bag_embedding.shape == (2, DIM)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"value_network": "mlp"}, "value_network"), ({"predict": "max"}, "predict"), ({"query_dim": 0}, "query_dim")],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSMILHead(DIM, **kwargs)
