"""Scanner appearance transforms, applied to rendered patch images before any foundation model sees them.

Each scanner is an image-formation pipeline with named settings (the order of a real device):
1. optics: a separable Gaussian point-spread blur of `blur` pixels, then unsharp masking of strength
   `sharpen` (vendor sharpening filters);
2. sensor: white balance `gain` per RGB channel and Gaussian read noise of sd `noise`;
3. colour processing: saturation `saturation` about luminance, tone curve x**gamma, and an S-shaped
   contrast curve of strength `contrast`;
4. compression: YCbCr, one 8 x 8 DCT block per channel, coefficients rounded to steps that grow with
   spatial frequency (`q_luma`, `q_chroma`, like JPEG quantisation tables), inverse DCT, clip to [0, 1].
All steps are nonlinear or content dependent (blur changes textured tissue more than flat tissue,
rounding depends on the coefficients), so their effect on an embedding is not a constant offset.
The two Leica Aperio devices (AT2, GT450) share optics and colour pipeline and differ only slightly;
the Hamamatsu S360MD (cool white balance, strong sharpening, high contrast and saturation) differs most.
Every scan also jitters its device's settings (focus, illumination) by `scan_jitter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scangen.constants import SCANNERS_40X


@dataclass(frozen=True)
class ScannerProfile:
    """Nominal settings of one scanner model (see module docstring for each step)."""

    gain: tuple[float, float, float]
    saturation: float
    gamma: float
    contrast: float
    blur: float
    sharpen: float
    noise: float
    q_luma: float
    q_chroma: float


PROFILES: dict[str, ScannerProfile] = {
    "AT2": ScannerProfile((1.00, 0.98, 0.94), 1.00, 1.00, 0.00, 0.60, 0.00, 0.006, 0.020, 0.040),
    "GT450": ScannerProfile((1.00, 0.985, 0.945), 1.02, 0.98, 0.03, 0.55, 0.05, 0.005, 0.018, 0.040),
    "S360MD": ScannerProfile((0.88, 0.97, 1.08), 1.30, 0.78, 0.35, 0.30, 0.90, 0.010, 0.032, 0.065),
    "P1000": ScannerProfile((1.05, 1.00, 1.02), 0.85, 1.15, -0.20, 0.80, 0.00, 0.004, 0.024, 0.050),
    "B300": ScannerProfile((0.97, 1.03, 1.00), 1.12, 1.06, 0.10, 0.65, 0.30, 0.003, 0.012, 0.100),
    "DP200": ScannerProfile((1.06, 0.94, 1.03), 1.06, 0.92, 0.18, 0.50, 0.45, 0.007, 0.022, 0.045),
}
if set(PROFILES) != set(SCANNERS_40X):
    raise RuntimeError(f"scanner profiles {sorted(PROFILES)} must cover constants.SCANNERS_40X {SCANNERS_40X}")

_FIELDS = ("gain", "saturation", "gamma", "contrast", "blur", "sharpen", "noise", "q_luma", "q_chroma")


def _dct_matrix(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II matrix C (n, n): coefficients = C @ block @ C.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c.astype(np.float32)


DCT = _dct_matrix()
FREQ = (np.sqrt(np.arange(8)[:, None] ** 2 + np.arange(8)[None, :] ** 2) / np.sqrt(98.0)).astype(np.float32)
"""Radial spatial frequency of each 8 x 8 DCT coefficient, 0 (DC) .. 1 (highest)."""
_YCC = np.array([[0.299, 0.587, 0.114], [-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]], dtype=np.float32)
_YCC_INV = np.linalg.inv(_YCC).astype(np.float32)


NEUTRAL = ScannerProfile((1.0, 1.0, 1.0), 1.0, 1.0, 0.0, 0.55, 0.0, 0.006, 0.020, 0.050)
"""A neutral device; `strength` scales every profile's departure from it."""


