"""Small hand-made stores shared by the store tests (imported as a module by the other test files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from scangen.store import load_bags, write_embeddings, write_meta, write_slides

FM = "toy-sim"
DIM = 6


def toy_slides(n_specimens: int = 3) -> pl.DataFrame:
    """Two slides per specimen (AT2 and GT450 at 40x), EGFR alternating by specimen."""
    rows = []
    for s in range(n_specimens):
        for scanner in ("AT2", "GT450"):
            rows.append(
                {
                    "slide_id": f"sp{s}-{scanner}",
                    "specimen_id": f"sp{s}",
                    "cohort": "multiscanner",
                    "scanner": scanner,
                    "magnification": 40,
                    "egfr": s % 2,
                    "site": None,
                    "split": "train",
                    "simulated": True,
                    "note": f"extra-{s}",
                }
            )
    return pl.DataFrame(rows)


def toy_bags(n_slides: int, dim: int = DIM, seed: int = 0, dtype=np.float32):
    """Random offsets (bags of 1..6 patches), features, coords and tissue classes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, n_slides)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    features = rng.standard_normal((offsets[-1], dim)).astype(dtype)
    coords = rng.integers(0, 50_000, (offsets[-1], 2)).astype(np.int32)
    tissue = rng.integers(0, 4, offsets[-1]).astype(np.int8)
    return offsets, features, coords, tissue


def make_store(root: Path, dtype=np.float32, seed: int = 0) -> tuple[Path, dict]:
    """Write a complete toy store; returns it and the arrays written (for comparisons)."""
    slides = toy_slides()
    offsets, features, coords, tissue = toy_bags(slides.height, seed=seed, dtype=dtype)
    ids = slides["slide_id"].to_list()
    write_slides(root, slides)
    write_embeddings(root, FM, ids, offsets, features, coords, tissue)
    write_meta(root, {"simulated": True, "models": {FM: DIM}})
    return root, {"slides": slides, "ids": ids, "offsets": offsets, "features": features,
                  "coords": coords, "tissue": tissue}


def test_toy_store_loads(tmp_path: Path) -> None:
    store, data = make_store(tmp_path)
    bags = load_bags(store, FM)
    assert len(bags) == 6 and bags.dim == DIM
    np.testing.assert_array_equal(bags.offsets, data["offsets"])
