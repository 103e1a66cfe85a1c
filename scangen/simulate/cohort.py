"""Assemble the simulated cohort (design -> tissue -> tiling -> scanning -> FM embeddings) and write it.

`generate_cohort(cfg, seed)` builds everything up to the scanned patch images in memory;
`SimCohort.embed(fm)` maps them through one simulated FM; `simulate_cohort(out_dir, ...)` writes a
store (slides, embeddings and registered tiles per model, meta.json) through `scangen.store`.
Random streams are spawned from one `numpy.random.SeedSequence(seed)` in a fixed order, so the same seed
and configuration give identical arrays and identical file bytes.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from scangen.constants import SIMULATED_MODELS
from scangen.simulate.config import SimConfig
from scangen.simulate.design import make_design
from scangen.simulate.feature_effects import FEATURE_PARAMS_PATH, apply_feature_effects, load_feature_params
from scangen.simulate.foundation_models import FM_PARAMS_PATH, SimulatedFM, load_fm_params, load_models
from scangen.simulate.scanners import PROFILES, apply_scanner, render_neutral, scan_settings
from scangen.simulate.tiling import registered_centres, specimen_budgets, tile_scans
from scangen.simulate.tissue import TISSUE_CLASSES, make_specimens, render_patches

GENERATOR_VERSION = "scangen-sim/1"


@dataclass
class SimCohort:
    """A generated cohort before embedding.

    slides: store slides table (row i = bag i). offsets (n+1,), coords (N, 2) int32, tissue_class (N,)
    int8, images (N, 3, 8, 8) scanned RGB, neutral_images (N, 3, 8, 8) the same tissue rendered by the
    NEUTRAL device (what a model's scanner_sensitivity measures each scan against). Registered tiles
    (multiscanner slides only): reg_slide_ids, reg_offsets, reg_tile_id (N_r,) int32, reg_tissue_class
    (N_r,) int8, reg_images and reg_neutral_images (N_r, 3, 8, 8).
    """

    config: SimConfig
    seed: int
    slides: pl.DataFrame
    offsets: np.ndarray
    coords: np.ndarray
    tissue_class: np.ndarray
    images: np.ndarray
    reg_slide_ids: list[str]
    reg_offsets: np.ndarray
    reg_tile_id: np.ndarray
    reg_tissue_class: np.ndarray
    reg_images: np.ndarray
    neutral_images: np.ndarray
    reg_neutral_images: np.ndarray

    def embed(self, fm: str, registered: bool = False) -> np.ndarray:
        """Embeddings (N, D) float32 of the ordinary (or registered) patches by simulated model `fm`."""
        (model,) = load_models([fm])
        return embed_patches(self, model, registered)


def embed_patches(cohort: SimCohort, model: SimulatedFM, registered: bool = False) -> np.ndarray:
    """Embeddings (N, D) float32 of the cohort's ordinary (or registered) patches by `model`, in the
    cohort's scenario: "image" embeds the scans; "feature" embeds the neutral renderings and adds the
    scanner offsets of `feature_effects` (parameters from fm_params_feature.json)."""
    images = cohort.reg_images if registered else cohort.images
    neutral = cohort.reg_neutral_images if registered else cohort.neutral_images
    if cohort.config.scanner_effect == "image":
        return model.embed(images, neutral)
    params = load_feature_params()
    if model.name not in params:
        raise ValueError(f"{FEATURE_PARAMS_PATH}: no feature-scenario parameters for model {model.name!r}; "
                         "run scripts/calibrate_simulator.py --scenario feature")
    base = model.embed(neutral, neutral)
    if registered:
        slide_ids = np.repeat(np.asarray(cohort.reg_slide_ids, dtype=object), np.diff(cohort.reg_offsets))
    else:
        slide_ids = np.repeat(cohort.slides["slide_id"].to_numpy(), np.diff(cohort.offsets))
    scanner_of = dict(zip(cohort.slides["slide_id"].to_list(), cohort.slides["scanner"].to_list()))
    scanners = np.array([scanner_of[s] for s in slide_ids.tolist()], dtype=object)
    rng = np.random.default_rng([cohort.seed, zlib.crc32(model.name.encode()), int(registered)])
    p = params[model.name]
    return apply_feature_effects(base, model.name, scanners, slide_ids, p["feature_shift"], p["feature_noise"],
                                 cohort.config.scan_jitter, rng)


def generate_cohort(cfg: SimConfig, seed: int = 0, registered_tiles: bool = True) -> SimCohort:
    """Generate the cohort of `cfg` with `seed`, up to scanned patch images (see module docstring)."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(8)]
    design = make_design(rngs[0], cfg)
    spec = make_specimens(rngs[1], cfg, design.egfr, design.stain_h, design.stain_e, design.stain_hue)
    budgets = specimen_budgets(rngs[2], cfg, len(spec))
    mags = design.slides["magnification"].to_numpy()
    tiling = tile_scans(rngs[3], cfg, spec, design.spec, mags, budgets)
    settings = scan_settings(rngs[4], design.slides["scanner"].to_list(), cfg.scan_jitter, cfg.scanner_strength)

    tissue_rgb, tissue_class = render_patches(spec, design.spec[tiling.scan], tiling.tissue_xy[:, 0],
                                              tiling.tissue_xy[:, 1], tiling.footprint, cfg.chunk_patches)
    images = apply_scanner(tissue_rgb, settings, tiling.scan, rngs[5])
    neutral_images = render_neutral(tissue_rgb)
    del tissue_rgb

    ms_rows = np.flatnonzero((design.slides["cohort"] == "multiscanner").to_numpy())
    reg_ids: list[str] = []
    reg_counts: list[int] = []
    reg_scan, reg_tile, reg_xy, reg_fp = [], [], [], []
    if registered_tiles and ms_rows.size:
        ms_specs = np.unique(design.spec[ms_rows])
        centres = dict(zip(ms_specs.tolist(), registered_centres(rngs[6], cfg, spec, ms_specs)))
        for row in ms_rows.tolist():
            c = centres[int(design.spec[row])]
            fp = 224.0 * (40 // int(mags[row]))
            reg_ids.append(design.slides["slide_id"][row])
            reg_counts.append(len(c))
            reg_scan.append(np.full(len(c), row))
            reg_tile.append(np.arange(len(c), dtype=np.int32))
            reg_xy.append(c - fp / 2.0)
            reg_fp.append(np.full(len(c), fp))
    if reg_ids:
        scan = np.concatenate(reg_scan)
        xy = np.concatenate(reg_xy)
        reg_rgb, reg_class = render_patches(spec, design.spec[scan], xy[:, 0], xy[:, 1], np.concatenate(reg_fp),
                                            cfg.chunk_patches)
        reg_images = apply_scanner(reg_rgb, settings, scan, rngs[7])
        reg_neutral = render_neutral(reg_rgb)
        reg_tile_id = np.concatenate(reg_tile)
    else:
        reg_images = np.zeros((0, 3, 8, 8), dtype=np.float32)
        reg_neutral = np.zeros((0, 3, 8, 8), dtype=np.float32)
        reg_class = np.zeros(0, dtype=np.int8)
        reg_tile_id = np.zeros(0, dtype=np.int32)
    return SimCohort(
        config=cfg, seed=int(seed), slides=design.slides.drop("spec"), offsets=tiling.offsets,
        coords=tiling.coords, tissue_class=tissue_class, images=images,
        reg_slide_ids=reg_ids, reg_offsets=np.concatenate([[0], np.cumsum(reg_counts)]).astype(np.int64),
        reg_tile_id=reg_tile_id, reg_tissue_class=reg_class, reg_images=reg_images,
        neutral_images=neutral_images, reg_neutral_images=reg_neutral,
    )


def _clear_previous_store(store: Path) -> None:
    """Remove an earlier simulated store's files from `store`, so no stale model or registered
    table survives a re-simulation; refuse to touch a folder holding a real (imported) store."""
    meta_path = store / "meta.json"
    if meta_path.is_file():
        try:
            simulated = bool(json.loads(meta_path.read_text(encoding="utf-8")).get("simulated", False))
        except (json.JSONDecodeError, AttributeError):
            simulated = False
        if not simulated:
            raise ValueError(f"{store}: holds a store that is not simulated (meta.json); choose another out_dir")
    for sub in ("embeddings", "registered"):
        if (store / sub).is_dir():
            shutil.rmtree(store / sub)
    for name in ("slides.parquet", "meta.json"):
        (store / name).unlink(missing_ok=True)


def simulate_cohort(out_dir: str | Path, size: str = "quick", seed: int = 0, models: list[str] | None = None,
                    registered_tiles: bool = True, config: SimConfig | None = None) -> Path:
    """Generate the simulated cohort and write it as a store in `out_dir`; returns the store path.

    size: "tiny" | "quick" | "paper" (ignored when `config` is given); models: subset of
    constants.SIMULATED_MODELS (default all five); registered_tiles: also write registered tiles.
    """
    from scangen.store import write_embeddings, write_meta, write_registered, write_slides

    cfg = config if config is not None else SimConfig.from_size(size)
    fms = load_models(models)
    cohort = generate_cohort(cfg, seed, registered_tiles)
    store = Path(out_dir)
    _clear_previous_store(store)
    store.mkdir(parents=True, exist_ok=True)
    write_slides(store, cohort.slides)
    slide_ids = cohort.slides["slide_id"].to_list()
    for fm in fms:
        feats = embed_patches(cohort, fm).astype(np.float16)
        write_embeddings(store, fm.name, slide_ids, cohort.offsets, feats, cohort.coords, cohort.tissue_class)
        if cohort.reg_slide_ids:
            reg = embed_patches(cohort, fm, registered=True).astype(np.float16)
            write_registered(store, fm.name, cohort.reg_slide_ids, cohort.reg_offsets, reg, cohort.reg_tile_id,
                             cohort.reg_tissue_class)
    params = load_fm_params(FM_PARAMS_PATH)
    meta = {
        "simulated": True,
        "models": {fm.name: SIMULATED_MODELS[fm.name] for fm in fms},
        "generator": {
            "version": GENERATOR_VERSION,
            "seed": int(seed),
            "registered_tiles": bool(registered_tiles and cohort.reg_slide_ids),
            "config": cfg.to_dict(),
            "fm_params": {fm.name: params[fm.name] for fm in fms},
            **({"feature_params": {fm.name: load_feature_params()[fm.name] for fm in fms}}
               if cfg.scanner_effect == "feature" else {}),
            "scanners": {k: vars(v) for k, v in PROFILES.items()},
            "tissue_classes": list(TISSUE_CLASSES),
        },
    }
    write_meta(store, meta)
    return store
