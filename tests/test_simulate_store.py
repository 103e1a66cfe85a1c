"""The simulated store: schema, determinism, cohort design, bag sizes, registered tiles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.constants import SCANNERS_40X, SIMULATED_MODELS
from scangen.simulate import SimConfig, simulate_cohort
from scangen.simulate.design import make_design
from scangen.store import list_models, load_bags, load_registered, read_meta, read_slides


def _hashes(store: Path) -> dict[str, str]:
    """SHA-256 of every file the simulator wrote; the memory-mapped embedding cache (`<store>/memmap/`,
    derived by whichever test loaded the shared store first) is not the simulator's output."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and p.relative_to(store).parts[0] != "memmap"}


def test_same_seed_gives_identical_bytes(tiny_store: Path, tmp_path: Path) -> None:
    again = simulate_cohort(tmp_path / "again", size="tiny", seed=0)
    first, second = _hashes(tiny_store), _hashes(again)
    assert len(first) == 1 + 1 + 2 * len(SIMULATED_MODELS)
    assert first == second


def test_other_seed_differs(tiny_store: Path, tmp_path: Path) -> None:
    other = simulate_cohort(tmp_path / "other", size="tiny", seed=1, models=["phikon-sim"])
    a = load_bags(tiny_store, "phikon-sim")
    b = load_bags(other, "phikon-sim")
    assert a.features.shape != b.features.shape or not np.array_equal(a.features, b.features)
    assert _hashes(tiny_store)["embeddings/phikon-sim.parquet"] != _hashes(other)["embeddings/phikon-sim.parquet"]


def test_schema_meta_and_simulated_flags(tiny_store: Path) -> None:
    slides = read_slides(tiny_store)
    meta = read_meta(tiny_store)
    assert meta["simulated"] is True
    assert meta["models"] == SIMULATED_MODELS
    assert meta["generator"]["config"]["size"] == "tiny"
    assert meta["generator"]["seed"] == 0
    assert set(meta["generator"]["fm_params"]) == set(SIMULATED_MODELS)
    assert sorted(list_models(tiny_store)) == sorted(SIMULATED_MODELS)
    assert slides["simulated"].all()
    assert set(slides["cohort"]) == {"task", "multiscanner"}
    assert slides["slide_id"].n_unique() == slides.height
    assert set(slides["scanner"]).issubset(SCANNERS_40X)
    cfg = SimConfig.from_size("tiny")
    assert (slides["cohort"] == "task").sum() == cfg.n_task_slides
    assert slides.filter(pl.col("cohort") == "task")["specimen_id"].n_unique() == cfg.n_task_slides
    for fm, dim in SIMULATED_MODELS.items():
        bags = load_bags(tiny_store, fm)
        assert bags.features.shape[1] == dim
        assert np.isfinite(bags.features).all()
        assert bags.coords.dtype == np.int32 and (bags.coords >= 0).all()
        assert bags.tissue_class is not None and set(np.unique(bags.tissue_class)) <= set(range(5))


def test_every_multiscanner_specimen_has_seven_scans(tiny_store: Path) -> None:
    ms = read_slides(tiny_store).filter(pl.col("cohort") == "multiscanner")
    expected = {(s, 40) for s in SCANNERS_40X} | {("GT450", 20)}
    for _, grp in ms.group_by("specimen_id"):
        assert set(zip(grp["scanner"], grp["magnification"])) == expected
        assert grp["egfr"].n_unique() == 1
    assert ms["specimen_id"].n_unique() == SimConfig.from_size("tiny").n_ms_specimens
    assert set(ms["egfr"]) == {0, 1}


def test_bag_sizes_vary_and_20x_has_fewer_patches(tiny_store: Path) -> None:
    bags = load_bags(tiny_store, "uni-sim")
    mag = bags.slides["magnification"].to_numpy()
    n40 = bags.lengths[mag == 40]
    assert n40.std() > 0.2 * n40.mean()
    assert n40.max() >= 2 * n40.min()
    ms = bags.slides.with_columns(pl.Series("n", bags.lengths)).filter(pl.col("cohort") == "multiscanner")
    gt = ms.filter(pl.col("scanner") == "GT450").pivot(on="magnification", index="specimen_id", values="n")
    ratio = (gt["20"] / gt["40"]).to_numpy()
    assert 0.1 < np.median(ratio) < 0.45  # a 20x tile covers 4x the area


def test_each_scan_tiles_the_tissue_differently(tiny_store: Path) -> None:
    bags = load_bags(tiny_store, "phikon-sim")
    ms = np.flatnonzero((bags.slides["cohort"] == "multiscanner").to_numpy())
    first = {tuple(c) for c in bags.coords[bags.offsets[ms[0]]:bags.offsets[ms[0] + 1]]}
    second = {tuple(c) for c in bags.coords[bags.offsets[ms[1]]:bags.offsets[ms[1] + 1]]}
    assert first != second