def scan_settings(rng: np.random.Generator, scanners: list[str], jitter: float,
                  strength: float = 1.0) -> dict[str, np.ndarray]:
    """Per-scan settings (arrays with a leading n_scans axis): the device profile, its departure from
    NEUTRAL scaled by `strength` (0: all scanners alike), plus per-scan jitter."""
    unknown = sorted(set(scanners) - set(PROFILES))
    if unknown:
        raise ValueError(f"unknown scanner(s) {unknown}; expected codes in {SCANNERS_40X}")
    n = len(scanners)
    out = {}
    for f in _FIELDS:
        ref = np.array(getattr(NEUTRAL, f), dtype=np.float32)
        dev = np.array([getattr(PROFILES[s], f) for s in scanners], dtype=np.float32)
        out[f] = np.maximum(ref + strength * (dev - ref), 0.0) if f != "gain" else ref + strength * (dev - ref)
    z = rng.standard_normal((n, 6)).astype(np.float32) * jitter
    out["gain"] = out["gain"] * np.exp(0.012 * rng.standard_normal((n, 3)).astype(np.float32) * jitter)
    out["blur"] = out["blur"] * np.exp(0.15 * z[:, 0])
    out["gamma"] = out["gamma"] * np.exp(0.02 * z[:, 1])
    out["contrast"] = out["contrast"] + 0.03 * z[:, 2]
    out["saturation"] = out["saturation"] * np.exp(0.02 * z[:, 3])
    out["sharpen"] = np.maximum(out["sharpen"] + 0.05 * z[:, 4], 0.0)
    return out


def _blur(img: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable 3-tap Gaussian blur of (N, C, 8, 8) images, one sigma (pixels) per image."""
    w = np.exp(-1.0 / (2.0 * np.maximum(sigma, 1e-3) ** 2))[:, None, None, None]
    p = np.pad(img, ((0, 0), (0, 0), (1, 1), (0, 0)), mode="edge")
    img = (w * p[:, :, :-2] + p[:, :, 1:-1] + w * p[:, :, 2:]) / (1.0 + 2.0 * w)
    p = np.pad(img, ((0, 0), (0, 0), (0, 0), (1, 1)), mode="edge")
    return (w * p[..., :-2] + p[..., 1:-1] + w * p[..., 2:]) / (1.0 + 2.0 * w)


def _compress(img: np.ndarray, q_luma: np.ndarray, q_chroma: np.ndarray) -> np.ndarray:
    """JPEG-like quantisation of one 8 x 8 DCT block per channel in YCbCr; returns RGB."""
    ycc = np.einsum("ij,njhw->nihw", _YCC, img)
    coef = DCT @ ycc @ DCT.T
    ramp = 1.0 + 3.0 * FREQ
    step = np.stack([q_luma, q_chroma, q_chroma], axis=1)[:, :, None, None] * ramp
    coef = np.round(coef / step) * step
    ycc = DCT.T @ coef @ DCT
    return np.einsum("ij,njhw->nihw", _YCC_INV, ycc)


def apply_scanner(rgb: np.ndarray, settings: dict[str, np.ndarray], scan: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Scan rendered tissue: (N, 3, 8, 8) RGB in [0, 1] -> scanned (N, 3, 8, 8) float32 in [0, 1].

    `scan` (N,) gives each patch's row in `settings` (from scan_settings); `rng` draws sensor noise.
    """
    s = {k: v[scan] for k, v in settings.items()}
    blurred = _blur(rgb, s["blur"])
    img = blurred + s["sharpen"][:, None, None, None] * (blurred - _blur(blurred, np.full_like(s["blur"], 1.0)))
    img = img * s["gain"][:, :, None, None]
    img = img + s["noise"][:, None, None, None] * rng.standard_normal(img.shape).astype(np.float32)
    lum = np.einsum("c,nchw->nhw", _YCC[0], img)[:, None]
    img = lum + s["saturation"][:, None, None, None] * (img - lum)
    img = np.clip(img, 1e-4, 1.0) ** s["gamma"][:, None, None, None]
    c = s["contrast"][:, None, None, None]
    img = img + 2.0 * c * img * (1.0 - img) * (2.0 * img - 1.0)
    img = _compress(np.clip(img, 0.0, 1.0), s["q_luma"], s["q_chroma"])
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_neutral(rgb: np.ndarray) -> np.ndarray:
    """The NEUTRAL device's rendering of tissue (no jitter, no read noise): (N, 3, 8, 8) -> float32.

    This is the reference a simulated FM's `scanner_sensitivity` measures a real scan against: the
    departure `scan - render_neutral(tissue)` is what each device adds to the image. Deterministic (no
    random draws reach the output), so computing it never changes a cohort's random streams.
    """
    n = rgb.shape[0]
    settings = {f: np.array(getattr(NEUTRAL, f), dtype=np.float32)[None] for f in _FIELDS}
    settings["noise"] = np.zeros(1, dtype=np.float32)
    return apply_scanner(rgb, settings, np.zeros(n, dtype=np.int64), np.random.default_rng(0))
