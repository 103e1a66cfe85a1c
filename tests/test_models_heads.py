"""Properties every MIL head must have: shapes, padding/mask invariance, permutation invariance."""

from __future__ import annotations

import pytest
import torch

from scangen.models import HEADS, MILHead, build_head

DIM = 16
NAMES = sorted(HEADS)


def make_head(name: str, **kwargs) -> MILHead:
    torch.manual_seed(0)
    return build_head(name, DIM, **kwargs).double().eval()


def padded_batch(lengths: list[int], seed: int = 0, fill: float = float("nan")):
    """Random bags padded to the longest; padded rows hold ``fill`` (NaN: must never leak)."""
    g = torch.Generator().manual_seed(seed)
    n_max = max(lengths)
    h = torch.randn(len(lengths), n_max, DIM, generator=g, dtype=torch.float64)
    mask = torch.zeros(len(lengths), n_max, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    h[~mask] = fill
    return h, mask


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name):
    head = make_head(name)
    h, mask = padded_batch([3, 7, 1])
    out = head(h, mask)
    assert out.logits.shape == (3,)
    assert out.bag_embedding.shape[0] == 3 and out.bag_embedding.ndim == 2
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.bag_embedding).all()
    for key, value in out.extras.items():
        assert value.shape[0] == 3, key
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fill", [float("nan"), 1e6, 0.0])
def test_bag_alone_equals_bag_in_padded_batch(name, fill):
    head = make_head(name)
    lengths = [5, 9, 2, 9]
    h, mask = padded_batch(lengths, fill=fill)
    batch = head(h, mask)
    for i, n in enumerate(lengths):
        alone = head(h[i : i + 1, :n], mask[i : i + 1, :n])
        torch.testing.assert_close(batch.logits[i : i + 1], alone.logits, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(batch.bag_embedding[i : i + 1], alone.bag_embedding, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_padding_may_sit_anywhere(name):
    """Interleaved padding (mask not a prefix) gives the same result as the compact bag."""
    head = make_head(name)
    h, mask = padded_batch([6], seed=4)
    spread = torch.full((1, 11, DIM), float("nan"), dtype=torch.float64)
    spread_mask = torch.zeros(1, 11, dtype=torch.bool)
    positions = torch.tensor([0, 2, 3, 6, 8, 10])
    spread[0, positions] = h[0, :6]
    spread_mask[0, positions] = True
    torch.testing.assert_close(head(spread, spread_mask).logits, head(h, mask).logits, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_patch_order(name):
    head = make_head(name)
    h, mask = padded_batch([8, 5], seed=2)
    out = head(h, mask)
    g = torch.Generator().manual_seed(7)
    perm = torch.randperm(h.shape[1], generator=g)
    permuted = head(h[:, perm], mask[:, perm])
    torch.testing.assert_close(permuted.logits, out.logits, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(permuted.bag_embedding, out.bag_embedding, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["abmil", "abmil_gated", "dsmil"])
def test_attention_is_a_distribution_over_real_patches(name):
    head = make_head(name)
    h, mask = padded_batch([4, 7, 1], seed=5)
    attention = head(h, mask).extras["attention"]
    assert attention.shape == mask.shape
    assert torch.all(attention[~mask] == 0)
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_loss_backward_reaches_every_parameter(name):
    head = build_head(name, DIM).train()
    torch.manual_seed(1)
    h = torch.randn(4, 6, DIM)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 3:] = False
    loss, out = head.train_loss(h, mask, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_numbers(name):
    h, mask = padded_batch([5, 3], seed=9, fill=0.0)
    first = make_head(name)(h, mask).logits
    second = make_head(name)(h, mask).logits
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_bags_raise(name):
    head = make_head(name)
    h, mask = padded_batch([3, 2], fill=0.0)
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"bag\(s\) \[1\]"):
        head(h, empty)
    with pytest.raises(ValueError, match="mask"):
        head(h, mask.long())
    with pytest.raises(ValueError, match="mask"):
        head(h, mask[:, :2])
    with pytest.raises(ValueError, match="H=16"):
        head(h[..., :5], mask)
    with pytest.raises(ValueError, match=r"\(B, N, H\)"):
        head(h[0], mask)
    with pytest.raises(ValueError, match="y"):
        head.train_loss(h, mask, torch.tensor([0.0, 2.0]))


def test_build_head_errors():
    with pytest.raises(ValueError, match="unknown MIL head"):
        build_head("transmil", DIM)
    with pytest.raises(ValueError, match="invalid arguments"):
        build_head("gap", DIM, num_slots=3)
    assert build_head("abmil_gated", DIM).gated and not build_head("abmil", DIM).gated
    assert {build_head(n, DIM).name for n in NAMES} == set(NAMES)
