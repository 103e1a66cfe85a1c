"""Samplers: task batches cover the pool; ScanGen batches hold both pair kinds in the subset."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.constants import SCANNERS_40X
from scangen.train.samplers import PermutationStream, ScanGenSampler, TaskSampler, has_both_pair_kinds


def _slides(n_spec: int = 10, drop: dict[int, list[str]] | None = None) -> pl.DataFrame:
    rows = []
    for i in range(n_spec):
        split = "scangen_train" if i < n_spec - 2 else "val"
        scans = [(s, 40) for s in SCANNERS_40X] + [("GT450", 20)]
        for scanner, mag in scans:
            if drop and scanner in drop.get(i, []):
                continue
            rows.append({"slide_id": f"{i}-{scanner}-{mag}", "specimen_id": f"p{i}", "cohort": "multiscanner",
                         "scanner": scanner, "magnification": mag, "split": split, "egfr": i % 2})
    rows.append({"slide_id": "t0", "specimen_id": "t0", "cohort": "task", "scanner": "AT2",
                 "magnification": 40, "split": "task_train", "egfr": 1})
    return pl.DataFrame(rows)


def test_permutation_stream_passes_cover_pool() -> None:
    stream = PermutationStream(7, np.random.default_rng(0))
    draws = [stream.take(3) for _ in range(7)]
    assert all(len(set(d.tolist())) == 3 for d in draws)
    counts = np.bincount(np.concatenate(draws), minlength=7)
    assert counts.min() >= 2 and counts.max() <= 4  # 21 draws over 7 items: about 3 each


def test_task_sampler_uses_whole_pool() -> None:
    sampler = TaskSampler(np.arange(100, 110), np.array([0, 1] * 5), 4, np.random.default_rng(0))
    seen = np.concatenate([sampler.next()[0] for _ in range(5)])
    assert set(seen.tolist()) == set(range(100, 110))
    with pytest.raises(ValueError, match="single class"):
        TaskSampler(np.arange(3), np.ones(3), 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="task_train"):
        TaskSampler(np.arange(0), np.ones(0), 2, np.random.default_rng(0))


def test_scangen_batches_have_k_specimens_all_scans_and_both_pairs() -> None:
    slides = _slides()
    sampler = ScanGenSampler(slides, k=3, rng=np.random.default_rng(0))
    for _ in range(10):
        batch = sampler.next()
        rows = slides[batch.positions]
        assert set(rows["split"]) == {"scangen_train"}
        assert set(rows["magnification"]) == {40}
        assert rows["specimen_id"].n_unique() == 3 and rows.height == 3 * 6
        assert all(has_both_pair_kinds(batch.specimen, batch.scanner))
        assert np.array_equal(np.unique(batch.specimen).size, 3)


def test_scangen_subset_and_20x_labels() -> None:
    slides = _slides()
    sub = ScanGenSampler(slides, k=2, rng=np.random.default_rng(1), scanner_subset=("AT2", "P1000"))
    rows = slides[sub.next().positions]
    assert set(rows["scanner"]) == {"AT2", "P1000"}
    with_20 = ScanGenSampler(slides, k=2, rng=np.random.default_rng(1), scanner_subset=("GT450",), include_20x=True)
    batch = with_20.next()
    assert with_20.scanner_labels == ["GT450", "GT450@20x"]
    assert np.unique(batch.scanner).size == 2 and batch.positions.size == 4


def test_specimens_without_a_pair_are_counted_and_bad_pools_fail() -> None:
    slides = _slides(drop={0: ["AT2"]})
    sampler = ScanGenSampler(slides, k=2, rng=np.random.default_rng(0), scanner_subset=("AT2", "B300"))
    assert sampler.n_excluded == 1 and "p0" not in sampler.specimens
    with pytest.raises(ValueError, match="at least two are needed"):
        ScanGenSampler(_slides(n_spec=3), k=2, rng=np.random.default_rng(0))
