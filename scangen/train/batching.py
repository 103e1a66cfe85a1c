"""Vectorised collation of bags into padded batches on the training device.

All patch embeddings live in one (N_total, D) tensor with int64 offsets (`BagTensors`), on the
training device when they fit, so a batch is one gather: no per-bag Python loop, no host copy per
step. A batch of B bags becomes x (B, N, D) and mask (B, N) (True = real patch), N = the longest
(possibly subsampled) bag. In training each bag longer than `max_patches` keeps a uniform random
subset of `max_patches` patches (random keys + top-k per row); at inference every patch is used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scangen.store.bags import Bags
from scangen.store.memmap import BOUNDED_MEMORY_BYTES, MappedPages, keep_freed_memory, return_large_buffers

DEVICE_MEMORY_SHARE = 0.5
"""Largest share of free accelerator memory the feature tensor may take before it stays on the host."""


@dataclass
class BagTensors:
    """Bags as tensors: features (N_total, D) on `storage` device, offsets (n + 1,), lengths (n,),
    slide-mean embeddings (n, D) float32 on the compute device `device`. Memory-mapped features
    (`load_bags(..., mmap=True)`) stay a float16 map on the host whatever the device; `pages` then
    bounds how much of the map stays resident (see scangen.store.memmap.MappedPages)."""

    features: Tensor
    offsets: Tensor
    lengths: Tensor
    means: Tensor
    device: torch.device
    pages: MappedPages | None = None

    @property
    def storage(self) -> torch.device:
        """Device holding the patch features (the compute device unless they did not fit)."""
        return self.features.device

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @classmethod
    def from_bags(cls, bags: Bags, device: torch.device) -> BagTensors:
        """Move `bags` to `device` once (CPU: zero-copy view of the numpy arrays).

        On an accelerator the features stay on the host (pinned) when they exceed
        DEVICE_MEMORY_SHARE of its free memory; batches are then copied per step. Memory-mapped
        features are never copied whole (not to the device, not into pinned host memory).
        """
        lengths = bags.lengths
        if len(bags) and int(lengths.min()) == 0:
            raise ValueError("bags: every slide needs at least one patch; empty bags found")
        pages = MappedPages.of(bags.features)
        mapped = pages is not None
        with warnings.catch_warnings():  # a read-only map: torch warns that writes are unsupported
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            feats = torch.from_numpy(np.ascontiguousarray(bags.features))
        storage = device if not mapped else torch.device("cpu")
        if mapped and feats.numel() * feats.element_size() > BOUNDED_MEMORY_BYTES:
            return_large_buffers()  # bounded memory: batch buffers must not stay behind as heap holes
        else:  # the cohort fits easily: keep freed buffers for reuse instead of re-faulting them
            keep_freed_memory()
        if device.type == "cuda" and not mapped:
            free, _ = torch.cuda.mem_get_info(device)
            if feats.numel() * feats.element_size() > DEVICE_MEMORY_SHARE * free:
                storage = torch.device("cpu")
                feats = feats.pin_memory()
        means = torch.from_numpy(bags.mean_embeddings()).to(device)
        return cls(
            features=feats.to(storage),
            offsets=torch.from_numpy(np.asarray(bags.offsets, dtype=np.int64)).to(storage),
            lengths=torch.from_numpy(lengths.astype(np.int64)).to(storage),
            means=means,
            device=device,
            pages=pages,
        )


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """True when `a` and `b` name the same device.

    `torch.device` equality compares the written index, so "cuda" != "cuda:0" although a tensor
    created on "cuda" lives on "cuda:0" (the current device). An index-less device is read as the
    current one of its type; CPU has a single device whatever the index.
    """
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.index == b.index or a.type == "cpu":
        return True
    current = torch.cuda.current_device() if a.type == "cuda" else 0
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def _patch_columns(
    lengths: Tensor, max_patches: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, int]:
    """Per bag, the patch positions to keep (B, n_max), how many are real (B,) and n_max.

    Bags longer than `max_patches` keep a uniform random subset (random keys + top-k per row);
    shorter bags keep every patch. Positions past a bag's `kept` count are padding (arbitrary).
    """
    device = lengths.device
    l_max = int(lengths.max())
    n_max = l_max if max_patches is None else min(l_max, int(max_patches))
    cols = torch.arange(l_max, device=device)
    if n_max == l_max:
        return cols[None, :].expand(lengths.numel(), l_max), lengths, n_max
    keys = torch.rand((lengths.numel(), l_max), generator=generator, device=device)
    keys = keys.masked_fill(cols[None, :] >= lengths[:, None], 2.0)
    local = torch.topk(keys, n_max, dim=1, largest=False, sorted=True).indices
    return local, torch.clamp(lengths, max=n_max), n_max


def collate(
    bt: BagTensors,
    indices: Tensor | np.ndarray,
    max_patches: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Padded batch of bags `indices`: x (B, N, D) float32 on `bt.device`, mask (B, N) bool.

    With `max_patches`, bags longer than it keep a uniform random subset drawn with `generator`
    (which must live on `bt.storage`); padded rows of x are zero. The rows are gathered with one
    `index_select` into a contiguous block and converted to float32 once (on the compute device
    when the features stay on the host); zeroing runs only when some bag is padded.
    """
    idx = torch.as_tensor(indices, dtype=torch.int64, device=bt.storage).reshape(-1)
    if idx.numel() == 0:
        raise ValueError("indices: expected at least one bag, got none")
    if int(idx.min()) < 0 or int(idx.max()) >= len(bt):
        raise IndexError(f"indices: bag indices out of range for {len(bt)} bags")
    if max_patches is not None and max_patches < 1:
        raise ValueError(f"max_patches: expected None or a positive integer, got {max_patches}")
    local, kept, n_max = _patch_columns(bt.lengths[idx], max_patches, generator)
    mask = torch.arange(n_max, device=bt.storage)[None, :] < kept[:, None]
    padded = bool((kept < n_max).any())
    rows = bt.offsets[idx][:, None] + local
    if padded:  # padding slots read row 0 (always present), zeroed below
        rows = rows.masked_fill(~mask, 0)
    x = bt.features.index_select(0, rows.reshape(-1))
    if bt.pages is not None:
        bt.pages.read(rows)
    x = x.to(bt.device, dtype=torch.float32, non_blocking=True)
    mask = mask.to(bt.device, non_blocking=True)
    if padded:  # writes the padded rows only
        x.index_fill_(0, torch.nonzero(~mask.reshape(-1)).squeeze(1), 0.0)
    return x.view(idx.numel(), n_max, bt.dim), mask


def inference_batches(lengths: np.ndarray, patch_budget: int) -> list[np.ndarray]:
    """Group bag positions so each padded batch holds at most `patch_budget` patch slots.

    Bags are sorted by length (longest first) to limit padding; a bag longer than the budget
    forms a batch on its own. Every position appears exactly once.
    """
    if patch_budget < 1:
        raise ValueError(f"patch_budget: expected a positive integer, got {patch_budget}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < order.size:
        longest = int(lengths[order[start]])
        size = max(1, patch_budget // max(longest, 1))
        batches.append(order[start : start + size])
        start += size
    return batches
