"""Embedding-level robustness to scanners: one entry point over the three metric modules.

- `robustness_index` (PathoROB RI, `robustness_index.py`),
- `cross_scanner_retrieval` / `wsi_retrieval` (plismbench top-k and cosine, `retrieval.py`),
- `scanner_predictability` (specimen-grouped linear probe, `predictability.py`).

The array functions take any (n, D) embedding (raw FM patches, mean embedding per WSI, phi's
output). The `*_bags` helpers here read `scangen.store.Bags` / `RegisteredBags`: they keep the
scans of one cohort at one magnification (by default the multi-scanner cohort at its primary, i.e.
highest, magnification, where each scanner appears once per specimen), say how many slides they
kept, and build per-row labels (scanners by `scangen.scan_labels.scanner_labels`, the bare name at
the highest magnification kept: 'GT450@20x' when 20x scans are kept beside 40x ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from scangen.metrics.predictability import PredictabilityResult, scanner_predictability
from scangen.metrics.retrieval import (
    DEFAULT_TOP_K,
    TileRetrievalResult,
    WsiRetrievalResult,
    cross_scanner_retrieval,
    wsi_retrieval,
)
from scangen.metrics.robustness_index import (
    DEFAULT_K_CANDIDATES,
    RobustnessIndexResult,
    pathorob_k_candidates,
    robustness_index,
)
from scangen.scan_labels import scanner_labels

__all__ = [
    "DEFAULT_K_CANDIDATES",
    "DEFAULT_TOP_K",
    "PredictabilityResult",
    "RobustnessIndexResult",
    "TileRetrievalResult",
    "WsiRetrievalResult",
    "cross_scanner_retrieval",
    "cross_scanner_retrieval_bags",
    "patch_table",
    "pathorob_k_candidates",
    "robustness_index",
    "robustness_index_bags",
    "scanner_predictability",
    "scanner_predictability_bags",
    "select_scans",
    "wsi_retrieval",
    "wsi_retrieval_bags",
]


PRIMARY = "primary"
"""magnification="primary": the highest magnification among the selected cohort's scans."""
Magnification = int | str | None


def select_scans(bags, cohort: str | None = "multiscanner", magnification: Magnification = PRIMARY):
    """The bags of `cohort` scanned at `magnification` ("primary": the cohort's highest; None keeps
    all); errors if none remain."""
    slides = bags.slides
    keep = np.ones(slides.height, dtype=bool)
    if cohort is not None and "cohort" in slides.columns:
        keep &= (slides["cohort"] == cohort).to_numpy()
    if magnification == PRIMARY:
        if "magnification" not in slides.columns:
            raise ValueError("slides table has no 'magnification' column to find the primary magnification")
        if not keep.any():
            raise ValueError(f"no slide has cohort={cohort!r} ({slides.height} slides in all)")
        magnification = int(slides["magnification"].filter(pl.Series(keep)).max())
    elif magnification is not None and not isinstance(magnification, (int, np.integer)):
        raise ValueError(f"magnification: expected an integer, 'primary' or None, got {magnification!r}")
    for column, wanted in (("cohort", cohort), ("magnification", magnification)):
        if wanted is None:
            continue
        if column not in slides.columns:
            raise ValueError(f"slides table has no '{column}' column to select {column}={wanted!r}")
        keep &= (slides[column] == wanted).to_numpy()
    if not keep.any():
        raise ValueError(
            f"no slide has cohort={cohort!r} and magnification={magnification!r} "
            f"({slides.height} slides in all)"
        )
    return bags if keep.all() else bags.select(np.flatnonzero(keep))


def scan_labels(slides: pl.DataFrame) -> np.ndarray:
    """Scanner label per slide, the bare name at the highest magnification present ('GT450@20x' below)."""
    if "magnification" not in slides.columns or slides.height == 0:
        return scanner_labels(slides)
    return scanner_labels(slides, base=int(slides["magnification"].max()))


@dataclass(frozen=True)
class PatchTable:
    """Per-row arrays of a set of bags: features (m, D) and the labels of each row."""

    features: np.ndarray
    scanner: np.ndarray
    specimen: np.ndarray
    slide_index: np.ndarray
    tissue_class: np.ndarray | None


