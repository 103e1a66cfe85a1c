"""Simulated foundation models: fixed nonlinear maps from scanned patch images to D-dim embeddings.

For a scanned image x (3, 8, 8) RGB in [0, 1], the NEUTRAL device's rendering x0 of the same tissue
(scanners.render_neutral) and model m with parameters (c, d, t, H, g, s) computes
  x~   = x0 + (1 + s) * (x - x0)                                scanner sensitivity s: how strongly the
                                                                device's departure from neutral (colour,
                                                                blur, sharpening, noise, compression)
                                                                reaches the model (s = 0: x~ = x)
  r    = (x~ - 0.75) / 0.2                                     raw input
  n    = (x~ - mean_hw(x~)) / (std_hw(x~) + 0.05)               per-image, per-channel normalised input
  v    = c * r + (1 - c) * n                                    colour sensitivity c in [0, 4]: c > 1
                                                                amplifies raw colour beyond the image
  v'   = C^T [(C v C^T) * (1 + d * f)] C                       high spatial frequencies boosted by d
                                                                (C: 8 x 8 DCT, f: radial frequency 0..1)
  a    = gelu(g * (W1^T vec(v') + b1))                          W1: (192, H), unit-norm columns
  e    = LayerNorm(W2^T a / sqrt(H))                            W2: (H, D) Gaussian, no affine
A share t of the H first-layer filters are "histology-tuned" (centre-surround blobs along the
haematoxylin colour direction at nuclear scale, and oriented eosin texture filters), the rest random:
larger t means the model encodes nuclei and tissue texture (where EGFR acts) more strongly.
Weights depend only on the model name (a fixed seed), never on the cohort seed, so a model is the same
function in every store. Scanner changes reach e only through the image x~, i.e. through the nonlinear
map: their effect depends on tissue content and differs between models (per-scanner centring of e
does not remove it).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scangen.constants import SIMULATED_MODELS
from scangen.simulate.scanners import DCT, FREQ
from scangen.simulate.tissue import H_VECTOR, E_VECTOR

FM_PARAMS_PATH = Path(__file__).with_name("fm_params.json")
PARAM_NAMES: tuple[str, ...] = ("colour_sensitivity", "detail_sensitivity", "texture_tuning", "hidden_units", "gain",
                                "scanner_sensitivity")
COLOUR_SENSITIVITY_MAX = 4.0


def load_fm_params(path: Path = FM_PARAMS_PATH) -> dict[str, dict[str, float]]:
    """Read and check the per-model parameter file (one object of named floats per model)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read simulated-FM parameters from {path}: {exc}") from exc
    out: dict[str, dict[str, float]] = {}
    for name in SIMULATED_MODELS:
        if name not in raw:
            raise ValueError(f"{path}: missing model {name!r}; expected objects for {list(SIMULATED_MODELS)}")
        entry = raw[name]
        missing = [p for p in PARAM_NAMES if p not in entry]
        if missing:
            raise ValueError(f"{path}: model {name!r} lacks parameter(s) {missing}")
        vals = {p: float(entry[p]) for p in PARAM_NAMES}
        try:
            check_params(vals)
        except ValueError as exc:
            raise ValueError(f"{path}: model {name!r}: {exc}") from exc
        out[name] = vals
    return out


def check_params(vals: dict[str, float]) -> None:
    """Raise ValueError naming the first parameter outside its allowed range (see README.md)."""
    missing = [p for p in PARAM_NAMES if p not in vals]
    if missing:
        raise ValueError(f"missing parameter(s) {missing}")
    if not np.all(np.isfinite([vals[p] for p in PARAM_NAMES])):
        raise ValueError(f"parameters must be finite, got {vals}")
    if not 0.0 <= vals["colour_sensitivity"] <= COLOUR_SENSITIVITY_MAX:
        raise ValueError(f"colour_sensitivity must be in [0, {COLOUR_SENSITIVITY_MAX:g}], "
                         f"got {vals['colour_sensitivity']}")
    if not 0.0 <= vals["texture_tuning"] <= 1.0:
        raise ValueError(f"texture_tuning must be in [0, 1], got {vals['texture_tuning']}")
    if vals["scanner_sensitivity"] < 0:
        raise ValueError(f"scanner_sensitivity must be >= 0, got {vals['scanner_sensitivity']}")
    if vals["detail_sensitivity"] < 0 or vals["hidden_units"] < 16 or vals["gain"] <= 0:
        raise ValueError("need detail_sensitivity >= 0, hidden_units >= 16, gain > 0; got "
                         f"{vals['detail_sensitivity']}, {vals['hidden_units']}, {vals['gain']}")


def _gelu(z: np.ndarray) -> np.ndarray:
    return 0.5 * z * (1.0 + np.tanh(0.7978845608 * (z + 0.044715 * z * z * z)))


