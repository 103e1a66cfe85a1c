"""Collation of bags: shapes, masks, subsampling, inference batching."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from scangen.store.bags import Bags
from scangen.train.batching import BagTensors, collate, inference_batches, same_device


def _bags(lengths: list[int], dim: int = 3) -> Bags:
    """Bags whose patch j of bag i has features (i, j, 1): every row identifies itself."""
    n = len(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    bag_id = np.repeat(np.arange(n), lengths)
    patch = np.arange(offsets[-1]) - offsets[:-1][bag_id]
    feats = np.stack([bag_id, patch, np.ones_like(patch)] + [np.zeros_like(patch)] * (dim - 3), axis=1)
    slides = pl.DataFrame({"slide_id": [f"s{i}" for i in range(n)]})
    return Bags(slides=slides, features=feats.astype(np.float32), offsets=offsets,
                coords=np.zeros((offsets[-1], 2), np.int32))


def test_collate_all_patches_shapes_mask_and_content() -> None:
    bt = BagTensors.from_bags(_bags([4, 1, 7]), torch.device("cpu"))
    x, mask = collate(bt, [2, 0, 1])
    assert x.shape == (3, 7, 3) and x.dtype == torch.float32
    assert mask.sum(dim=1).tolist() == [7, 4, 1]
    assert torch.equal(x[0, :, 0], torch.full((7,), 2.0))
    assert torch.equal(x[0, :, 1], torch.arange(7.0))
    assert torch.equal(x[1, :4, 1], torch.arange(4.0))
    assert torch.all(x[~mask] == 0)  # padding is zero
    assert torch.all(x[mask][:, 2] == 1)


def test_collate_subsamples_distinct_patches_of_the_right_bag() -> None:
    bt = BagTensors.from_bags(_bags([50, 3, 20]), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x, mask = collate(bt, [0, 1, 2], max_patches=10, generator=gen)
    assert x.shape == (3, 10, 3)
    assert mask.sum(dim=1).tolist() == [10, 3, 10]
    for b, bag in enumerate([0, 1, 2]):
        rows = x[b][mask[b]]
        assert torch.all(rows[:, 0] == bag)
        assert rows[:, 1].unique().numel() == rows.shape[0]  # without replacement
    assert sorted(x[1, :3, 1].tolist()) == [0.0, 1.0, 2.0]  # short bag keeps every patch


def test_subsampling_is_seeded_and_covers_the_bag() -> None:
    bt = BagTensors.from_bags(_bags([30]), torch.device("cpu"))
    a = collate(bt, [0], 5, torch.Generator().manual_seed(1))[0]
    b = collate(bt, [0], 5, torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(2)
    counts = np.zeros(30)
    for _ in range(600):
        x, _ = collate(bt, [0], 5, gen)
        counts[x[0, :, 1].long().numpy()] += 1
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()  # ~uniform (100 each)


def test_collate_errors() -> None:
    bt = BagTensors.from_bags(_bags([2, 2]), torch.device("cpu"))
    with pytest.raises(IndexError, match="out of range"):
        collate(bt, [2])
    with pytest.raises(ValueError, match="at least one bag"):
        collate(bt, [])
    with pytest.raises(ValueError, match="max_patches"):
        collate(bt, [0], max_patches=0)


def test_means_match_bags_and_empty_bags_rejected() -> None:
    bags = _bags([3, 5])
    bt = BagTensors.from_bags(bags, torch.device("cpu"))
    assert np.allclose(bt.means.numpy(), bags.mean_embeddings())
    with pytest.raises(ValueError, match="empty bags"):
        BagTensors.from_bags(_bags([3, 0]), torch.device("cpu"))


def test_inference_batches_cover_every_bag_within_budget() -> None:
    lengths = np.array([5, 50, 7, 3, 200, 40, 1])
    batches = inference_batches(lengths, patch_budget=100)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(lengths.size))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 100
    with pytest.raises(ValueError, match="patch_budget"):
        inference_batches(lengths, 0)


def test_collate_float16_storage_gives_the_same_float32_batch() -> None:
    bags = _bags([9, 2, 30])
    half = Bags(slides=bags.slides, features=bags.features.astype(np.float16), offsets=bags.offsets,
                coords=bags.coords)
    full_bt, half_bt = (BagTensors.from_bags(b, torch.device("cpu")) for b in (bags, half))
    for max_patches in (None, 8):
        x, mask = collate(full_bt, [2, 1, 0], max_patches, torch.Generator().manual_seed(3))
        xh, maskh = collate(half_bt, [2, 1, 0], max_patches, torch.Generator().manual_seed(3))
        assert xh.dtype == torch.float32 and torch.equal(x, xh) and torch.equal(mask, maskh)
        assert torch.all(xh[~maskh] == 0) and mask.sum(dim=1).tolist()[1] == 2


def test_collate_without_padding_fills_every_slot() -> None:
    bt = BagTensors.from_bags(_bags([12, 40]), torch.device("cpu"))
    x, mask = collate(bt, [0, 1], max_patches=10, generator=torch.Generator().manual_seed(0))
    assert bool(mask.all()) and torch.all(x[:, :, 2] == 1)  # every slot holds a real patch
    assert torch.equal(x[:, :, 0], torch.tensor([[0.0] * 10, [1.0] * 10]))


def test_same_device_reads_a_missing_index_as_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert same_device("cpu", torch.device("cpu"))
    assert not same_device("cpu", "meta")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert torch.device("cuda") != torch.device("cuda:0")  # why plain == is not enough
    assert same_device("cuda", "cuda:0") and same_device("cuda:0", torch.device("cuda"))
    assert not same_device("cuda", "cuda:1") and not same_device("cuda:0", "cpu")


def test_allocator_mode_follows_the_size_of_a_mapped_cohort(tiny_store, monkeypatch) -> None:
    """Mapped cohorts above BOUNDED_MEMORY_BYTES get the bounded-memory allocator mode, smaller ones
    and in-memory bags the speed mode; both modes are accepted by glibc on Linux."""
    import sys

    import scangen.train.batching as batching
    from scangen.store import load_bags
    from scangen.store.memmap import keep_freed_memory, return_large_buffers

    calls: list[str] = []
    monkeypatch.setattr(batching, "return_large_buffers", lambda: calls.append("bounded"))
    monkeypatch.setattr(batching, "keep_freed_memory", lambda: calls.append("speed"))
    mapped = load_bags(tiny_store, "phikon-sim", mmap=True)
    small = BagTensors.from_bags(mapped, torch.device("cpu"))
    BagTensors.from_bags(_bags([3, 2]), torch.device("cpu"))
    monkeypatch.setattr(batching, "BOUNDED_MEMORY_BYTES", 0)
    large = BagTensors.from_bags(mapped, torch.device("cpu"))
    assert calls == ["speed", "speed", "bounded"]
    assert small.pages is not None and large.pages is not None  # mapped pages are released in both modes
    assert small.storage == large.storage == torch.device("cpu")
    if sys.platform.startswith("linux"):
        assert return_large_buffers() and keep_freed_memory()  # restores the speed mode for later tests
