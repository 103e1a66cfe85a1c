"""Where each scan's patches come from: per-scan placement, tiling and tissue detection.

Each scan places the glass at its own random offset t in the scanner's level-0 frame and tiles that
frame on a regular grid of T level-0 pixels (T = 224 at 40x, 448 at 20x: a 20x patch of 224 pixels
covers 4x the area). A tile is tissue when the class under its centre is not glass. So two scans of the
same specimen see the same tissue but through different tile grids, and a 20x scan has about a quarter
as many tissue tiles. Bag size: a specimen draws a lognormal tissue budget (median bag_median, log-sd
bag_sigma, clipped to [bag_min, bag_max]); each scan keeps budget * exp(0.05 z) / (T/224)^2 of its tissue
tiles (tissue detection differs a little between scans), chosen at random, in reading order. Stored
coordinates are scanner-frame level-0 top-left corners (x, y); rendering uses tissue-frame positions.
Registered tiles: per multiscanner specimen, n_registered tissue positions (tile centres), shared by all
its scans (same tile_id), each rendered with that scan's footprint and scanner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scangen.simulate.config import SimConfig
from scangen.simulate.tissue import GLASS, Specimens, class_at

BASE_TILE = 224


@dataclass
class Tiling:
    """Patch positions of all scans, concatenated in slide order.

    offsets (n_slides + 1,) int64; coords (N, 2) int32 scanner-frame top-left; tissue_xy (N, 2) float64
    tissue-frame top-left; footprint (N,) level-0 side; scan (N,) slide row of each patch.
    """

    offsets: np.ndarray
    coords: np.ndarray
    tissue_xy: np.ndarray
    footprint: np.ndarray
    scan: np.ndarray


def specimen_budgets(rng: np.random.Generator, cfg: SimConfig, n_specimens: int) -> np.ndarray:
    """Lognormal 40x bag-size budget per specimen, clipped to [bag_min, bag_max]."""
    raw = np.exp(np.log(cfg.bag_median) + cfg.bag_sigma * rng.standard_normal(n_specimens))
    return np.clip(raw, cfg.bag_min, cfg.bag_max)


def tile_scans(rng: np.random.Generator, cfg: SimConfig, spec: Specimens, spec_of_scan: np.ndarray,
               mag_of_scan: np.ndarray, budgets: np.ndarray) -> Tiling:
    """Tile every scan (one row per slide) and choose its bag of tissue tiles."""
    extent = cfg.grid_cells * cfg.cell_px
    coords, tissue, foot, counts = [], [], [], []
    for s, mag in zip(spec_of_scan.tolist(), mag_of_scan.tolist()):
        size = BASE_TILE * (40 // int(mag))
        tx, ty = rng.integers(0, 4 * BASE_TILE, size=2)
        kx = np.arange(max(0, (tx - size) // size), (tx + extent) // size + 1)
        ky = np.arange(max(0, (ty - size) // size), (ty + extent) // size + 1)
        gx, gy = np.meshgrid(kx * size, ky * size)
        sx, sy = gx.ravel(), gy.ravel()
        px, py = (sx - tx).astype(np.float64), (sy - ty).astype(np.float64)
        centre = class_at(spec, np.full(px.shape, s), px + size / 2.0, py + size / 2.0)
        fg = np.flatnonzero(centre != GLASS)
        want = budgets[s] * np.exp(0.05 * rng.standard_normal()) / (size / BASE_TILE) ** 2
        n = int(min(fg.size, max(1, round(want))))
        keep = np.sort(rng.choice(fg, size=n, replace=False))
        coords.append(np.stack([sx[keep], sy[keep]], axis=1))
        tissue.append(np.stack([px[keep], py[keep]], axis=1))
        foot.append(np.full(n, size))
        counts.append(n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Tiling(
        offsets=offsets,
        coords=np.concatenate(coords).astype(np.int32),
        tissue_xy=np.concatenate(tissue).astype(np.float64),
        footprint=np.concatenate(foot).astype(np.float64),
        scan=np.repeat(np.arange(len(counts)), counts),
    )


def registered_centres(rng: np.random.Generator, cfg: SimConfig, spec: Specimens,
                       specimens: np.ndarray) -> list[np.ndarray]:
    """Per specimen in `specimens`: (R, 2) tissue-frame tile centres on tissue, R = n_registered
    (or every tissue cell when a specimen has fewer)."""
    out = []
    for s in specimens.tolist():
        cy, cx = np.nonzero(spec.maps[s] != GLASS)
        r = min(cfg.n_registered, cx.size)
        pick = np.sort(rng.choice(cx.size, size=r, replace=False))
        jitter = rng.uniform(0.25, 0.75, size=(r, 2))
        out.append(np.stack([(cx[pick] + jitter[:, 0]) * cfg.cell_px, (cy[pick] + jitter[:, 1]) * cfg.cell_px], axis=1))
    return out
