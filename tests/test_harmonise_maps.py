"""Harmonisation machinery shared by all methods: fit positions, test slides never entering a fit,
unknown scanners, dtype and memory of the applied maps. Also holds the hand-built cohorts the
other tests/test_harmonise_*.py files import."""

from __future__ import annotations

import tracemalloc

import numpy as np
import polars as pl
import pytest

from scangen.harmonise import METHODS, fit_harmoniser, harmonise_bags, streaming
from scangen.store import Bags


def make_bags(
    features: list[np.ndarray], scanners: list[str], labels: list[int] | None = None,
    specimens: list[str] | None = None, magnifications: list[int] | None = None,
) -> Bags:
    """Bags from one (n_i, D) array per slide and its scanner (40x unless given)."""
    n = len(features)
    slides = pl.DataFrame({
        "slide_id": [f"S{i:03d}" for i in range(n)],
        "specimen_id": specimens or [f"P{i:03d}" for i in range(n)],
        "scanner": scanners,
        "magnification": pl.Series(magnifications or [40] * n, dtype=pl.Int16),
        "egfr": pl.Series(labels or [i % 2 for i in range(n)], dtype=pl.Int8),
    })
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(f) for f in features], out=offsets[1:])
    x = np.concatenate(features).astype(features[0].dtype)
    return Bags(slides, x, offsets, np.zeros((len(x), 2), dtype=np.int32))


def paired_cohort(
    n_specimens: int = 12, scanners: tuple[str, ...] = ("A", "B", "C"), dim: int = 6, patches: int = 30,
    shift: float = 3.0, scale: tuple[float, ...] | None = None, seed: int = 0,
) -> tuple[Bags, np.ndarray, np.ndarray]:
    """Every specimen scanned on every scanner: x = base_s * scale_b + shift_b (same base patches).

    Returns the bags, the per-scanner shifts (S, D) and the positions of the first half of the
    specimens (the fit set); slides are ordered specimen-major.
    """
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0.0, shift, size=(len(scanners), dim))
    scales = np.ones(len(scanners)) if scale is None else np.asarray(scale)
    feats, scans, labels, specs = [], [], [], []
    for s in range(n_specimens):
        base = rng.normal(0.0, 1.0, size=(patches, dim)) + rng.normal(0.0, 1.0, size=dim)
        for b, name in enumerate(scanners):
            feats.append((base * scales[b] + shifts[b]).astype(np.float32))
            scans.append(name)
            labels.append(s % 2)
            specs.append(f"P{s:03d}")
    bags = make_bags(feats, scans, labels, specs)
    fit = np.arange((n_specimens // 2) * len(scanners))
    return bags, shifts, fit


def test_fit_positions_are_checked() -> None:
    bags, _, fit = paired_cohort(n_specimens=4)
    mask = np.zeros(len(bags), dtype=bool)
    mask[fit] = True
    np.testing.assert_array_equal(streaming.fit_positions_array(mask, len(bags)), fit)
    np.testing.assert_array_equal(streaming.fit_positions_array(fit[::-1], len(bags)), fit)
    cases = ((np.array([], dtype=np.int64), "empty"), (np.array([0, len(bags)]), "lie in"),
             (np.array([1, 1, 2]), "repeated"), (mask[:-1], "mask"), (np.array([0.5]), "1-D array"))
    for bad, msg in cases:
        with pytest.raises(ValueError, match=f"fit_positions.*{msg}"):
            harmonise_bags(bags, bad, "standardize")


def test_method_names_are_checked_and_none_passes_through() -> None:
    bags, _, fit = paired_cohort(n_specimens=4)
    assert harmonise_bags(bags, fit, "none") is bags
    with pytest.raises(ValueError, match="method: expected"):
        harmonise_bags(bags, fit, "harmony")


@pytest.mark.parametrize("method", METHODS)
def test_test_slides_never_enter_a_fit(method: str) -> None:
    """Perturbing every non-fit slide (features and labels) leaves the fitted parameters and the
    harmonised fit slides bit-identical."""
    bags, _, fit = paired_cohort()
    held = np.setdiff1d(np.arange(len(bags)), fit)
    rows = np.concatenate([np.arange(bags.offsets[i], bags.offsets[i + 1]) for i in held])
    noisy = bags.features.copy()
    noisy[rows] += np.random.default_rng(5).normal(0.0, 10.0, size=(len(rows), bags.dim)).astype(np.float32)
    flipped = bags.slides.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(held.tolist())).then(1 - pl.col("egfr")).otherwise(pl.col("egfr"))
        .cast(pl.Int8).alias("egfr")
    )
    other = Bags(flipped, noisy, bags.offsets, bags.coords)
    first, second = fit_harmoniser(bags, fit, method), fit_harmoniser(other, fit, method)
    assert first.same_parameters(second)
    assert set(first.fit_slide_ids) == set(bags.slides[fit]["slide_id"].to_list())
    out_a, out_b = first.apply(bags), second.apply(other)
    fit_rows = slice(0, int(bags.offsets[fit[-1] + 1]))
    np.testing.assert_array_equal(out_a.features[fit_rows], out_b.features[fit_rows])