def patch_table(bags, max_patches_per_slide: int | None = None, seed: int = 0) -> PatchTable:
    """Flatten bags to rows, optionally keeping at most `max_patches_per_slide` random rows each.

    The subsample is drawn with `numpy.random.default_rng(seed)`, so it is reproducible.
    """
    lengths = np.diff(bags.offsets)
    slide_of_row = np.repeat(np.arange(len(lengths)), lengths)
    rows = np.arange(len(slide_of_row))
    if max_patches_per_slide is not None:
        if max_patches_per_slide < 1:
            raise ValueError(f"max_patches_per_slide must be >= 1, got {max_patches_per_slide}")
        rng = np.random.default_rng(seed)
        rank = np.empty(len(rows), dtype=np.int64)
        order = np.lexsort((rng.random(len(rows)), slide_of_row))
        rank[order] = np.arange(len(rows)) - np.repeat(bags.offsets[:-1], lengths)
        rows = np.flatnonzero(rank < max_patches_per_slide)
    tissue = getattr(bags, "tissue_class", None)
    return PatchTable(
        features=np.asarray(bags.features[rows], dtype=np.float32),
        scanner=scan_labels(bags.slides)[slide_of_row[rows]],
        specimen=bags.slides["specimen_id"].cast(str).to_numpy()[slide_of_row[rows]],
        slide_index=slide_of_row[rows],
        tissue_class=None if tissue is None else np.asarray(tissue)[rows],
    )


def robustness_index_bags(
    bags,
    level: str = "patch",
    label: str | None = None,
    cohort: str | None = "multiscanner",
    magnification: Magnification = PRIMARY,
    max_patches_per_slide: int | None = None,
    seed: int = 0,
    k: int | None = None,
    k_candidates: Sequence[int] = DEFAULT_K_CANDIDATES,
) -> RobustnessIndexResult:
    """RI of a store's embeddings: patches labelled by `tissue_class` (level="patch"), or mean
    embeddings per WSI labelled by the slides column `label` (level="slide")."""
    sel = select_scans(bags, cohort, magnification)
    if level == "patch":
        table = patch_table(sel, max_patches_per_slide, seed)
        if table.tissue_class is None:
            raise ValueError(
                "patch-level robustness index needs a biological label per patch, but these bags "
                "carry no tissue_class (the embeddings table has no 'tissue_class' column; import per-patch "
                "labels with patch_label/patch_labels)"
            )
        return robustness_index(
            table.features, table.tissue_class, table.scanner, table.specimen, k, k_candidates
        )
    if level == "slide":
        if label is None or label not in sel.slides.columns:
            raise ValueError(
                f"slide-level robustness index needs a biological label column in slides "
                f"(label={label!r}; columns: {sel.slides.columns})"
            )
        if sel.slides[label].null_count() == sel.slides.height:
            raise ValueError(
                f"slide-level robustness index: column {label!r} is empty (an embedding-only store has no slide "
                f"label); use level='patch' with per-patch labels"
            )
        return robustness_index(
            sel.mean_embeddings(),
            sel.slides[label].to_numpy(),
            scan_labels(sel.slides),
            sel.slides["specimen_id"].cast(str).to_numpy(),
            k,
            k_candidates,
        )
    raise ValueError(f"level must be 'patch' or 'slide', got {level!r}")


def cross_scanner_retrieval_bags(
    registered,
    ks: Sequence[int] = DEFAULT_TOP_K,
    cohort: str | None = "multiscanner",
    magnification: Magnification = PRIMARY,
    pool: str = "scanner",
    max_queries: int | None = None,
    seed: int = 0,
) -> TileRetrievalResult:
    """plismbench twin-tile retrieval on `scangen.store.RegisteredBags` (see `retrieval.py`)."""
    sel = select_scans(registered, cohort, magnification)
    lengths = np.diff(sel.offsets)
    slide_of_row = np.repeat(np.arange(len(lengths)), lengths)
    return cross_scanner_retrieval(
        sel.features,
        np.asarray(sel.tile_id),
        scan_labels(sel.slides)[slide_of_row],
        sel.slides["specimen_id"].cast(str).to_numpy()[slide_of_row],
        ks,
        pool=pool,
        max_queries=max_queries,
        seed=seed,
    )


def wsi_retrieval_bags(
    bags,
    ks: Sequence[int] = DEFAULT_TOP_K,
    cohort: str | None = "multiscanner",
    magnification: Magnification = PRIMARY,
) -> WsiRetrievalResult:
    """Same-specimen retrieval between mean embeddings per WSI."""
    sel = select_scans(bags, cohort, magnification)
    return wsi_retrieval(sel.mean_embeddings(), sel.slides["specimen_id"].cast(str).to_numpy(), ks)


def scanner_predictability_bags(
    bags,
    cohort: str | None = "multiscanner",
    magnification: Magnification = PRIMARY,
    n_splits: int = 5,
    seed: int = 0,
) -> PredictabilityResult:
    """Scanner predictability from the mean embedding of each WSI."""
    sel = select_scans(bags, cohort, magnification)
    return scanner_predictability(
        sel.mean_embeddings(),
        scan_labels(sel.slides),
        sel.slides["specimen_id"].cast(str).to_numpy(),
        n_splits=n_splits,
        seed=seed,
    )
