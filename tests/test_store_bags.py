"""Bags in memory: lengths, views, vectorised select, float32 means, slide lookup, shape checks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.store import Bags
from test_store_common import toy_bags, toy_slides


@pytest.fixture()
def bags() -> Bags:
    slides = toy_slides()
    offsets, features, coords, tissue = toy_bags(slides.height, seed=3)
    return Bags(slides, features, offsets, coords, tissue)


def test_lengths_dim_and_bag_view(bags: Bags) -> None:
    assert len(bags) == 6
    assert bags.dim == 6
    np.testing.assert_array_equal(bags.lengths, np.diff(bags.offsets))
    b2 = bags.bag(2)
    np.testing.assert_array_equal(b2, bags.features[bags.offsets[2] : bags.offsets[3]])
    assert np.shares_memory(b2, bags.features)
    np.testing.assert_array_equal(bags.bag(-1), bags.bag(5))
    with pytest.raises(IndexError):
        bags.bag(6)


def test_select_reorders_all_row_fields(bags: Bags) -> None:
    picked = bags.select([4, 0, 2])
    assert picked.slide_ids == [bags.slide_ids[i] for i in (4, 0, 2)]
    for j, i in enumerate((4, 0, 2)):
        np.testing.assert_array_equal(picked.bag(j), bags.bag(i))
        rows = slice(bags.offsets[i], bags.offsets[i + 1])
        got = slice(picked.offsets[j], picked.offsets[j + 1])
        np.testing.assert_array_equal(picked.coords[got], bags.coords[rows])
        np.testing.assert_array_equal(picked.tissue_class[got], bags.tissue_class[rows])
    assert picked.offsets[0] == 0 and picked.offsets[-1] == len(picked.features)


def test_select_mask_negative_empty_and_contiguous(bags: Bags) -> None:
    mask = np.array([True, False, True, False, False, True])
    np.testing.assert_array_equal(bags.select(mask).features, bags.select([0, 2, 5]).features)
    assert bags.select([-1]).slide_ids == [bags.slide_ids[-1]]
    empty = bags.select([])
    assert len(empty) == 0 and empty.features.shape == (0, 6)
    run = bags.select([1, 2, 3])
    np.testing.assert_array_equal(run.features, bags.features[bags.offsets[1] : bags.offsets[4]])
    with pytest.raises(IndexError):
        bags.select([7])
    with pytest.raises(ValueError, match="boolean mask"):
        bags.select(np.array([True, False]))


def test_mean_embeddings_matches_loop_and_accumulates_in_float32() -> None:
    slides = toy_slides()
    offsets, features, coords, _ = toy_bags(slides.height, seed=5)
    b = Bags(slides, features, offsets, coords)
    expected = np.stack([features[a:z].mean(axis=0) for a, z in zip(offsets[:-1], offsets[1:])])
    got = b.mean_embeddings()
    assert got.dtype == np.float32 and got.shape == (6, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # float16 storage: 4000 patches of value 1000 would overflow a float16 sum (max 65504)
    big = np.full((4000, 3), 1000.0, dtype=np.float16)
    one = Bags(slides[:1], big, np.array([0, 4000], dtype=np.int64), np.zeros((4000, 2), np.int32))
    np.testing.assert_allclose(one.mean_embeddings(), [[1000.0, 1000.0, 1000.0]])


def test_mean_embeddings_refuses_empty_bag() -> None:
    slides = toy_slides()[:2]
    b = Bags(slides, np.ones((2, 3), np.float32), np.array([0, 2, 2], np.int64), np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="empty bags"):
        b.mean_embeddings()


def test_slide_index(bags: Bags) -> None:
    ids = bags.slide_ids
    np.testing.assert_array_equal(bags.slide_index([ids[3], ids[0]]), [3, 0])
    with pytest.raises(KeyError, match="nope"):
        bags.slide_index(["nope", ids[1]])


def test_constructor_checks_shapes() -> None:
    slides = toy_slides()[:2]
    feats = np.zeros((3, 4), np.float32)
    coords = np.zeros((3, 2), np.int32)
    with pytest.raises(ValueError, match="n_slides"):
        Bags(slides, feats, np.array([0, 3], np.int64), coords)
    with pytest.raises(ValueError, match="end at len"):
        Bags(slides, feats, np.array([0, 1, 2], np.int64), coords)
    with pytest.raises(ValueError, match="coords"):
        Bags(slides, feats, np.array([0, 1, 3], np.int64), coords[:2])
    with pytest.raises(ValueError, match="int64"):
        Bags(slides, feats, np.array([0, 1, 3], np.int32), coords)
    assert isinstance(Bags(slides, feats, np.array([0, 1, 3], np.int64), coords).slides, pl.DataFrame)
