"""Projection phi, MILModel (phi on real patches only) and the build functions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scangen.models import HEADS, MILModel, Projection, build_head, build_model, default_hidden_dim

D = 12


@pytest.mark.parametrize("d, expected", [(768, 256), (1024, 384), (1280, 512), (1536, 512), (384, 256), (100, 256)])
def test_default_hidden_dim(d, expected):
    assert default_hidden_dim(d) == expected


def test_default_hidden_dim_grows_and_stays_in_range():
    sizes = [default_hidden_dim(d) for d in range(64, 4097, 32)]
    assert all(256 <= s <= 512 for s in sizes)
    assert sizes == sorted(sizes)
    with pytest.raises(ValueError, match="in_dim"):
        default_hidden_dim(0)


def test_projection_is_three_layer_mlp():
    phi = Projection(768)
    linears = [m for m in phi.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(768, 256), (256, 256), (256, 256)]
    assert Projection(D, hidden_dim=20, out_dim=7)(torch.randn(3, D)).shape == (3, 7)
    assert Projection(D, hidden_dim=20).out_dim == 20
    with pytest.raises(ValueError, match="dropout"):
        Projection(D, dropout=1.0)
    with pytest.raises(ValueError, match="D=12"):
        Projection(D)(torch.randn(2, 5))


def make_model(head: str = "gap") -> MILModel:
    torch.manual_seed(0)
    return build_model(D, head, hidden_dim=16).double().eval()


def bags(lengths, seed=0, fill=float("nan")):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), D, generator=g, dtype=torch.float64)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    x[~mask] = fill
    return x, mask


@pytest.mark.parametrize("head", sorted(HEADS))
def test_phi_sees_only_real_patches(head):
    model = make_model(head)
    seen: list[int] = []
    model.phi.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    x, mask = bags([4, 9, 1])
    out = model(x, mask)  # NaN padding would poison the result if phi touched it
    assert seen == [14]
    assert torch.isfinite(out.logits).all()
    for i, n in enumerate([4, 9, 1]):
        alone = model(x[i : i + 1, :n], mask[i : i + 1, :n])
        torch.testing.assert_close(out.logits[i : i + 1], alone.logits, atol=1e-10, rtol=1e-10)


def test_embed_scatters_phi_output_and_zero_padding():
    model = make_model()
    x, mask = bags([3, 5], fill=7.0)
    h = model.embed(x, mask)
    assert h.shape == (2, 5, 16)
    torch.testing.assert_close(h[mask], model.phi(x[mask]))
    assert torch.all(h[~mask] == 0)


def test_project_is_phi_and_checks_shape():
    model = make_model()
    items = torch.randn(6, D, dtype=torch.float64)
    torch.testing.assert_close(model.project(items), model.phi(items))
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        model.project(items.unsqueeze(0))


def test_task_loss_trains_phi_and_head():
    model = build_model(D, "abmil", hidden_dim=16).train()
    x, mask = bags([3, 5], fill=0.0)
    loss, out = model.task_loss(x.float(), mask, torch.tensor([1.0, 0.0]))
    loss.backward()
    assert out.logits.shape == (2,)
    assert all(p.grad is not None for p in model.parameters())


def test_half_precision_features_are_accepted():
    model = build_model(D, "gap", hidden_dim=16).eval()
    x, mask = bags([3, 2], fill=0.0)
    out = model(x.half(), mask)
    assert out.logits.dtype == torch.float32


def test_build_model_defaults_and_errors():
    model = build_model(768)
    assert model.phi.out_dim == 256 and model.head.dim == 256 and model.head.name == "gap"
    model = build_model(D, "slotmil", hidden_dim=16, num_slots=3, num_heads=2)
    assert model.head.num_slots == 3
    with pytest.raises(ValueError, match="unknown MIL head"):
        build_model(D, "clam")
    with pytest.raises(ValueError, match="phi outputs"):
        MILModel(Projection(D, hidden_dim=16), build_head("gap", 8))


def test_masked_mean_counts_patches_exactly_in_half_precision() -> None:
    """bf16 cannot hold 1001 exactly; the mean accumulates and divides by the exact count in float32."""
    from scangen.models.base import masked_mean

    torch.manual_seed(0)
    h = (torch.randn(1, 1001, 64) + 3.0).to(torch.bfloat16)
    mask = torch.ones(1, 1001, dtype=torch.bool)
    expected = h.float().mean(dim=1).to(torch.bfloat16)
    rounded_count = h.sum(dim=1) / mask.sum(dim=1, keepdim=True).to(torch.bfloat16)  # the naive form
    assert not torch.equal(rounded_count, expected)
    assert torch.equal(masked_mean(h, mask), expected)
