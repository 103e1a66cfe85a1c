"""scanner_sensitivity: amplifies the scan's departure from the neutral device before the nonlinear map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scangen.simulate import SimConfig, SimulatedFM, generate_cohort
from scangen.simulate.foundation_models import FM_PARAMS_PATH, load_fm_params
from scangen.simulate.scanners import render_neutral

BASE = {"colour_sensitivity": 1.0, "detail_sensitivity": 0.0, "texture_tuning": 0.3, "hidden_units": 64.0,
        "gain": 1.5, "scanner_sensitivity": 0.0}


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(SimConfig.from_size("tiny", n_task_slides=1, n_ms_specimens=4), seed=5)


def test_neutral_rendering_is_deterministic_and_close_to_the_scans(cohort) -> None:
    assert cohort.neutral_images.shape == cohort.images.shape
    assert cohort.reg_neutral_images.shape == cohort.reg_images.shape
    again = generate_cohort(SimConfig.from_size("tiny", n_task_slides=1, n_ms_specimens=4), seed=5)
    assert np.array_equal(again.neutral_images, cohort.neutral_images)
    gap = np.abs(cohort.images - cohort.neutral_images).mean()
    assert 0.0 < gap < 0.1
    flat = np.full((2, 3, 8, 8), 0.5, dtype=np.float32)
    assert np.allclose(render_neutral(flat), 0.5, atol=0.02)


def test_zero_sensitivity_is_the_plain_scan(cohort) -> None:
    fm = SimulatedFM("uni-sim", 32, dict(BASE))
    assert np.array_equal(fm.embed(cohort.images), fm.embed(cohort.images, cohort.neutral_images))


def test_positive_sensitivity_needs_the_neutral_rendering(cohort) -> None:
    fm = SimulatedFM("uni-sim", 32, dict(BASE, scanner_sensitivity=1.0))
    with pytest.raises(ValueError, match="scanner_sensitivity.*neutral"):
        fm.embed(cohort.images)
    with pytest.raises(ValueError, match="neutral has shape"):
        fm.embed(cohort.images, cohort.neutral_images[:3])


def test_sensitivity_makes_twin_tiles_drift_apart(cohort) -> None:
    """Registered twins (same tissue, other scanner) move apart as s grows, beyond per-scanner centring."""
    slide_scanner = dict(zip(cohort.slides["slide_id"].to_list(), cohort.slides["scanner"].to_list()))
    scanner = np.repeat([slide_scanner[s] for s in cohort.reg_slide_ids], np.diff(cohort.reg_offsets))
    spec_of = dict(zip(cohort.slides["slide_id"].to_list(), cohort.slides["specimen_id"].to_list()))
    specimen = np.repeat([spec_of[s] for s in cohort.reg_slide_ids], np.diff(cohort.reg_offsets))
    keys = np.char.add(specimen.astype(str), cohort.reg_tile_id.astype(str))

    def twin_spread(s: float) -> float:
        fm = SimulatedFM("uni-sim", 32, dict(BASE, scanner_sensitivity=s))
        e = fm.embed(cohort.reg_images, cohort.reg_neutral_images).astype(np.float64)
        for sc in np.unique(scanner):
            e[scanner == sc] -= e[scanner == sc].mean(axis=0)
        return float(np.mean([e[keys == k].std(axis=0).mean() for k in np.unique(keys)]))

    spreads = [twin_spread(s) for s in (0.0, 1.0, 3.0)]
    assert spreads[0] < spreads[1] < spreads[2], spreads


@pytest.mark.parametrize(("key", "value", "match"), [
    ("scanner_sensitivity", -0.5, "scanner_sensitivity must be >= 0"),
    ("colour_sensitivity", 4.5, r"colour_sensitivity must be in \[0, 4\]"),
])
def test_out_of_range_parameters_are_rejected(tmp_path: Path, key: str, value: float, match: str) -> None:
    raw = json.loads(FM_PARAMS_PATH.read_text())
    raw["gigapath-sim"][key] = value
    path = tmp_path / "fm.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=f"gigapath-sim.*{match}"):
        load_fm_params(path)
    with pytest.raises(ValueError, match=match):
        SimulatedFM("gigapath-sim", 16, dict(BASE, **{key: value}))