def test_registered_tiles_share_ids_and_tissue_across_scans(tiny_store: Path) -> None:
    reg = load_registered(tiny_store, "gigapath-sim")
    ms = read_slides(tiny_store).filter(pl.col("cohort") == "multiscanner")
    assert set(reg.slide_ids) == set(ms["slide_id"])
    spec_of = dict(zip(ms["slide_id"], ms["specimen_id"]))
    by_spec: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i, sid in enumerate(reg.slide_ids):
        sl = slice(reg.offsets[i], reg.offsets[i + 1])
        by_spec.setdefault(spec_of[sid], []).append((reg.tile_id[sl], reg.tissue_class[sl]))
    for scans in by_spec.values():
        assert len(scans) == 7
        for tile_id, tissue in scans[1:]:
            np.testing.assert_array_equal(tile_id, scans[0][0])
            np.testing.assert_array_equal(tissue, scans[0][1])
    # the same tile differs between scanners (scanner effect) but far less than between tiles
    i, j = reg.slide_index(["MS0000-AT2-40x", "MS0000-S360MD-40x"])
    a, b = reg.bag(int(i)), reg.bag(int(j))
    same = np.linalg.norm(a - b, axis=1).mean()
    other = np.linalg.norm(a - np.roll(a, 1, axis=0), axis=1).mean()
    assert 0 < same < other


def test_task_cohort_confounds_site_scanner_and_label() -> None:
    cfg = SimConfig.from_size("quick")
    design = make_design(np.random.default_rng(0), cfg)
    task = design.slides.filter(pl.col("cohort") == "task")
    by_scanner = task.group_by("scanner").agg(pl.col("egfr").mean().alias("p"), pl.len().alias("n"))
    p = dict(zip(by_scanner["scanner"], by_scanner["p"]))
    assert set(p) == {"AT2", "GT450"}
    assert p["GT450"] - p["AT2"] > 0.15
    by_site = task.group_by("site").agg(pl.col("egfr").mean().alias("p"))
    assert by_site["p"].max() - by_site["p"].min() > 0.25
    assert (task["scanner"] == "AT2").mean() > 0.5


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown simulator size"):
        simulate_cohort(tmp_path, size="huge")
    with pytest.raises(ValueError, match="unknown simulated model"):
        simulate_cohort(tmp_path, size="tiny", models=["UNI"])
    with pytest.raises(ValueError, match="bag_min"):
        SimConfig.from_size("tiny", bag_min=50, bag_max=10)


def test_fm_params_file_is_validated(tmp_path: Path) -> None:
    from scangen.simulate.foundation_models import FM_PARAMS_PATH, load_fm_params

    good = json.loads(FM_PARAMS_PATH.read_text())
    bad = dict(good)
    bad["uni-sim"] = {k: v for k, v in good["uni-sim"].items() if k != "gain"}
    path = tmp_path / "fm.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="uni-sim.*gain"):
        load_fm_params(path)


def test_paper_size_design_holds_bags_and_labels() -> None:
    cfg = SimConfig.from_size("paper")
    design = make_design(np.random.default_rng(0), cfg)
    assert design.slides.height == cfg.n_task_slides + 7 * cfg.n_ms_specimens
    assert set(design.slides.filter(pl.col("cohort") == "multiscanner")["egfr"]) == {0, 1}
    # the tissue map must hold the largest bag: at least bag_max cells of tissue on average
    assert 0.4 * cfg.grid_cells**2 > cfg.bag_max


def test_resimulating_into_a_folder_leaves_nothing_stale(tiny_store: Path, tmp_path: Path) -> None:
    """A second simulation into the same folder replaces models and registered tiles, never mixes."""
    folder = tmp_path / "reused"
    simulate_cohort(folder, size="tiny", seed=0, models=["phikon-sim", "uni-sim"])
    simulate_cohort(folder, size="tiny", seed=1, models=["phikon-sim"], registered_tiles=False)
    assert list_models(folder) == ["phikon-sim"]
    assert not (folder / "registered").exists()
    assert read_meta(folder)["generator"]["seed"] == 1


def test_refuses_to_overwrite_a_real_store(tmp_path: Path) -> None:
    folder = tmp_path / "real"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"simulated": False, "models": {}}))
    with pytest.raises(ValueError, match="not simulated"):
        simulate_cohort(folder, size="tiny", seed=0, models=["phikon-sim"])
    assert (folder / "meta.json").is_file()