def _tuned_filters(rng: np.random.Generator, n: int) -> np.ndarray:
    """n histology-tuned filters (n, 3, 8, 8): H-direction centre-surround blobs and E-direction gratings."""
    yy, xx = np.mgrid[0:8, 0:8].astype(np.float64)
    cx, cy = rng.uniform(0, 7, n), rng.uniform(0, 7, n)
    sig = rng.uniform(0.5, 1.3, n)
    d2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
    blob = np.exp(-d2 / (2 * sig[:, None, None] ** 2)) - 0.5 * np.exp(-d2 / (8 * sig[:, None, None] ** 2))
    theta, freq, phase = rng.uniform(0, np.pi, n), rng.uniform(0.4, 1.6, n), rng.uniform(0, 2 * np.pi, n)
    proj = xx[None] * np.cos(theta)[:, None, None] + yy[None] * np.sin(theta)[:, None, None]
    grating = np.cos(freq[:, None, None] * proj + phase[:, None, None])
    is_blob = rng.uniform(size=n) < 0.7
    spatial = np.where(is_blob[:, None, None], blob, grating)
    colour = np.where(is_blob[:, None], -H_VECTOR[None], -E_VECTOR[None])
    colour = colour / np.linalg.norm(colour, axis=1, keepdims=True)
    return colour[:, :, None, None] * spatial[:, None]


@dataclass
class SimulatedFM:
    """One simulated foundation model: `embed(images) -> (N, D) float32` (see module docstring)."""

    name: str
    dim: int
    params: dict[str, float]

    def __post_init__(self) -> None:
        check_params(self.params)
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        hidden = int(round(self.params["hidden_units"]))
        w1 = rng.standard_normal((hidden, 3, 8, 8))
        n_tuned = int(round(self.params["texture_tuning"] * hidden))
        w1[:n_tuned] = _tuned_filters(rng, n_tuned)
        w1 = w1.reshape(hidden, -1)
        w1 /= np.linalg.norm(w1, axis=1, keepdims=True)
        # The frequency weighting v -> v' is linear, so it is folded into the first layer:
        # W1^T vec(v') = (A^T W1)^T vec(v) with A = per-channel C^T diag(1 + d f) C.
        basis = np.eye(192).reshape(192, 3, 8, 8)
        gain = 1.0 + self.params["detail_sensitivity"] * FREQ.astype(np.float64)
        a_cols = (DCT.T.astype(np.float64) @ ((DCT @ basis @ DCT.T) * gain) @ DCT).reshape(192, 192)
        self.w1 = (a_cols @ w1.T).astype(np.float32)  # (192, H): row j = response to input pixel j
        self.b1 = (0.5 * rng.standard_normal(hidden)).astype(np.float32)
        self.w2 = (rng.standard_normal((hidden, self.dim)) / np.sqrt(hidden)).astype(np.float32)

    def embed(self, images: np.ndarray, neutral: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
        """Embed scanned images (N, 3, 8, 8) in [0, 1] -> (N, D) float32 (layer-normalised).

        `neutral` (N, 3, 8, 8): the NEUTRAL device's rendering of the same tissue
        (scanners.render_neutral); required when scanner_sensitivity > 0.
        """
        if images.ndim != 4 or images.shape[1:] != (3, 8, 8):
            raise ValueError(f"{self.name}: expected images of shape (N, 3, 8, 8), got {images.shape}")
        s = np.float32(self.params["scanner_sensitivity"])
        if s > 0:
            if neutral is None:
                raise ValueError(f"{self.name}: scanner_sensitivity = {float(s)} > 0 needs the neutral "
                                 "rendering of the images (argument `neutral`)")
            if neutral.shape != images.shape:
                raise ValueError(f"{self.name}: neutral has shape {neutral.shape}, images {images.shape}")
        out = np.empty((images.shape[0], self.dim), dtype=np.float32)
        c = np.float32(self.params["colour_sensitivity"])
        g = np.float32(self.params["gain"])
        for start in range(0, images.shape[0], chunk):
            x = images[start:start + chunk].astype(np.float32)
            if s > 0:
                x0 = neutral[start:start + chunk].astype(np.float32)
                x = x0 + (np.float32(1.0) + s) * (x - x0)
            raw = (x - 0.75) / 0.2
            mu = x.mean(axis=(2, 3), keepdims=True)
            sd = x.std(axis=(2, 3), keepdims=True)
            v = c * raw + (1.0 - c) * (x - mu) / (sd + 0.05)
            a = _gelu(g * (v.reshape(v.shape[0], -1) @ self.w1 + self.b1))
            e = a @ self.w2
            e -= e.mean(axis=1, keepdims=True)
            e /= e.std(axis=1, keepdims=True) + 1e-5
            out[start:start + chunk] = e
        return out


def load_models(models: list[str] | None = None, path: Path = FM_PARAMS_PATH) -> list[SimulatedFM]:
    """The simulated FMs named in `models` (default: all of constants.SIMULATED_MODELS), in that order."""
    names = list(SIMULATED_MODELS) if models is None else list(models)
    unknown = [m for m in names if m not in SIMULATED_MODELS]
    if unknown:
        raise ValueError(f"unknown simulated model(s) {unknown}; expected names in {list(SIMULATED_MODELS)}")
    params = load_fm_params(path)
    return [SimulatedFM(m, SIMULATED_MODELS[m], params[m]) for m in names]
