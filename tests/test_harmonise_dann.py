"""DANN's adversary: the reversal layer flips (and scales) the gradient; the scanner classifier
itself still descends its cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scangen.harmonise.dann import ScannerAdversary, grad_reverse


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)


def test_adversary_loss_is_cross_entropy_with_reversed_gradient_to_z() -> None:
    torch.manual_seed(0)
    adv = ScannerAdversary(in_dim=6, n_scanners=3, hidden=8, grl_scale=2.0)
    z = torch.randn(10, 6, requires_grad=True)
    scanner = torch.randint(0, 3, (10,))
    loss = adv.loss(z, scanner)
    loss.backward()
    z_rev, params_rev = z.grad.clone(), [p.grad.clone() for p in adv.parameters()]

    z.grad = None
    adv.zero_grad()
    plain = F.cross_entropy(adv.classifier(z), scanner)
    assert torch.allclose(loss, plain)
    plain.backward()
    assert torch.allclose(z_rev, -2.0 * z.grad)
    for got, want in zip(params_rev, (p.grad for p in adv.parameters())):
        assert torch.allclose(got, want)


def test_zero_scale_stops_the_gradient_to_the_encoder() -> None:
    adv = ScannerAdversary(in_dim=4, n_scanners=2, grl_scale=0.0)
    z = torch.randn(5, 4, requires_grad=True)
    adv.loss(z, torch.tensor([0, 1, 0, 1, 1])).backward()
    assert torch.count_nonzero(z.grad) == 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="n_scanners"):
        ScannerAdversary(4, 1)
    adv = ScannerAdversary(4, 3)
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="LongTensor"):
        adv.loss(z, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        adv.loss(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        adv.loss(torch.randn(2, 5), torch.tensor([0, 1]))
