"""Time and peak memory of each harmonisation method (fit on half the slides, apply to all).

Builds bags in memory (default 600 slides x ~200 patches x D = 768, float16, six 40x scanners with a
per-scanner shift and scale), then for each method prints the fit and apply wall-clock seconds and
the peak traced memory of fit + apply divided by the features' size. Target: peak / features <= 1.3
(one output copy plus chunks; the float16 output is the same size as the input).

    .venv/bin/python benchmarks/bench_harmonise.py [--slides 600] [--patches 200] [--dim 768] [--dtype float16]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import polars as pl

from scangen.constants import SCANNERS_40X
from scangen.harmonise import METHODS, fit_harmoniser
from scangen.store import Bags


def build(n_slides: int, patches: int, dim: int, dtype: np.dtype, seed: int = 0) -> Bags:
    """Bags of Poisson(patches) patches; scanner i shifts and scales the standard normal features."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(2, rng.poisson(patches, n_slides))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    scanners = [SCANNERS_40X[i % len(SCANNERS_40X)] for i in range(n_slides)]
    shift = rng.normal(0.0, 0.5, size=(len(SCANNERS_40X), dim)).astype(np.float32)
    scale = rng.uniform(0.7, 1.3, size=(len(SCANNERS_40X), dim)).astype(np.float32)
    features = np.empty((offsets[-1], dim), dtype=dtype)
    for i in range(n_slides):
        b = i % len(SCANNERS_40X)
        block = rng.standard_normal((lengths[i], dim), dtype=np.float32)
        features[offsets[i] : offsets[i + 1]] = block * scale[b] + shift[b]
    slides = pl.DataFrame({
        "slide_id": [f"slide-{i:05d}" for i in range(n_slides)],
        "specimen_id": [f"spec-{i // len(SCANNERS_40X):05d}" for i in range(n_slides)],
        "scanner": scanners,
        "magnification": pl.Series([40] * n_slides, dtype=pl.Int16),
        "egfr": pl.Series(rng.integers(0, 2, n_slides), dtype=pl.Int8),
    })
    return Bags(slides, features, offsets, np.zeros((len(features), 2), dtype=np.int32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=600)
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    args = parser.parse_args()
    bags = build(args.slides, args.patches, args.dim, np.dtype(args.dtype))
    fit = np.arange(len(bags) // 2)
    size = bags.features.nbytes
    print(f"{len(bags)} slides, {len(bags.features)} patches, D={bags.dim}, {args.dtype}: {size / 2**20:.0f} MiB")
    print(f"{'method':<12} {'fit s':>8} {'apply s':>8} {'peak / features':>16}")
    for method in METHODS:
        t0 = time.perf_counter()
        maps = fit_harmoniser(bags, fit, method)
        t1 = time.perf_counter()
        maps.apply(bags)
        t2 = time.perf_counter()
        tracemalloc.start()
        fit_harmoniser(bags, fit, method).apply(bags)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{method:<12} {t1 - t0:8.2f} {t2 - t1:8.2f} {peak / size:16.2f}")


if __name__ == "__main__":
    main()
