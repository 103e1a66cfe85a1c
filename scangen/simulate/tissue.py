"""Specimens, their tissue maps, and rendering of H&E patch images from them.

Generative model of one specimen s:
- EGFR status y_s (given by the cohort design) and staining (h-, e-intensity, hue) of its lab.
- Composition pi_s ~ Dirichlet(c * softmax(log p0 + e_c * y_s * delta)) over the tissue classes
  (tumour, stroma, lymphocytes, necrosis, normal alveolar); delta lowers lymphocytes and necrosis and
  raises alveolar/lepidic tissue (the composition effect of EGFR, strength e_c = egfr_composition_effect).
- A tissue map on a G x G grid of cells (cell_px level-0 pixels each): an irregular foreground blob
  (smoothed Gaussian field plus radial fall-off, thresholded at a per-specimen tissue fraction) whose
  cells take class argmax_k(log pi_sk + a * F_sk) with smooth random fields F_sk (clustered regions).
- Morphology table M_s[k] of render parameters per class (nuclear stain, nuclear size/spacing and
  density, eosin, fibre texture, air space). Tumour rows move by e_m * y_s * mu (the morphology effect:
  fewer/smaller nuclei, more eosin, more lepidic air space) plus patient phenotype noise of spread
  phenotype_sd * |mu| in every component, so the label shifts appearance only weakly.
Rendering a patch (position, footprint) samples 16 x 16 points of the specimen's hashed texture
fields (fields.value_noise: the same tissue at the same position in every scan), forms haematoxylin
and eosin concentrations H, E in [0, ~1.5], applies Beer-Lambert with the specimen's stain vectors,
RGB = exp(-(s_h H v_h + s_e E v_e)), and box-averages 2 x 2 to an 8 x 8 RGB image. A 20x patch covers
2x the side (4x the area) with the same 8 x 8 pixels: more neighbouring tissue, coarser detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scangen.simulate.config import SimConfig
from scangen.simulate.fields import smooth_fields, value_noise

TISSUE_CLASSES: tuple[str, ...] = ("tumour", "stroma", "lymphocytes", "necrosis", "alveolar")
"""tissue_class codes 0..4 stored with every patch."""
GLASS = len(TISSUE_CLASSES)
"""Render-table row of glass (outside the tissue); never a patch's tissue_class."""

PARAMS: tuple[str, ...] = ("h_base", "h_nuc", "nuc_spacing", "nuc_thr", "e_base", "e_fib",
                           "fib_sx", "fib_sy", "white_thr", "white_spacing")
"""Columns of the morphology table (spacings in level-0 pixels, thresholds on [0, 1) noise)."""

BASE_MORPHOLOGY = np.array([
    # h_base h_nuc nuc_sp nuc_thr e_base e_fib fib_sx fib_sy white_thr white_sp
    [0.25, 1.10, 48.0, 0.55, 0.45, 0.15, 60.0, 60.0, 0.85, 120.0],   # tumour
    [0.10, 0.60, 40.0, 0.80, 0.80, 0.40, 160.0, 30.0, 0.95, 200.0],  # stroma
    [0.20, 1.30, 26.0, 0.40, 0.20, 0.10, 60.0, 60.0, 0.95, 200.0],   # lymphocytes
    [0.30, 0.50, 18.0, 0.60, 0.65, 0.30, 40.0, 40.0, 0.80, 90.0],    # necrosis
    [0.05, 0.80, 36.0, 0.75, 0.35, 0.20, 80.0, 80.0, 0.45, 160.0],   # alveolar
    [0.00, 0.00, 40.0, 1.00, 0.00, 0.00, 60.0, 60.0, -1.0, 100.0],   # glass
], dtype=np.float32)

EGFR_MORPHOLOGY_SHIFT = np.array([0.0, -0.12, -5.0, 0.06, 0.08, 0.0, 0.0, 0.0, -0.10, 0.0], dtype=np.float32)
"""Per-unit change of the tumour row for an EGFR-mutant specimen."""
PHENOTYPE_SCALE = np.array([0.03, 0.08, 4.0, 0.04, 0.05, 0.05, 10.0, 10.0, 0.05, 15.0], dtype=np.float32)
"""Patient-to-patient spread of every morphology parameter (all classes), times phenotype_sd."""

