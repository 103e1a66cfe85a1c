"""Deterministic random fields: hashed value noise and smoothed Gaussian maps.

Why hashing: the tissue of a specimen must look the same wherever and however often it is scanned.
Instead of storing a pixel-level image per specimen, texture is a pure function of
(specimen key, salt, level-0 position), computed with an integer hash (a splitmix64 finaliser).
Every scan, tile and magnification that samples a position therefore sees the same tissue, and the
work is vectorised numpy over all sampled points at once.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def hash_uniform(key: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers from integer triples (key, i, j), elementwise and broadcasting.

    Integers are taken modulo 2**64 (negative lattice indices wrap, which keeps them distinct).

    A splitmix64-style mix: the same triple always gives the same number, neighbours look independent.
    """
    with np.errstate(over="ignore"):
        z = key.astype(np.uint64, copy=False) * _M1
        z = z + i.astype(np.uint64, copy=False) * _M2
        z = z + j.astype(np.uint64, copy=False) * _M3
        z ^= z >> np.uint64(30)
        z *= _M2
        z ^= z >> np.uint64(27)
        z *= _M3
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def value_noise(key: np.ndarray, x: np.ndarray, y: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1) at level-0 positions (x, y) with lattice spacings (sx, sy) in pixels.

    Random values sit on a lattice of spacing (sx, sy); between lattice points they are blended with a
    smoothstep, so the texture has a characteristic feature size (e.g. a nucleus) of about the spacing.
    `key` selects the specimen and texture layer. All arguments broadcast to one shape.
    """
    u = x / sx
    v = y / sy
    i0 = np.floor(u)
    j0 = np.floor(v)
    fu = (u - i0).astype(np.float32)
    fv = (v - j0).astype(np.float32)
    fu = fu * fu * (3.0 - 2.0 * fu)
    fv = fv * fv * (3.0 - 2.0 * fv)
    one = np.uint64(1)
    i0 = i0.astype(np.int64).astype(np.uint64)  # two's complement wrap keeps negative cells distinct
    j0 = j0.astype(np.int64).astype(np.uint64)
    i1, j1 = i0 + one, j0 + one
    a = hash_uniform(key, i0, j0)
    b = hash_uniform(key, i1, j0)
    c = hash_uniform(key, i0, j1)
    d = hash_uniform(key, i1, j1)
    top = a + (b - a) * fu
    bottom = c + (d - c) * fu
    return top + (bottom - top) * fv


def smooth_fields(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian random fields over the last two axes, smoothed with `sigma` cells, unit variance.

    Used for the coarse (cell-level) tissue maps: foreground shape and tissue-class logits.
    """
    white = rng.standard_normal(shape).astype(np.float32)
    sig = (0.0,) * (len(shape) - 2) + (sigma, sigma)
    field = gaussian_filter(white, sigma=sig, mode="wrap")
    axes = (-2, -1)
    field -= field.mean(axis=axes, keepdims=True)
    field /= field.std(axis=axes, keepdims=True) + 1e-6
    return field