@pytest.mark.parametrize("method", METHODS)
def test_maps_are_affine_per_slide_and_keep_dtype(method: str) -> None:
    """Mean of the harmonised patches == the map of the slide mean; float16 in gives float16 out."""
    bags, _, fit = paired_cohort()
    maps = fit_harmoniser(bags, fit, method)
    out = maps.apply(bags)
    assert out.features.dtype == np.float32 and not np.shares_memory(out.features, bags.features)
    assert out.slides is bags.slides and out.offsets is bags.offsets
    np.testing.assert_allclose(out.mean_embeddings(), maps.transform(bags.mean_embeddings(), bags.slides), atol=1e-4)
    half = Bags(bags.slides, bags.features.astype(np.float16), bags.offsets, bags.coords)
    out16 = maps.apply(half)
    assert out16.features.dtype == np.float16
    np.testing.assert_allclose(out16.features, out.features, atol=0.05 * (1 + np.abs(out.features).max()))


def test_unknown_scanner_at_apply_names_it() -> None:
    bags, _, fit = paired_cohort(scanners=("A", "B"))
    maps = fit_harmoniser(bags, fit, "standardize")
    other = make_bags([bags.bag(0), bags.bag(1)], ["A", "B"], magnifications=[40, 20])
    with pytest.raises(ValueError, match=r"B@20x.*not in the fit set"):
        maps.apply(other)


@pytest.mark.parametrize("method", METHODS)
def test_apply_makes_one_copy_only(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Peak traced memory of fit + apply stays near one output copy when chunks are small."""
    monkeypatch.setattr(streaming, "CHUNK_ELEMENTS", 4096)
    bags, _, fit = paired_cohort(n_specimens=40, patches=400, dim=8, seed=1)
    tracemalloc.start()
    try:
        harmonise_bags(bags, fit, method)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * bags.features.nbytes, (peak, bags.features.nbytes)


@pytest.mark.parametrize("method", ["standardize", "combat"])
def test_simulated_store_fits_on_the_training_splits(tiny_store, method: str) -> None:
    """On the tiny store, a fit on task_train + scangen_train covers every scanner label of the
    held-out slides (GT450@20x included) and gives finite features."""
    from scangen.splits import specimen_splits
    from scangen.store import load_bags

    bags = load_bags(tiny_store, "phikon-sim")
    split = specimen_splits(bags.slides, seed=0)["split"]
    fit = np.flatnonzero(split.is_in(["task_train", "scangen_train"]).to_numpy())
    maps = fit_harmoniser(bags, fit, method)
    assert "GT450@20x" in maps.scanners
    out = maps.apply(bags)
    assert out.features.shape == bags.features.shape and np.isfinite(out.features).all()
