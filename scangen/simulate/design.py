"""Cohort design: which specimens exist, their labels, labs and stains, and which scans are made of them.

Task cohort (TCGA/CPTAC-like): slides are allocated to sites by weight (largest-remainder rounding),
each site gets round(prevalence * n_site) EGFR-mutant specimens, and every specimen is scanned once on
its site's scanner at 40x. Because prevalence, staining and scanner all differ between sites, a model can
reach above-chance AUC from site/scanner appearance alone (the shortcut the paper worries about).
Multi-scanner cohort: one lab, round(ms_prevalence * n) mutant specimens (at least one of each class),
every specimen scanned on the six 40x scanners and on GT450 at 20x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from scangen.constants import MAGNIFICATION_PAIR_SCANNER, SCANNERS_40X
from scangen.simulate.config import SimConfig

MS_SCANS: tuple[tuple[str, int], ...] = tuple((s, 40) for s in SCANNERS_40X) + ((MAGNIFICATION_PAIR_SCANNER, 20),)
"""The seven scans of every multi-scanner specimen: (scanner, magnification)."""


@dataclass
class Design:
    """Specimen-level and scan-level design.

    Specimen arrays (length S, task specimens first): specimen_id, cohort, site, egfr, stain_h, stain_e,
    stain_hue. Scan table `slides` (one row per WSI, store schema) with column `spec` = specimen row.
    """

    specimen_id: list[str]
    egfr: np.ndarray
    stain_h: np.ndarray
    stain_e: np.ndarray
    stain_hue: np.ndarray
    slides: pl.DataFrame
    spec: np.ndarray


def _allocate(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n, proportional to weights (largest remainder)."""
    share = weights / weights.sum() * n
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def make_design(rng: np.random.Generator, cfg: SimConfig) -> Design:
    """Draw the cohort design (labels, sites, scans) for `cfg`."""
    sites = cfg.task_sites
    counts = _allocate(np.array([s.weight for s in sites], dtype=float), cfg.n_task_slides)
    site_of, egfr_task = [], []
    for k, (site, n_site) in enumerate(zip(sites, counts)):
        n_pos = int(round(site.egfr_prevalence * n_site))
        site_of += [k] * n_site
        egfr_task += [1] * n_pos + [0] * (n_site - n_pos)
    perm = rng.permutation(cfg.n_task_slides)
    site_of = np.array(site_of)[perm]
    egfr_task = np.array(egfr_task, dtype=np.int8)[perm]

    n_ms = cfg.n_ms_specimens
    n_pos = int(np.clip(round(cfg.ms_prevalence * n_ms), 1 if n_ms > 1 else 0, max(n_ms - 1, 1)))
    egfr_ms = rng.permutation(np.array([1] * n_pos + [0] * (n_ms - n_pos), dtype=np.int8))

    n_task = cfg.n_task_slides
    task_ids = [f"TS{i:05d}" for i in range(n_task)]
    ms_ids = [f"MS{i:04d}" for i in range(n_ms)]
    stain = np.array([[s.stain_h, s.stain_e, s.stain_hue] for s in sites])[site_of]
    ms_stain = np.tile(np.array([[1.0, 1.0, 0.0]]), (n_ms, 1))
    all_stain = np.concatenate([stain.reshape(-1, 3), ms_stain])

    task_rows = pl.DataFrame({
        "slide_id": [f"T{i:05d}" for i in range(n_task)],
        "specimen_id": task_ids,
        "cohort": ["task"] * n_task,
        "scanner": [sites[k].scanner for k in site_of],
        "magnification": [40] * n_task,
        "egfr": egfr_task,
        "site": [sites[k].name for k in site_of],
        "spec": np.arange(n_task),
    })
    ms_slide, ms_spec, ms_scanner, ms_mag = [], [], [], []
    for i in range(n_ms):
        for scanner, mag in MS_SCANS:
            ms_slide.append(f"MS{i:04d}-{scanner}-{mag}x")
            ms_spec.append(i)
            ms_scanner.append(scanner)
            ms_mag.append(mag)
    ms_spec_arr = np.array(ms_spec, dtype=np.int64)
    ms_rows = pl.DataFrame({
        "slide_id": ms_slide,
        "specimen_id": [ms_ids[i] for i in ms_spec],
        "cohort": ["multiscanner"] * len(ms_slide),
        "scanner": ms_scanner,
        "magnification": ms_mag,
        "egfr": egfr_ms[ms_spec_arr] if n_ms else np.array([], dtype=np.int8),
        "site": [cfg.ms_site] * len(ms_slide),
        "spec": n_task + ms_spec_arr,
    })
    slides = pl.concat([task_rows, ms_rows], how="vertical_relaxed").with_columns(
        pl.col("magnification").cast(pl.Int16),
        pl.col("egfr").cast(pl.Int8),
        pl.lit(None, dtype=pl.Utf8).alias("split"),
        pl.lit(True).alias("simulated"),
    )
    return Design(
        specimen_id=task_ids + ms_ids,
        egfr=np.concatenate([egfr_task, egfr_ms]).astype(np.int8),
        stain_h=all_stain[:, 0], stain_e=all_stain[:, 1], stain_hue=all_stain[:, 2],
        slides=slides.select("slide_id", "specimen_id", "cohort", "scanner", "magnification", "egfr",
                             "site", "split", "simulated", "spec"),
        spec=slides["spec"].to_numpy(),
    )
