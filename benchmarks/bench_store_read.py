"""Read speed of the embedding store against np.load of the very same array, in one run.

Writes a realistic store (default 1000 slides x ~500 patches x D = 1536, float16: about 1.5 GB of
embeddings), saves the same flat array with np.save, then times (best of --repeats):
  np.load of the .npy, load_bags of the whole store (stored dtype and float32), a 10 % slide subset,
  one decoding thread, and pyarrow's own decoder instead of the numpy page decoder (fastread.py).
Prints each time and its ratio to np.load. Target: full load <= 8x np.load.

    .venv/bin/python benchmarks/bench_store_read.py [--slides 1000] [--patches 500] [--dim 1536]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from scangen.constants import SCANNERS_40X
import scangen.store.columns as store_columns
from scangen.store import load_bags, write_embeddings, write_meta, write_slides


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _best(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and CPU seconds of `repeats` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = _cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return min(walls), min(cpus)


def build(store: Path, n_slides: int, patches: int, dim: int, dtype: np.dtype, seed: int) -> np.ndarray:
    """Write a valid store with bags of Poisson(patches) patches; returns the flat features."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.poisson(patches, n_slides))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    features = np.empty((offsets[-1], dim), dtype=dtype)
    step = 65536
    for start in range(0, len(features), step):
        block = rng.standard_normal((min(step, len(features) - start), dim), dtype=np.float32)
        features[start : start + len(block)] = block
    ids = [f"slide-{i:05d}" for i in range(n_slides)]
    slides = pl.DataFrame({
        "slide_id": ids,
        "specimen_id": [f"spec-{i // len(SCANNERS_40X):05d}" for i in range(n_slides)],
        "cohort": "multiscanner",
        "scanner": [SCANNERS_40X[i % len(SCANNERS_40X)] for i in range(n_slides)],
        "magnification": 40,
        "egfr": [(i // len(SCANNERS_40X)) % 2 for i in range(n_slides)],
        "simulated": True,
    })
    coords = rng.integers(0, 100_000, (len(features), 2), dtype=np.int32)
    write_slides(store, slides)
    write_embeddings(store, "bench", ids, offsets, features, coords)
    write_meta(store, {"simulated": True, "models": {"bench": dim}})
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=1000)
    parser.add_argument("--patches", type=int, default=500)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)

    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        features = build(root / "store", args.slides, args.patches, args.dim, dtype, args.seed)
        write_s = time.perf_counter() - t0
        np.save(root / "features.npy", features)
        gb = features.nbytes / 1e9
        print(f"store: {args.slides} slides, {len(features)} patches, D={args.dim}, {dtype.name}: {gb:.2f} GB "
              f"(generate + write {write_s:.1f} s)")
        del features

        np_wall, np_cpu = _best(lambda: np.load(root / "features.npy"), args.repeats)
        print(f"np.load                   {np_wall:7.3f} s  ({gb / np_wall:.2f} GB/s)  cpu {np_cpu:.3f} s")
        ids = [f"slide-{i:05d}" for i in range(0, args.slides, 10)]
        cases = {
            f"load_bags ({dtype.name})": lambda: load_bags(root / "store", "bench", dtype=None),
            "load_bags (float32)": lambda: load_bags(root / "store", "bench", dtype=np.float32),
            "load_bags (10% subset)": lambda: load_bags(root / "store", "bench", ids, dtype=None),
        }
        def one_thread():
            saved, store_columns.READ_WORKERS = store_columns.READ_WORKERS, 1
            try:
                load_bags(root / "store", "bench", dtype=None)
            finally:
                store_columns.READ_WORKERS = saved

        def pyarrow_decoder():
            saved, store_columns.FAST_PATH = store_columns.FAST_PATH, False
            try:
                load_bags(root / "store", "bench", dtype=None)
            finally:
                store_columns.FAST_PATH = saved

        cases["load_bags (1 thread)"] = one_thread
        cases["load_bags (pyarrow only)"] = pyarrow_decoder
        print(f"(load_bags decodes row groups with {store_columns.READ_WORKERS} threads)")
        for name, fn in cases.items():
            wall, cpu = _best(fn, args.repeats)
            print(f"{name:25s} {wall:7.3f} s  ratio to np.load {wall / np_wall:5.2f}x  cpu {cpu:.3f} s "
                  f"(cpu ratio {cpu / max(np_cpu, 1e-9):.1f}x)")
        check = load_bags(root / "store", "bench", dtype=None)
        same = np.array_equal(check.features, np.load(root / "features.npy"))
        print(f"round trip exact: {same}")


if __name__ == "__main__":
    main()
