"""Stacked models: the vmapped head loss with per-member augmentation draws (SlotMIL) against each
member's own `train_loss` with its own generator and its own batch width (the looped reference)."""

from __future__ import annotations

import pytest
import torch

from scangen.models import build_model
from scangen.train.stacked import StackedModel, head_is_vmappable

IN_DIM, HIDDEN, BATCH, WIDTH = 12, 16, 6, 9


def _stack(seeds: list[int], **head_kwargs) -> StackedModel:
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(build_model(IN_DIM, "slotmil", HIDDEN, num_slots=4, num_heads=2, **head_kwargs).double())
    return StackedModel(models)


def _inputs(widths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h (A, B, WIDTH, H) padded to WIDTH, member a's real columns within its own width widths[a]."""
    g = torch.Generator().manual_seed(7)
    h = torch.randn(len(widths), BATCH, WIDTH, HIDDEN, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, WIDTH + 1, (len(widths), BATCH), generator=g)
    mask = torch.zeros(len(widths), BATCH, WIDTH, dtype=torch.bool)
    for a, w in enumerate(widths):
        lengths[a] = lengths[a].clamp(max=w)
        lengths[a, 0] = w  # member a's batch is exactly widths[a] wide, as its own collate makes it
        for b in range(BATCH):
            mask[a, b, : lengths[a, b]] = True
    y = (torch.rand(len(widths), BATCH, generator=g) > 0.5).double()
    return h, mask, y


def _gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(100 + s) for s in seeds]


@pytest.mark.parametrize("head_kwargs", [{}, {"mixup_prob": 0.5}, {"subsample_rate": 1.0}, {"mixup_alpha": 0.0},
                                         {"attention_norm": "queries", "subsample_rate": 0.3}])
def test_vmapped_slotmil_losses_and_gradients_equal_each_members_own_train_loss(head_kwargs) -> None:
    seeds, widths = [0, 1, 2, 3], [9, 4, 7, 1]
    vm, loop = _stack(seeds, **head_kwargs), _stack(seeds, **head_kwargs)
    assert vm.vmappable
    loop.vmappable = False  # the reference: member by member through the head's train_loss
    h, mask, y = _inputs(widths)
    for _ in range(3):  # successive calls keep drawing from each member's generator in the same order
        gens_vm, gens_loop = _gens(seeds), _gens(seeds)
        got = vm.head_losses(vm.params, h, mask, y, widths, gens_vm, None)
        want = loop.head_losses(loop.params, h, mask, y, widths, gens_loop, [torch.get_rng_state()] * 4)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        got.sum().backward()
        want.sum().backward()
        for name, p in vm.params.items():
            if name.startswith("head."):
                torch.testing.assert_close(p.grad, loop.params[name].grad, rtol=0, atol=1e-12, msg=name)
        assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(gens_vm, gens_loop))
        h = h + 0.1


def test_head_dropout_keeps_slotmil_member_by_member() -> None:
    torch.manual_seed(0)
    assert not head_is_vmappable(build_model(IN_DIM, "slotmil", HIDDEN, num_slots=4, num_heads=2, dropout=0.2))
    assert head_is_vmappable(build_model(IN_DIM, "slotmil", HIDDEN, num_slots=4, num_heads=2))
