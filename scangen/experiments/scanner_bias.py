"""Scanner bias of raw FM embeddings (paper Fig. 3) and the embedding-level robustness numbers.

No training here. Per FM:
- UMAP (cosine metric, `umap_n_epochs` epochs, fixed `random_state`) of one mean embedding per WSI of
  the held-out test split (the same specimen split the trainer uses: `specimen_splits` with the
  config's split seed), for colouring by scanner and by specimen;
- on the whole multiscanner cohort at its primary (highest) magnification: PathoROB robustness index
  on patches labelled by tissue class (or the store's named patch label), WSI same-specimen
  retrieval, plismbench cross-scanner top-k retrieval of registered tiles (when the store has them)
  and scanner predictability (grouped linear probe), all from `scangen.metrics.robustness`; a metric
  the store cannot support is NaN with the reason in `ri_missing` / `tile_missing`;
- cost bounds (parameters, so a set can trade precision for time): the robustness index uses at
  most `max_patches_per_slide` random patches per WSI (its kNN search is quadratic in patches), the
  tile retrieval at most `max_tile_queries` random queries per scanner pair and direction (the pool
  is never subsampled, so the task is as hard), and the scanner probe optionally runs on the first
  `predictability_pca` principal components of the WSI means (None: the raw embeddings);
- a silhouette of the 2-D UMAP points by scanner and by specimen (higher = points cluster by that
  label), a compact number for what the figure shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import silhouette_score

from scangen.constants import REAL_MODEL_OF
from scangen.metrics import robustness as rb
from scangen.paths import DATA
from scangen.scan_labels import scanner_labels
from scangen.splits import DEFAULT_FRACTIONS, specimen_splits
from scangen.store import Bags, load_bags, load_registered, read_meta, read_slides

CALIBRATION_DIR = DATA / "calibration"


MISSING_PATCH_LABELS = "no per-patch labels in the store (import them with patch_label / patch_labels)"
MISSING_REGISTERED = "no registered tiles in the store (import them with registered=True, or a plismbench folder)"


def held_out_slide_ids(store: Path, split_seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   include_20x: bool = True) -> list[str]:
    """Multiscanner slides of the test split (as the trainer splits them), at the primary magnification
    and, with `include_20x`, at the other magnifications too."""
    slides = specimen_splits(read_slides(store), split_seed, fractions)
    sel = (pl.col("cohort") == "multiscanner") & (pl.col("split") == "test")
    if not include_20x:
        top = slides.filter(pl.col("cohort") == "multiscanner")["magnification"].max()
        sel = sel & (pl.col("magnification") == top)
    ids = slides.filter(sel)["slide_id"].to_list()
    if not ids:
        raise ValueError(f"store {store}: the test split holds no multiscanner slides")
    return ids


def umap_embedding(features: np.ndarray, seed: int = 0, n_neighbors: int = 15,
                   n_epochs: int | None = None) -> np.ndarray:
    """2-D UMAP (cosine metric) of (n, D) features; n_neighbors is capped at n - 1 for tiny sets;
    n_epochs None is umap-learn's default (500 for small sets)."""
    import umap  # imported here: numba compilation makes the import slow

    n = features.shape[0]
    if n < 4:
        raise ValueError(f"features: UMAP needs at least 4 points, got {n}")
    if n_epochs is not None and n_epochs < 1:
        raise ValueError(f"umap_n_epochs must be >= 1 or None, got {n_epochs}")
    reducer = umap.UMAP(metric="cosine", n_neighbors=min(n_neighbors, n - 1), random_state=seed, n_jobs=1,
                        n_epochs=n_epochs)
    return np.asarray(reducer.fit_transform(np.asarray(features, dtype=np.float32)), dtype=np.float64)


def umap_coords(bags: Bags, fm: str, seed: int = 0, n_epochs: int | None = None) -> pl.DataFrame:
    """One row per WSI of `bags`: fm, slide/specimen/scanner/magnification/egfr and umap_1, umap_2."""
    xy = umap_embedding(bags.mean_embeddings(), seed, n_epochs=n_epochs)
    cols = ["slide_id", "specimen_id", "scanner", "magnification", "egfr"]
    return bags.slides.select(cols).with_columns(
        pl.lit(fm).alias("fm"), pl.Series("umap_1", xy[:, 0]), pl.Series("umap_2", xy[:, 1])
    ).select("fm", *cols, "umap_1", "umap_2")


def _silhouette(xy: np.ndarray, labels: np.ndarray) -> float:
    n_lab = np.unique(labels).size
    return float(silhouette_score(xy, labels)) if 1 < n_lab < len(labels) else float("nan")


def _predictability(bags: Bags, seed: int, n_components: int | None) -> rb.PredictabilityResult:
    """Scanner probe on the WSI means, or on their first `n_components` principal components."""
    if n_components is None:
        return rb.scanner_predictability_bags(bags, seed=seed)
    from sklearn.decomposition import PCA

    from scangen.metrics.predictability import scanner_predictability

    means = bags.mean_embeddings()
    if not 1 <= n_components <= min(means.shape):
        raise ValueError(f"predictability_pca must be in 1..{min(means.shape)} or None, got {n_components}")
    z = PCA(n_components, random_state=seed).fit_transform(means)
    return scanner_predictability(z, scanner_labels(bags.slides, base=int(bags.slides["magnification"].max())),
                                  bags.slides["specimen_id"].cast(str).to_numpy(), seed=seed)


