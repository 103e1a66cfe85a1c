"""SlotMIL (Keum et al. 2023): shapes, subsampling, Slot-Mixup and their train/eval behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scangen.models import SlotMILHead
from scangen.models.augment import compact, mix, mixup_plan, sample_beta, subsample_mask
from scangen.models.slotmil import DEFAULT_MIXUP_ALPHA, DEFAULT_NUM_SLOTS, DEFAULT_SUBSAMPLE_RATE

DIM = 8


def make_head(**kwargs) -> SlotMILHead:
    torch.manual_seed(0)
    return SlotMILHead(DIM, num_slots=5, num_heads=2, **kwargs).double()


def batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(len(lengths), max(lengths), DIM, generator=g, dtype=torch.float64)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return h, mask


def test_shapes_and_slot_attention():
    head = make_head().eval()
    h, mask = batch([6, 3, 9])
    out = head(h, mask)
    assert out.logits.shape == (3,)
    assert out.bag_embedding.shape == (3, DIM)
    assert out.extras["slots"].shape == (3, 5, DIM)
    attention = out.extras["attention"]
    assert attention.shape == (3, 5, 9)
    assert torch.all(attention.masked_select(~mask[:, None, :].expand_as(attention)) == 0)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(3, 5, dtype=torch.float64))


def test_subsample_mask_keeps_ceil_rate_of_real_patches():
    _, mask = batch([10, 3, 1, 7])
    g = torch.Generator().manual_seed(0)
    kept = subsample_mask(mask, 0.25, g)
    assert kept.sum(dim=1).tolist() == [math.ceil(0.25 * n) for n in (10, 3, 1, 7)]
    assert not torch.any(kept & ~mask)  # a subset of the real patches
    again = subsample_mask(mask, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(kept, again)
    other = subsample_mask(mask, 0.25, torch.Generator().manual_seed(1))
    assert not torch.equal(kept, other)
    assert torch.equal(subsample_mask(mask, 1.0), mask)
    with pytest.raises(ValueError, match="subsample_rate"):
        subsample_mask(mask, 0.0)


def test_compact_moves_real_rows_to_front():
    h, mask = batch([4, 2])
    spread_mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    new_h, new_mask = compact(h, spread_mask)
    assert new_mask.tolist() == [[True, True], [True, True]]
    torch.testing.assert_close(new_h[0], h[0, [1, 2]])
    torch.testing.assert_close(new_h[1], h[1, [0, 3]])


def test_train_loss_subsamples_only_in_train_mode():
    head = make_head(subsample_rate=0.5, mixup_alpha=0.0)
    h, mask = batch([8, 5, 3], seed=1)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    head.train()
    _, out = head.train_loss(h, mask, y, torch.Generator().manual_seed(0))
    assert out.extras["kept_patches"].tolist() == [4, 3, 2]
    head.eval()
    loss, out = head.train_loss(h, mask, y, torch.Generator().manual_seed(0))
    assert out.extras["kept_patches"].tolist() == [8, 5, 3]
    plain = head(h, mask)
    torch.testing.assert_close(out.logits, plain.logits)
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(plain.logits, y).item())


def test_slot_mixup_mixes_slots_and_labels_with_the_same_lambda():
    head = make_head(mixup_alpha=0.4, subsample_rate=1.0).train()
    h, mask = batch([6, 4, 7, 2], seed=2)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    loss, out = head.train_loss(h, mask, y, torch.Generator().manual_seed(5))
    lam = out.extras["mixup_lambda"].item()
    perm = out.extras["mixup_perm"]
    assert 0.0 <= lam <= 1.0
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(out.extras["targets"], lam * y + (1 - lam) * y[perm])
    slots, _ = head.aggregate(h, mask)
    torch.testing.assert_close(out.extras["slots"], lam * slots + (1 - lam) * slots[perm])
    logits, _ = head.classify(out.extras["slots"])
    torch.testing.assert_close(out.logits, logits)
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, out.extras["targets"]).item())


def test_mixup_is_reproducible_and_can_be_switched_off():
    head = make_head(mixup_alpha=1.0, subsample_rate=0.5).train()
    h, mask = batch([6, 4, 7], seed=3)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    first, _ = head.train_loss(h, mask, y, torch.Generator().manual_seed(11))
    second, _ = head.train_loss(h, mask, y, torch.Generator().manual_seed(11))
    assert first.item() == second.item()
    never = make_head(mixup_alpha=1.0, mixup_prob=0.0, subsample_rate=1.0).train()
    _, out = never.train_loss(h, mask, y, torch.Generator().manual_seed(11))
    assert "mixup_lambda" not in out.extras
    _, out = make_head(mixup_alpha=1.0).train().train_loss(h[:1], mask[:1], y[:1])
    assert "mixup_lambda" not in out.extras  # a single bag has no partner


def test_mixup_plan_and_beta_draws():
    g = torch.Generator().manual_seed(0)
    draws = [sample_beta(0.5, g) for _ in range(200)]
    assert all(0.0 <= d <= 1.0 for d in draws)
    assert abs(sum(draws) / len(draws) - 0.5) < 0.1  # Beta(a, a) has mean 1/2
    assert mixup_plan(1, 1.0) is None
    lam, perm = mixup_plan(5, 1.0, generator=torch.Generator().manual_seed(2))
    assert perm.shape == (5,)
    with pytest.raises(ValueError, match="mixup_alpha"):
        sample_beta(0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_slots": 0}, "num_slots"),
        ({"num_heads": 3}, "num_heads"),
        ({"subsample_rate": 1.5}, "subsample_rate"),
        ({"mixup_alpha": -1.0}, "mixup_alpha"),
        ({"mixup_prob": 2.0}, "mixup_prob"),
    ],
)
def test_invalid_options(kwargs, match):
    args = {"num_slots": 4, "num_heads": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SlotMILHead(DIM, **args)


def test_slot_attention_normalisation_is_mask_and_order_invariant():
    head = make_head(attention_norm="queries").eval()
    h, mask = batch([6, 3, 9], seed=4)
    h[~mask] = float("nan")
    out = head(h, mask)
    attention = out.extras["attention"]
    assert torch.isfinite(out.logits).all()
    assert torch.all(attention.masked_select(~mask[:, None, :].expand_as(attention)) == 0)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(3, 5, dtype=torch.float64))
    for i, n in enumerate([6, 3, 9]):
        alone = head(h[i : i + 1, :n], mask[i : i + 1, :n])
        torch.testing.assert_close(out.logits[i : i + 1], alone.logits, atol=1e-10, rtol=1e-10)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(head(h[:, perm], mask[:, perm]).logits, out.logits, atol=1e-10, rtol=1e-10)
    plain = make_head().eval()
    assert not torch.allclose(plain(h, mask).logits, out.logits)
    with pytest.raises(ValueError, match="attention_norm"):
        make_head(attention_norm="softmax")


def test_augmentations_accept_an_explicit_device_generator():
    head = make_head(mixup_alpha=1.0, subsample_rate=0.5).train()
    h, mask = batch([6, 4, 7], seed=6)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    gen = torch.Generator(device="cpu").manual_seed(3)
    loss, out = head.train_loss(h, mask, y, gen)
    assert torch.isfinite(loss) and out.extras["kept_patches"].tolist() == [3, 2, 4]


def test_defaults_follow_the_papers_subsampling_plus_slot_mixup_recipe():
    head = SlotMILHead(DIM, num_heads=2)
    assert head.num_slots == DEFAULT_NUM_SLOTS == 16
    assert head.subsample_rate == DEFAULT_SUBSAMPLE_RATE < 1.0
    assert head.mixup_alpha == DEFAULT_MIXUP_ALPHA > 0.0 and head.mixup_prob == 1.0
    head = head.double().train()
    h, mask = batch([8, 5, 3, 6], seed=7)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    _, out = head.train_loss(h, mask, y, torch.Generator().manual_seed(0))
    expected = [math.ceil(DEFAULT_SUBSAMPLE_RATE * n) for n in (8, 5, 3, 6)]
    assert out.extras["kept_patches"].tolist() == expected
    assert "mixup_lambda" in out.extras and "mixup_perm" in out.extras


def test_default_train_loss_subsamples_then_mixes_in_generator_order():
    head = make_head().train()  # paper defaults: subsampling + Slot-Mixup
    h, mask = batch([7, 4, 6], seed=8)
    h[~mask] = float("nan")
    y = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    loss, out = head.train_loss(h, mask, y, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    kept = subsample_mask(mask, head.subsample_rate, g)
    h_kept, m_kept = compact(h, kept)
    lam, perm = mixup_plan(3, head.mixup_alpha, head.mixup_prob, g)
    slots, _ = head.aggregate(h_kept, m_kept)
    assert out.extras["mixup_lambda"].item() == pytest.approx(lam)
    assert torch.equal(out.extras["mixup_perm"], perm)
    torch.testing.assert_close(out.extras["slots"], mix(slots, lam, perm))
    logits, _ = head.classify(mix(slots, lam, perm))
    torch.testing.assert_close(out.logits, logits)
    target = mix(y, lam, perm)
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item())
    assert torch.isfinite(loss)


def test_forward_never_augments_even_in_train_mode():
    head = make_head()  # augmentations on, dropout 0
    h, mask = batch([6, 2, 5], seed=9)
    evaluated = head.eval()(h, mask).logits
    trained = head.train()(h, mask).logits
    torch.testing.assert_close(trained, evaluated, atol=0.0, rtol=0.0)
    y = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    loss, out = head.eval().train_loss(h, mask, y, torch.Generator().manual_seed(0))
    assert "mixup_lambda" not in out.extras and out.extras["kept_patches"].tolist() == [6, 2, 5]
    torch.testing.assert_close(out.logits, evaluated)
    torch.testing.assert_close(out.extras["targets"], y)