BASE_COMPOSITION = np.array([0.34, 0.26, 0.14, 0.08, 0.18])
EGFR_COMPOSITION_SHIFT = np.array([0.0, 0.0, -0.35, -0.60, 0.35])
H_VECTOR = np.array([0.65, 0.70, 0.29])
E_VECTOR = np.array([0.07, 0.99, 0.11])
SUB = 16
OUT = 8


@dataclass
class Specimens:
    """Arrays describing S specimens (row i = specimen i).

    key (S,) uint64 texture seed; egfr (S,) int8; maps (S, G, G) int8 class per cell (GLASS outside);
    morphology (S, K+1, P) float32 render table; stain (S, 2, 3) float32 OD vectors scaled by intensity.
    """

    key: np.ndarray
    egfr: np.ndarray
    maps: np.ndarray
    morphology: np.ndarray
    stain: np.ndarray
    cell_px: int

    def __len__(self) -> int:
        return int(self.key.shape[0])


def _rotate_about_grey(vec: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate RGB OD vectors (S, 3) about the grey axis by `angle` (S,) radians (Rodrigues)."""
    k = np.full(3, 1.0 / np.sqrt(3.0))
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    cross = np.cross(k[None, :], vec)
    dot = (vec @ k)[:, None]
    return vec * cos + cross * sin + k[None, :] * dot * (1.0 - cos)


def _tissue_maps(rng: np.random.Generator, comp: np.ndarray, grid: int) -> np.ndarray:
    """Cell-level class maps (S, G, G) int8: foreground blob, clustered class regions."""
    n = comp.shape[0]
    shape_field = smooth_fields(rng, (n, grid, grid), sigma=grid / 8.0)
    c = (np.arange(grid) - (grid - 1) / 2.0) / (grid / 2.0)
    radial = (c[None, :] ** 2 + c[:, None] ** 2).astype(np.float32)
    score = shape_field - 2.5 * radial[None]
    frac = rng.uniform(0.4, 0.65, size=n)
    thr = np.array([np.quantile(score[i], 1.0 - frac[i]) for i in range(n)], dtype=np.float32)
    fg = score > thr[:, None, None]
    logits = np.log(comp)[:, :, None, None] + 1.6 * smooth_fields(rng, (n, comp.shape[1], grid, grid), sigma=1.5)
    cls = np.argmax(logits, axis=1).astype(np.int8)
    return np.where(fg, cls, np.int8(GLASS)).astype(np.int8)


def make_specimens(rng: np.random.Generator, cfg: SimConfig, egfr: np.ndarray, stain_h: np.ndarray,
                   stain_e: np.ndarray, stain_hue: np.ndarray) -> Specimens:
    """Draw S specimens with the given labels and lab staining (arrays of length S)."""
    egfr = np.asarray(egfr, dtype=np.int8)
    n = egfr.shape[0]
    y = egfr.astype(np.float64)[:, None]
    prior = np.log(BASE_COMPOSITION)[None, :] + cfg.egfr_composition_effect * y * EGFR_COMPOSITION_SHIFT[None, :]
    prior = np.exp(prior) / np.exp(prior).sum(axis=1, keepdims=True)
    comp = np.stack([rng.dirichlet(cfg.composition_concentration * p) for p in prior])
    comp = np.clip(comp, 1e-4, None)
    maps = _tissue_maps(rng, comp, cfg.grid_cells)

    morph = np.repeat(BASE_MORPHOLOGY[None], n, axis=0)
    noise = rng.standard_normal((n, len(TISSUE_CLASSES), len(PARAMS))).astype(np.float32)
    morph[:, :GLASS] += cfg.phenotype_sd * PHENOTYPE_SCALE[None, None, :] * noise
    morph[:, 0] += cfg.egfr_morphology_effect * egfr.astype(np.float32)[:, None] * EGFR_MORPHOLOGY_SHIFT[None]
    morph[:, :, [2, 6, 7, 9]] = np.maximum(morph[:, :, [2, 6, 7, 9]], 8.0)
    morph[:, :GLASS, [0, 1, 4, 5]] = np.maximum(morph[:, :GLASS, [0, 1, 4, 5]], 0.0)

    jit = np.exp(cfg.stain_jitter * rng.standard_normal((n, 2)))
    hue = np.asarray(stain_hue, dtype=np.float64) + 0.5 * cfg.stain_jitter * rng.standard_normal(n)
    vh = _rotate_about_grey(np.repeat(H_VECTOR[None] / np.linalg.norm(H_VECTOR), n, axis=0), hue)
    ve = _rotate_about_grey(np.repeat(E_VECTOR[None] / np.linalg.norm(E_VECTOR), n, axis=0), hue)
    stain = np.stack([vh * (np.asarray(stain_h) * jit[:, 0])[:, None],
                      ve * (np.asarray(stain_e) * jit[:, 1])[:, None]], axis=1).astype(np.float32)
    key = rng.integers(1, 2**62, size=n, dtype=np.int64).astype(np.uint64)
    return Specimens(key=key, egfr=egfr, maps=maps, morphology=morph.astype(np.float32), stain=stain,
                     cell_px=cfg.cell_px)


def class_at(spec: Specimens, idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tissue class (GLASS outside the map) at level-0 tissue-frame positions of specimens `idx`."""
    grid = spec.maps.shape[1]
    cx = np.floor(x / spec.cell_px).astype(np.int64)
    cy = np.floor(y / spec.cell_px).astype(np.int64)
    inside = (cx >= 0) & (cx < grid) & (cy >= 0) & (cy < grid)
    cls = spec.maps[idx, np.clip(cy, 0, grid - 1), np.clip(cx, 0, grid - 1)]
    return np.where(inside, cls, np.int8(GLASS)).astype(np.int8)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _render_chunk(spec: Specimens, idx: np.ndarray, x0: np.ndarray, y0: np.ndarray, fp: np.ndarray) -> np.ndarray:
    off = ((np.arange(SUB) + 0.5) / SUB).astype(np.float64)
    xs = x0[:, None, None] + off[None, None, :] * fp[:, None, None]
    ys = y0[:, None, None] + off[None, :, None] * fp[:, None, None]
    xs, ys = np.broadcast_arrays(xs, ys)
    sidx = idx[:, None, None]
    cls = class_at(spec, np.broadcast_to(sidx, xs.shape), xs, ys)
    p = spec.morphology[sidx, cls]  # (n, SUB, SUB, P)
    key = spec.key[idx][:, None, None] * np.uint64(8)
    nuc = value_noise(key + np.uint64(1), xs, ys, p[..., 2], p[..., 2])
    fib = value_noise(key + np.uint64(2), xs, ys, p[..., 6], p[..., 7])
    air = value_noise(key + np.uint64(3), xs, ys, p[..., 9], p[..., 9])
    nuclei = _sigmoid((nuc - p[..., 3]) / 0.05)
    white = _sigmoid((air - p[..., 8]) / 0.04)
    h = (p[..., 0] + p[..., 1] * nuclei) * (1.0 - white)
    e = (p[..., 4] + p[..., 5] * fib) * (1.0 - white)
    st = spec.stain[idx]  # (n, 2, 3)
    od = h[..., None] * st[:, None, None, 0, :] + e[..., None] * st[:, None, None, 1, :]
    rgb = np.exp(-od).astype(np.float32)  # (n, SUB, SUB, 3)
    n = rgb.shape[0]
    rgb = rgb.reshape(n, OUT, SUB // OUT, OUT, SUB // OUT, 3).mean(axis=(2, 4))
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))


def render_patches(spec: Specimens, idx: np.ndarray, x0: np.ndarray, y0: np.ndarray, footprint: np.ndarray,
                   chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Render N patches -> (RGB images (N, 3, 8, 8) float32 in (0, 1], tissue_class (N,) int8).

    idx: specimen row of each patch; (x0, y0): tissue-frame level-0 top-left; footprint: side in
    level-0 pixels (224 at 40x, 448 at 20x). tissue_class is the class under the patch centre.
    """
    idx = np.asarray(idx, dtype=np.int64)
    x0 = np.asarray(x0, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    fp = np.broadcast_to(np.asarray(footprint, dtype=np.float64), idx.shape)
    out = np.empty((idx.shape[0], 3, OUT, OUT), dtype=np.float32)
    for start in range(0, idx.shape[0], chunk):
        sl = slice(start, start + chunk)
        out[sl] = _render_chunk(spec, idx[sl], x0[sl], y0[sl], fp[sl])
    tissue = class_at(spec, idx, x0 + fp / 2.0, y0 + fp / 2.0)
    return out, tissue