def embedding_metrics(store: Path, fm: str, bags: Bags, *, max_patches_per_slide: int | None = 32,
                      max_tile_queries: int | None = 256, predictability_pca: int | None = None,
                      seed: int = 0, top_k: Sequence[int] = (1, 3, 5, 10)) -> dict[str, Any]:
    """Embedding-level robustness of one FM on the multiscanner cohort at its primary magnification
    (see module docstring)."""
    out: dict[str, Any] = {"fm": fm}
    if bags.tissue_class is not None:
        ri = rb.robustness_index_bags(bags, level="patch", max_patches_per_slide=max_patches_per_slide, seed=seed)
        out.update(robustness_index=ri.value, ri_k=ri.k, ri_n_patches=ri.n_samples, ri_missing=None)
    else:
        out.update(robustness_index=float("nan"), ri_k=None, ri_n_patches=0, ri_missing=MISSING_PATCH_LABELS)
    wsi = rb.wsi_retrieval_bags(bags, ks=top_k)
    out.update({f"wsi_top{k}": v for k, v in wsi.top_k.items()})
    if (store / "registered" / f"{fm}.parquet").is_file():
        tiles = rb.cross_scanner_retrieval_bags(load_registered(store, fm), ks=top_k,
                                                max_queries=max_tile_queries, seed=seed)
        out.update({f"tile_top{k}": v for k, v in tiles.mean_top_k.items()}, tile_cosine=tiles.mean_cosine,
                   tile_missing=None)
    else:
        out.update({f"tile_top{k}": float("nan") for k in top_k}, tile_cosine=float("nan"),
                   tile_missing=MISSING_REGISTERED)
    pred = _predictability(bags, seed, predictability_pca)
    out.update(scanner_predictability=pred.balanced_accuracy, predictability_chance=pred.chance)
    return out


def run_scanner_bias(store: Path, fms: Sequence[str], *, seed: int = 0, split_seed: int = 0,
                     max_patches_per_slide: int | None = 32, max_tile_queries: int | None = 256,
                     predictability_pca: int | None = None, umap_n_epochs: int | None = 200,
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(umap coordinates of test WSIs for every FM, one row of embedding metrics per FM)."""
    store = Path(store)
    known = list(read_meta(store).get("models", {}))
    unknown = [fm for fm in fms if fm not in known]
    if unknown:
        raise ValueError(f"fms: {unknown} not in store {store} (models {known})")
    test_ids = held_out_slide_ids(store, split_seed)
    coords, rows = [], []
    for fm in fms:
        bags = load_bags(store, fm)
        multi = rb.select_scans(bags, "multiscanner")
        row = embedding_metrics(store, fm, multi, max_patches_per_slide=max_patches_per_slide,
                                max_tile_queries=max_tile_queries, predictability_pca=predictability_pca, seed=seed)
        test = bags.select(bags.slide_index(test_ids))
        c = umap_coords(test, fm, seed, n_epochs=umap_n_epochs)
        xy = c.select("umap_1", "umap_2").to_numpy()
        row["umap_silhouette_scanner"] = _silhouette(xy, scanner_labels(c, base=int(c["magnification"].max())))
        row["umap_silhouette_specimen"] = _silhouette(xy, c["specimen_id"].to_numpy())
        row["n_test_slides"] = test.slides.height
        coords.append(c)
        rows.append(row)
    return pl.concat(coords), pl.DataFrame(rows)


def missing_notes(metrics: pl.DataFrame) -> str:
    """Markdown lines, one per metric the store cannot support, saying why its column reads "n/a"
    (empty string when every metric was computed); shown under the embedding-level table."""
    notes = []
    for column, label in (("ri_missing", "Robustness index"), ("tile_missing", "Tile retrieval")):
        reasons = sorted({r for r in metrics[column].to_list() if r}) if column in metrics.columns else []
        notes.extend(f"{label} n/a: {reason}." for reason in reasons)
    return "".join(f"\n\n{n}" for n in notes)


def published_values(calibration_dir: Path = CALIBRATION_DIR) -> pl.DataFrame | None:
    """The calibration table (achieved vs published robustness per FM), or None when it is absent."""
    path = Path(calibration_dir) / "achieved_vs_published.parquet"
    return pl.read_parquet(path) if path.is_file() else None


def with_published(metrics: pl.DataFrame, published: pl.DataFrame | None) -> pl.DataFrame:
    """`metrics` plus the real model's name and, where known, the published robustness index
    (`published_ri`, PathoROB) and cross-scanner top-10 retrieval (`published_top10`, plismbench).

    `published` is the calibration script's long table (columns model, metric, published, ...);
    published values do not depend on its protocol, so the first row per (model, metric) is used.
    """
    out = metrics.with_columns(pl.col("fm").replace_strict(REAL_MODEL_OF, default=None).alias("real_model"))
    if published is None:
        return out
    need = {"model", "metric", "published"}
    if not need <= set(published.columns):
        raise ValueError(f"calibration table: expected columns {sorted(need)}, got {published.columns}")
    wide = (
        published.select("model", "metric", "published").unique(["model", "metric"], keep="first", maintain_order=True)
        .pivot(on="metric", index="model", values="published")
    )
    wide = wide.rename({c: f"published_{c}" for c in wide.columns if c != "model"}).rename({"model": "fm"})
    return out.join(wide, on="fm", how="left", maintain_order="left")
