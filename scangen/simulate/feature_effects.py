"""Scenario "feature": scanner effects that enter in feature space, after the foundation model.

The default scenario ("image") scans tissue with image pipelines and embeds the scans with nonlinear
FMs, so a scanner's effect on an embedding depends on the tissue. This scenario is structurally
different: every FM embeds the NEUTRAL device's rendering of the tissue (no scanner in the image), and
the scanner then adds a tissue-independent offset to the embedding:

    e = f(x0) + a_m * (b_{m,c} + j * u_{m,scan}) + n_m * eps,      eps ~ N(0, I_D) per patch

- f(x0): the model's (layer-normalised) embedding of the neutral rendering x0;
- b_{m,c} (D,): scanner c's offset for model m, `B_m @ p_c`, where p_c is the scanner profile's departure
  from a neutral device (scanners.PROFILES, each setting standardised over the six scanners) and B_m a
  fixed Gaussian matrix of model m; scaled so that the offsets have unit mean square per element. Similar
  devices (the two Leica Aperio) thus get similar offsets and the Hamamatsu S360MD the most distinct;
- u_{m,scan} (D,): a per-scan jitter direction (unit mean square), `j = SCAN_JITTER * cfg.scan_jitter`;
- a_m = `feature_shift` and n_m = `feature_noise`: per-model strengths, calibrated against the same
  published anchors as the image scenario (RI, plismbench top-10) by `scripts/calibrate_simulator.py
  --scenario feature`, written to `fm_params_feature.json`.
An offset like this is what per-scanner centring or a cosine loss can largely remove; the image scenario
is what they cannot. Both are declared up front and every verdict is reported for both.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import fields
from pathlib import Path

import numpy as np

from scangen.simulate.scanners import PROFILES, ScannerProfile

FEATURE_PARAMS_PATH = Path(__file__).with_name("fm_params_feature.json")
FEATURE_PARAM_NAMES: tuple[str, ...] = ("feature_shift", "feature_noise")
SCAN_JITTER = 0.25
"""Per-scan jitter of the offset, relative to the scanner's own offset (times SimConfig.scan_jitter)."""


def load_feature_params(path: Path = FEATURE_PARAMS_PATH) -> dict[str, dict[str, float]]:
    """Per-model {feature_shift, feature_noise} (both >= 0); errors name the file, model and parameter."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read feature-scenario parameters from {path}: {exc}") from exc
    out = {}
    for model, entry in raw.items():
        if model.startswith("_"):
            continue
        vals = {}
        for p in FEATURE_PARAM_NAMES:
            if p not in entry:
                raise ValueError(f"{path}: model {model!r} lacks parameter {p!r}")
            vals[p] = float(entry[p])
            if not (np.isfinite(vals[p]) and vals[p] >= 0):
                raise ValueError(f"{path}: model {model!r}: {p} must be a finite number >= 0, got {entry[p]!r}")
        out[model] = vals
    return out


def _profile_vector(profile: ScannerProfile) -> np.ndarray:
    parts = []
    for f in fields(ScannerProfile):
        v = getattr(profile, f.name)
        parts.extend(v if isinstance(v, tuple) else (v,))
    return np.asarray(parts, dtype=np.float64)


def scanner_offsets(model: str, dim: int) -> dict[str, np.ndarray]:
    """b_{m,c} for every scanner of PROFILES: (dim,) float64 offsets with unit mean square per element."""
    names = list(PROFILES)
    p = np.stack([_profile_vector(PROFILES[c]) for c in names])
    sd = p.std(axis=0)
    p = (p - p.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    rng = np.random.default_rng(zlib.crc32(f"feature-offsets/{model}".encode()))
    b = p @ rng.standard_normal((p.shape[1], dim))
    b /= np.sqrt(np.mean(b ** 2))
    return dict(zip(names, b))


def _scan_direction(model: str, scan_key: str, dim: int) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(f"{model}/{scan_key}".encode())).standard_normal(dim)


def apply_feature_effects(emb: np.ndarray, model: str, scanner: np.ndarray, scan_key: np.ndarray,
                          shift: float, noise: float, scan_jitter: float, rng: np.random.Generator,
                          chunk: int = 8192) -> np.ndarray:
    """Add the scenario's scanner offsets to neutral embeddings `emb` (N, D) -> (N, D) float32.

    `scanner` (N,) scanner code per patch; `scan_key` (N,) an id of each patch's scan (offset jitter is
    shared by the patches of one scan); `rng` draws the per-patch noise."""
    n, dim = emb.shape
    scanner, scan_key = np.asarray(scanner).astype(str), np.asarray(scan_key).astype(str)
    if scanner.shape != (n,) or scan_key.shape != (n,):
        raise ValueError(f"scanner and scan_key: expected {n} entries each, got {scanner.shape} and {scan_key.shape}")
    offsets = scanner_offsets(model, dim)
    unknown = sorted(set(scanner.tolist()) - set(offsets))
    if unknown:
        raise ValueError(f"scanner: no feature offset for {unknown}; expected codes in {sorted(offsets)}")
    out = np.array(emb, dtype=np.float32, copy=True)
    keys, inv = np.unique(scan_key, return_inverse=True)
    j = SCAN_JITTER * scan_jitter
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(keys.size + 1))
    for k in range(keys.size):  # one offset per scan, shared by its patches
        rows = order[bounds[k]:bounds[k + 1]]
        offset = offsets[scanner[rows[0]]] + j * _scan_direction(model, keys[k], dim)
        out[rows] += (shift * offset).astype(np.float32)
    if noise > 0:
        for start in range(0, n, chunk):  # chunked: the cohort's (N, D) noise never sits in memory at once
            stop = min(start + chunk, n)
            out[start:stop] += np.float32(noise) * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return out
