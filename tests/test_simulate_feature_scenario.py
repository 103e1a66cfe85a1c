"""The "feature" data-generating scenario: scanner offsets added after the FM, on known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scangen.simulate import SimConfig
from scangen.simulate.feature_effects import (
    FEATURE_PARAMS_PATH,
    apply_feature_effects,
    load_feature_params,
    scanner_offsets,
)


def test_offsets_follow_scanner_similarity_and_are_fixed():
    b = scanner_offsets("uni-sim", 256)
    assert set(b) == {"AT2", "GT450", "S360MD", "P1000", "B300", "DP200"}
    stack = np.stack(list(b.values()))
    assert np.mean(stack ** 2) == pytest.approx(1.0)
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
    leica = cos(b["AT2"], b["GT450"])
    assert all(leica > cos(b["AT2"], b[c]) for c in ("S360MD", "P1000", "B300", "DP200"))
    assert np.array_equal(scanner_offsets("uni-sim", 256)["AT2"], b["AT2"])
    assert not np.allclose(scanner_offsets("phikon-sim", 256)["AT2"], b["AT2"])


def test_without_noise_and_jitter_the_effect_is_the_scanner_offset_exactly():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 32)).astype(np.float32)
    scanners = np.array(["AT2", "AT2", "GT450", "S360MD", "S360MD", "B300"])
    out = apply_feature_effects(emb, "uni-sim", scanners, np.arange(6).astype(str), 0.7, 0.0, 0.0, rng)
    b = scanner_offsets("uni-sim", 32)
    for i, c in enumerate(scanners):
        assert out[i] - emb[i] == pytest.approx(0.7 * b[c], abs=1e-5)
    # jitter is shared by the patches of one scan; noise is per patch
    keys = np.array(["s1", "s1", "s2", "s3", "s3", "s4"])
    jit = apply_feature_effects(emb, "uni-sim", scanners, keys, 0.7, 0.0, 1.0, rng)
    assert jit[0] - emb[0] == pytest.approx(jit[1] - emb[1], abs=1e-5)
    noisy = apply_feature_effects(emb, "uni-sim", scanners, keys, 0.0, 0.5, 0.0, np.random.default_rng(1))
    assert np.std(noisy - emb) == pytest.approx(0.5, rel=0.2)
    with pytest.raises(ValueError, match="no feature offset"):
        apply_feature_effects(emb, "uni-sim", np.array(["XX"] * 6), keys, 1.0, 0.0, 0.0, rng)


def test_scenario_option_and_default_config_record():
    assert "scanner_effect" not in SimConfig.from_size("tiny").to_dict()  # default stores unchanged
    assert SimConfig.from_size("tiny", scanner_effect="feature").to_dict()["scanner_effect"] == "feature"
    with pytest.raises(ValueError, match="scanner_effect"):
        SimConfig.from_size("tiny", scanner_effect="pixels")


def test_parameter_file_errors_name_the_problem(tmp_path: Path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"uni-sim": {"feature_shift": 0.1}}))
    with pytest.raises(ValueError, match="lacks parameter 'feature_noise'"):
        load_feature_params(bad)
    bad.write_text(json.dumps({"uni-sim": {"feature_shift": -1, "feature_noise": 0}}))
    with pytest.raises(ValueError, match="feature_shift must be"):
        load_feature_params(bad)


@pytest.mark.skipif(not FEATURE_PARAMS_PATH.is_file(), reason="feature scenario not calibrated yet")
def test_feature_store_is_deterministic_and_scanner_effects_are_offsets(tmp_path: Path):
    from scangen.simulate import simulate_cohort
    from scangen.store import load_bags, read_meta

    cfg = SimConfig.from_size("tiny", scanner_effect="feature")
    a = simulate_cohort(tmp_path / "a", config=cfg, seed=0, models=["phikon-sim"], registered_tiles=False)
    b = simulate_cohort(tmp_path / "b", config=cfg, seed=0, models=["phikon-sim"], registered_tiles=False)
    assert (a / "embeddings" / "phikon-sim.parquet").read_bytes() == (b / "embeddings" / "phikon-sim.parquet").read_bytes()
    meta = read_meta(a)
    assert meta["generator"]["config"]["scanner_effect"] == "feature"
    params = load_feature_params()["phikon-sim"]
    assert meta["generator"]["feature_params"]["phikon-sim"] == params
    bags = load_bags(a, "phikon-sim")
    ms = (bags.slides["cohort"] == "multiscanner").to_numpy() & (bags.slides["magnification"] == 40).to_numpy()
    means = bags.mean_embeddings()[ms].astype(np.float64)
    scan = bags.slides["scanner"].to_numpy()[ms]
    b_c = scanner_offsets("phikon-sim", means.shape[1])
    centre = np.mean([b_c[c] for c in np.unique(scan)], axis=0)
    # every specimen is scanned on every scanner, so a scanner's mean departure from the grand mean is its
    # offset (up to jitter, noise and tile sampling): the effect enters after the FM, independent of tissue
    for c in np.unique(scan):
        got = means[scan == c].mean(axis=0) - means.mean(axis=0)
        want = params["feature_shift"] * (b_c[c] - centre)
        assert got @ want / np.linalg.norm(got) / np.linalg.norm(want) > 0.8, c


@pytest.mark.skipif(not FEATURE_PARAMS_PATH.is_file(), reason="feature scenario not calibrated yet")
def test_scenario_store_is_simulated_once_beside_the_default_store(tmp_path: Path):
    from scangen.experiments.scenarios import check_scenarios, scenario_results_dir, scenario_store
    from scangen.simulate import simulate_cohort
    from scangen.store import read_meta

    base = simulate_cohort(tmp_path / "tiny-seed0", size="tiny", seed=0, models=["uni-sim"], registered_tiles=False)
    assert scenario_store(base, "image") == base
    feat = scenario_store(base, "feature")
    assert feat == tmp_path / "tiny-seed0-feature" and read_meta(feat)["generator"]["config"]["scanner_effect"] == "feature"
    stamp = (feat / "embeddings" / "uni-sim.parquet").stat().st_mtime_ns
    assert scenario_store(base, "feature") == feat
    assert (feat / "embeddings" / "uni-sim.parquet").stat().st_mtime_ns == stamp  # reused
    assert check_scenarios(["feature", "image"]) == ["image", "feature"]
    with pytest.raises(ValueError, match="scenarios"):
        check_scenarios(["image", "pixels"])
    assert scenario_results_dir(tmp_path / "r", "feature") == tmp_path / "r" / "scenario-feature"
