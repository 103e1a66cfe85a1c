"""Experiment modules on tiny data: subset enumeration and selection, gain/relative-change arithmetic,
best/worst counting, seed aggregation, the run cache, result files and one cached tiny session."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.constants import SCANNERS_40X
from scangen.experiments import ablation as ab
from scangen.experiments import results, stats
from scangen.experiments.cache import RunCache, code_fingerprint, store_fingerprint


# --- ablation subsets ----------------------------------------------------------------------------

def test_subset_enumeration_counts():
    subsets = ab.enumerate_subsets()
    assert len(subsets) == 57
    sizes = [len(s) for s in subsets]
    assert [sizes.count(k) for k in range(2, 7)] == [15, 20, 15, 6, 1]
    assert len(set(subsets)) == 57 and all(set(s) <= set(SCANNERS_40X) for s in subsets)
    with pytest.raises(ValueError, match="sizes"):
        ab.enumerate_subsets(sizes=[7])


def test_select_subsets_is_balanced_deterministic_and_keeps_the_full_set():
    subsets = ab.enumerate_subsets()
    assert ab.select_subsets(subsets, None) == subsets
    assert ab.select_subsets(subsets, 100) == subsets
    pick = ab.select_subsets(subsets, 9)
    assert len(pick) == 9 and pick == ab.select_subsets(subsets, 9)
    assert tuple(SCANNERS_40X) in pick
    assert {len(s) for s in pick} == {2, 3, 4, 5, 6}
    assert ab.select_subsets(subsets, 1) == [tuple(SCANNERS_40X)]
    with pytest.raises(ValueError, match="max_subsets"):
        ab.select_subsets(subsets, 0)


def test_cov_gain_and_relative_change_arithmetic():
    assert ab.cov_gain(0.25, 0.5) == pytest.approx(50.0)
    assert ab.cov_gain(np.array([0.6, 0.4]), np.array([0.5, 0.5])) == pytest.approx([-20.0, 20.0])
    with pytest.raises(ValueError, match="base_cov"):
        ab.cov_gain(0.1, 0.0)
    # the paper's Table 1: Phikon 0.389 -> 0.121 is printed as -68.9%
    assert stats.relative_change(0.121, 0.389) == pytest.approx(-68.89, abs=0.01)
    assert stats.relative_change(0.193, 0.174) == pytest.approx(10.92, abs=0.01)
    assert math.isnan(stats.relative_change(1.0, 0.0))


def _subset_table(covs: dict[tuple[str, ...], float]) -> pl.DataFrame:
    return pl.DataFrame({"subset": [list(s) for s in covs], "size": [len(s) for s in covs],
                         "scanner_cov": list(covs.values())})


def test_best_worst_counts_scanners_and_pairs():
    table = _subset_table({
        ("AT2", "GT450"): 0.9, ("GT450", "S360MD"): 0.2, ("S360MD", "B300"): 0.5,
        ("AT2", "GT450", "P1000"): 0.8, ("GT450", "S360MD", "DP200"): 0.1,
    })
    bw = ab.best_worst(table, count_sizes=(2, 3, 4))
    assert bw["sizes_counted"] == [2, 3]
    assert bw["best"] == {2: ["GT450+S360MD"], 3: ["GT450+S360MD+DP200"]}
    assert bw["worst"] == {2: ["AT2+GT450"], 3: ["AT2+GT450+P1000"]}
    assert bw["scanner_counts"]["best"]["GT450"] == 2 and bw["scanner_counts"]["best"]["S360MD"] == 2
    assert bw["scanner_counts"]["best"]["AT2"] == 0
    assert bw["scanner_counts"]["worst"]["AT2"] == 2
    assert bw["pair_counts"]["worst"]["AT2+GT450"] == 2
    two = ab.best_worst(table, count_sizes=(2,), top_k=2)
    assert two["best"][2] == ["GT450+S360MD", "S360MD+B300"]


def test_best_worst_ties_break_by_name():
    table = _subset_table({("B300", "DP200"): 0.3, ("AT2", "P1000"): 0.3})
    bw = ab.best_worst(table, count_sizes=(2,))
    assert bw["best"][2] == ["AT2+P1000"] and bw["worst"][2] == ["AT2+P1000"]


def test_gain_by_size():
    t = pl.DataFrame({"size": [2, 2, 3], "gain": [10.0, 30.0, 50.0]})
    g = ab.gain_by_size(t)
    assert "share_gain_mean" not in g.columns
    g_share = ab.gain_by_size(t.with_columns(share_gain=pl.Series([5.0, 15.0, -20.0])))
    assert g_share["share_gain_mean"].to_list() == pytest.approx([10.0, -20.0])
    assert g["size"].to_list() == [2, 3] and g["n_subsets"].to_list() == [2, 1]
    assert g["gain_mean"].to_list() == pytest.approx([20.0, 50.0])
    assert g["gain_min"][0] == 10.0 and g["gain_max"][0] == 30.0


# --- seed statistics -----------------------------------------------------------------------------

def test_mean_ci_student_t():
    mean, lo, hi = stats.mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    m1, lo1, hi1 = stats.mean_ci([0.7])
    assert m1 == 0.7 and math.isnan(lo1) and math.isnan(hi1)
    with pytest.raises(ValueError, match="finite"):
        stats.mean_ci([0.5, float("nan")])


def _runs() -> pl.DataFrame:
    return pl.DataFrame({
        "fm": ["a"] * 4 + ["b"] * 2, "use_scangen": [False, False, True, True, False, True],
        "seed": [0, 1, 0, 1, 0, 0],
        "auc": [0.70, 0.72, 0.74, 0.76, 0.6, 0.65], "auc_ci_low": [0.6] * 6, "auc_ci_high": [0.9] * 6,
        "scanner_cov": [0.40, 0.40, 0.20, 0.20, 0.5, 0.25], "mag_cov": [0.1, 0.1, 0.05, 0.05, float("nan"), float("nan")],
        "scanner_cov_prob": [0.10, 0.12, 0.05, 0.07, 0.2, 0.1],
        "scanner_share": [2.0, 2.2, 1.0, 1.2, 1.5, 0.5],
        "flip_rate": [0.2, 0.2, 0.1, 0.1, 0.3, 0.2],
    })


def test_aggregate_seeds_and_relative_change():
    agg = stats.aggregate_seeds(_runs(), ["fm", "use_scangen"])
    assert agg.height == 4 and agg["n_seeds"].to_list() == [2, 2, 1, 1]
    a_base = agg.row(0, named=True)
    assert a_base["auc_mean"] == pytest.approx(0.71)
    assert 0.0 <= a_base["auc_lo"] <= a_base["auc_mean"] <= a_base["auc_hi"] <= 1.0  # clipped t-interval
    b_base = agg.filter((pl.col("fm") == "b") & ~pl.col("use_scangen")).row(0, named=True)
    assert (b_base["auc_lo"], b_base["auc_hi"]) == (0.6, 0.9)  # one seed: the bootstrap CI
    assert math.isnan(b_base["scanner_cov_lo"]) and math.isnan(b_base["mag_cov_mean"])
    rel = stats.add_relative_change(agg, by=["fm"])
    a_sg = rel.filter((pl.col("fm") == "a") & pl.col("use_scangen")).row(0, named=True)
    assert a_sg["scanner_cov_rel_change"] == pytest.approx(-50.0)
    assert a_sg["scanner_cov_prob_mean"] == pytest.approx(0.06) and a_sg["scanner_cov_prob_rel_change"] == pytest.approx(-100 * 0.05 / 0.11)
    assert a_sg["auc_rel_change"] == pytest.approx(100 * (0.75 - 0.71) / 0.71)
    assert a_sg["scanner_share_mean"] == pytest.approx(1.1) and a_sg["scanner_share_rel_change"] == pytest.approx(-100 * 1.0 / 2.1)
    assert rel.filter(~pl.col("use_scangen"))["scanner_cov_rel_change"].null_count() == 2
    with pytest.raises(ValueError, match="baseline"):
        stats.add_relative_change(agg.filter(pl.col("use_scangen")), by=["fm"])


def _paired(key: str, values: list[str]) -> pl.DataFrame:
    rows = []
    for v in values:
        for m, (lo, hi) in {"scanner_cov": (-0.3, -0.1), "auc": (-0.01, 0.05)}.items():
            rows.append({key: v, "metric": m, "baseline": 0.4, "scangen": 0.2, "diff": -0.2, "diff_lo": lo,
                         "diff_hi": hi, "level": 0.95, "verdict": "lower" if hi < 0 else "inconclusive", "n_pairs": 2})
    return pl.DataFrame(rows)


def test_table1_and_mil_json_share_the_baseline_scangen_layout():
    from scangen.experiments.mil_table import mil_json
    from scangen.experiments.table1 import table1_json

    rel = stats.add_relative_change(stats.aggregate_seeds(_runs(), ["fm", "use_scangen"]), by=["fm"])
    t1 = table1_json(rel.with_columns(pl.col("fm").str.to_uppercase().alias("real_model")), _paired("fm", ["a", "b"]),
                     [0, 1])
    a = t1["fms"]["a"]
    assert a["real_model"] == "A" and a["baseline"]["auc_mean"] == pytest.approx(0.71)
    assert a["baseline"]["n_seeds"] == 2 and "auc_lo" in a["scangen"] and "seed" not in a["scangen"]
    assert a["rel_change"]["scanner_cov"] == pytest.approx(-50.0)
    assert set(a["rel_change"]) == {"auc", "scanner_cov", "mag_cov"}
    assert "strongest_fm" not in t1  # no FM is picked from test results
    assert a["paired"]["scanner_cov"]["verdict"] == "lower" and a["paired"]["auc"]["diff_lo"] == -0.01
    assert t1["verdicts"]["scanner_cov"]["lower"] == ["a", "b"] and t1["verdicts"]["auc"]["inconclusive"] == ["a", "b"]
    heads = rel.with_columns(pl.col("fm").replace({"a": "gap", "b": "abmil"}).alias("head"))
    mil = mil_json(heads, _paired("head", ["gap", "abmil"]), "a", "given", [0, 1])
    gap = mil["heads"]["gap"]
    assert gap["label"] == "GAP" and mil["heads"]["abmil"]["label"] == "AB-MIL"
    assert gap["scangen"] == a["scangen"] and gap["rel_change"] == a["rel_change"]
    assert gap["paired"] == a["paired"] and mil["verdicts"]["scanner_cov"]["lower"] == ["gap", "abmil"]
    assert mil["cov_rel_change_range"] == pytest.approx([-50.0, -50.0])


# --- run cache -----------------------------------------------------------------------------------

def _preds(value: float) -> pl.DataFrame:
    return pl.DataFrame({"slide_id": ["s1", "s2"], "logit": [value, -value]})


def test_run_cache_reuses_and_separates(tmp_path: Path):
    cache = RunCache(tmp_path / "c", code_fp="code-1")
    calls = []

    def run():
        calls.append(1)
        return _preds(float(len(calls)))

    first, cached = cache.get_or_run({"fm": "x", "seed": 0}, "store-1", run)
    again, cached2 = cache.get_or_run({"seed": 0, "fm": "x"}, "store-1", run)  # key order irrelevant
    assert (cached, cached2) == (False, True) and len(calls) == 1
    assert again.equals(first) and (cache.hits, cache.misses) == (1, 1)
    cache.get_or_run({"fm": "x", "seed": 1}, "store-1", run)  # another config
    cache.get_or_run({"fm": "x", "seed": 0}, "store-2", run)  # another store
    RunCache(tmp_path / "c", code_fp="code-2").get_or_run({"fm": "x", "seed": 0}, "store-1", run)  # new code
    assert len(calls) == 4
    info = cache.info(cache.key({"fm": "x", "seed": 0}, "store-1"))
    assert info["config"] == {"fm": "x", "seed": 0} and info["train_seconds"] >= 0


def test_run_cache_failed_run_leaves_no_entry(tmp_path: Path):
    cache = RunCache(tmp_path, code_fp="c")

    def boom():
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        cache.get_or_run({"a": 1}, "s", boom)
    assert cache.get(cache.key({"a": 1}, "s")) is None
    assert not list(tmp_path.rglob("*.tmp"))


def test_fingerprints(tiny_store: Path, tmp_path: Path):
    fp = store_fingerprint(tiny_store, "phikon-sim")
    assert fp == store_fingerprint(tiny_store, "phikon-sim") != store_fingerprint(tiny_store, "uni-sim")
    with pytest.raises(FileNotFoundError, match="fingerprint"):
        store_fingerprint(tmp_path, "phikon-sim")
    assert code_fingerprint() == code_fingerprint()  # the import closure: tests/test_experiments_cache.py


# --- result files --------------------------------------------------------------------------------

def test_results_json_is_strict_and_flagged(tmp_path: Path):
    path = results.write_json(tmp_path, "x", {"a": float("nan"), "b": np.float32(0.5), "c": (1, 2),
                                               "d": {3: np.int64(4)}}, simulated=True)
    doc = json.loads(path.read_text())
    assert doc == {"simulated": True, "a": None, "b": 0.5, "c": [1, 2], "d": {"3": 4}}
    assert results.read_json(tmp_path, "x") == doc
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        results.read_json(tmp_path, "missing")


def test_results_table_gets_simulated_column(tmp_path: Path):
    results.write_table(tmp_path, "t", pl.DataFrame({"a": [1, 2]}), simulated=True)
    back = results.read_table(tmp_path, "t")
    assert back["simulated"].to_list() == [True, True]
    with pytest.raises(ValueError, match="simulated"):
        results.write_table(tmp_path, "u", pl.DataFrame({"a": [1], "simulated": [False]}), simulated=True)


# --- one tiny cached session ----------------------------------------------------------------------

def test_session_runs_are_cached_and_identical(tiny_store: Path, tmp_path: Path):
    from scangen.experiments.session import ExperimentSession, train_settings
    from scangen.experiments.table1 import fixed_fm, run_table1, table1_json

    settings = train_settings(3, "cpu", {"eval_every": 3, "patience": 1, "num_threads": 1})
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        train_settings(3, "cpu", {"not_a_field": 1})
    s1 = ExperimentSession(tiny_store, tmp_path / "cache", settings)
    runs, table, paired = run_table1(s1, ["phikon-sim"], [0, 1], scangen={"lam": 2.0}, n_boot=50)
    assert runs.height == 4 and runs["use_scangen"].to_list() == [False, False, True, True]
    assert runs["split_seed"].to_list() == [0] * 4
    assert table["use_scangen"].to_list() == [False, True] and "n_near_zero_mean" in table.columns
    assert s1.cache.misses == 4
    from scangen.metrics.paired import PAIRED_METRICS
    assert paired["metric"].to_list() == list(PAIRED_METRICS)
    assert (paired["n_pairs"] == 2).all() and (paired["fm"] == "phikon-sim").all()
    s2 = ExperimentSession(tiny_store, tmp_path / "cache", settings)
    runs2, table2, paired2 = run_table1(s2, ["phikon-sim"], [0, 1], scangen={"lam": 2.0}, n_boot=50)
    assert s2.cache.misses == 0
    keep = [c for c in runs.columns if c != "cached"]
    assert runs2.select(keep).equals(runs.select(keep)) and paired2.equals(paired)
    doc = table1_json(table2, paired2, [0, 1])
    assert set(doc["fms"]["phikon-sim"]) >= {"baseline", "scangen", "rel_change", "paired"}
    # split seeds multiply the runs and keep each pair on one split
    runs3, _, paired3 = run_table1(s2, ["phikon-sim"], [0], split_seeds=[0, 1], n_boot=20)
    assert runs3["split_seed"].to_list() == [0, 1, 0, 1] and paired3["n_pairs"][0] == 2
    assert fixed_fm(None, s2.models) == ("hoptimus0-sim", "default: the FM of the paper's Table 2")
    assert fixed_fm("phikon-sim", s2.models)[0] == "phikon-sim"
    with pytest.raises(ValueError, match="not in the store"):
        fixed_fm("nope", s2.models)


def test_ablation_paired_by_size_and_chance_reference(tiny_store: Path, tmp_path: Path):
    from scangen.experiments.ablation import ablation_json, run_ablation
    from scangen.experiments.session import ExperimentSession, train_settings

    s = ExperimentSession(tiny_store, tmp_path / "cache", train_settings(3, "cpu", {"eval_every": 3, "patience": 1, "num_threads": 1}))
    res = run_ablation(s, "phikon-sim", seeds=[0, 1], max_subsets=3, count_sizes=(2,), n_perm=500, n_boot=30)
    assert res["scanners"] == list(SCANNERS_40X)  # the store's primary scanners
    assert res["n_subsets"] == 3 and res["runs"].height == 2 + 3 * 2
    assert sorted(set(res["paired_by_size"]["size"])) == sorted({len(x) for x in res["subsets"]["subset"]})
    assert set(res["chance"]) == {"best", "worst"}
    best = res["chance"]["best"]
    assert best.filter(pl.col("kind") == "scanner")["observed"].sum() == 2  # one size-2 subset counted
    doc = ablation_json(res, "phikon-sim", [0, 1])
    assert set(doc["chance"]["best"]) == {"exceeding", "max_scanner_count", "max_chance_upper", "any_scanner_beyond_chance"}
    assert doc["paired_by_size"][6]["scanner_cov"]["n_pairs"] == 2
    contrasts = res["size_contrasts"].filter(pl.col("metric") == "scanner_cov")
    sizes = sorted(set(res["paired_by_size"]["size"]))
    assert contrasts["contrast"].to_list() == ["slope"] + [f"{b}-{a}" for a, b in zip(sizes[:-1], sizes[1:])]
    by = {r["size"]: r["diff"] for r in res["paired_by_size"].filter(pl.col("metric") == "scanner_cov").iter_rows(named=True)}
    step = contrasts.filter(pl.col("contrast") == f"{sizes[1]}-{sizes[0]}")["estimate"][0]
    assert step == pytest.approx(by[sizes[1]] - by[sizes[0]])


def test_size_contrasts_known_slope():
    from scangen.experiments.ablation import size_contrasts

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 500)
    samples = {k: {"scanner_cov": -0.1 * k + noise} for k in (2, 3, 4)}  # exactly linear in every resample
    paired = pl.DataFrame({"size": [2, 3, 4], "metric": ["scanner_cov"] * 3, "diff": [-0.2, -0.3, -0.4]})
    out = size_contrasts(paired, samples, metrics=("scanner_cov",))
    slope = out.row(0, named=True)
    assert slope["contrast"] == "slope" and slope["estimate"] == pytest.approx(-0.1)
    assert slope["lo"] == pytest.approx(-0.1) and slope["hi"] == pytest.approx(-0.1) and slope["verdict"] == "lower"
    assert out["contrast"].to_list() == ["slope", "3-2", "4-3"]


def test_published_values_join_by_model():
    from scangen.experiments.scanner_bias import with_published

    metrics = pl.DataFrame({"fm": ["phikon-sim", "virchow-sim", "my-real-fm"], "robustness_index": [0.4, 0.8, 0.5]})
    assert with_published(metrics, None)["real_model"].to_list() == ["Phikon", "Virchow", None]
    pub = pl.DataFrame({"model": ["phikon-sim", "phikon-sim", "virchow-sim", "phikon-sim"],
                        "metric": ["ri", "top10", "ri", "ri"], "published": [0.476, 0.125, 0.815, 0.476],
                        "achieved": [0.47, 0.13, 0.8, 0.46], "protocol": ["calibration", "calibration", "calibration", "check"]})
    out = with_published(metrics, pub)
    assert out["published_ri"].to_list() == [0.476, 0.815, None]
    assert out["published_top10"].to_list() == [0.125, None, None]
    with pytest.raises(ValueError, match="calibration table"):
        with_published(metrics, pub.drop("published"))


def test_sensitivity_sweep_is_one_at_a_time(tiny_store: Path, tmp_path: Path):
    from scangen.experiments.sensitivity import sweep_configs
    from scangen.experiments.session import ExperimentSession

    s = ExperimentSession(tiny_store, tmp_path, {"max_steps": 2})
    grid = {"scangen_level": ["slide", "patch"], "lam": [0.3, 1.0, 3.0]}
    sweep = sweep_configs(s, "uni-sim", grid, seeds=[0, 1])
    # per seed: the default run + one run per non-default value (patch, 0.3, 3.0)
    assert len(sweep) == 2 * 4
    default = sweep[0][2]
    assert default.use_scangen and default.scangen_level == "slide" and default.lam == 1.0
    for name, value, cfg in sweep[1:4]:
        changed = {k for k in ("scangen_level", "lam") if getattr(cfg, k) != getattr(default, k)}
        assert changed == {name} and getattr(cfg, name) == value
    with pytest.raises(ValueError, match="not a TrainConfig field"):
        sweep_configs(s, "uni-sim", {"nope": [1]}, seeds=[0])


# --- data step: store provenance -------------------------------------------------------------------

def test_prepare_store_reuses_a_current_store_and_resimulates_a_stale_one(tmp_path: Path, monkeypatch):
    from scangen.experiments import data, provenance

    store = tmp_path / "tiny-seed0"
    path, how = data.prepare_store(store, "tiny", 0, models=["phikon-sim"])
    assert (path, how) == (store, "simulated")
    recorded = provenance.read_description(store)
    assert recorded["fingerprint"] == provenance.simulator_fingerprint() and recorded["seed"] == 0
    doc1 = data.data_json(data.cohort_tables(store), store, how)
    stamp = (store / "slides.parquet").stat().st_mtime_ns
    assert data.prepare_store(store, "tiny", 0, models=["phikon-sim"]) == (store, "existing")
    assert (store / "slides.parquet").stat().st_mtime_ns == stamp  # reused, not rewritten
    doc2 = data.data_json(data.cohort_tables(store), store, "existing")
    assert doc1 == doc2 and doc1["source"] == "simulated"  # reruns write the same data.json
    # the simulator's code changed: the store is simulated again and the new fingerprint recorded
    monkeypatch.setattr(provenance, "simulator_fingerprint", lambda source=None: "changed")
    assert data.prepare_store(store, "tiny", 0, models=["phikon-sim"]) == (store, "simulated")
    assert provenance.read_description(store)["fingerprint"] == "changed"


def test_simulator_fingerprint_follows_its_files(tmp_path: Path):
    from scangen.experiments.provenance import simulator_fingerprint

    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "fm_params.json").write_text("{}")
    before = simulator_fingerprint(tmp_path)
    assert simulator_fingerprint(tmp_path) == before
    (tmp_path / "fm_params.json").write_text('{"a": 1}')
    assert simulator_fingerprint(tmp_path) != before
    with pytest.raises(FileNotFoundError, match="no .py/.json"):
        simulator_fingerprint(tmp_path / "missing")


# --- scanner bias: bounded embedding metrics -------------------------------------------------------

def test_embedding_metrics_bounds_give_values_in_range(tiny_store: Path):
    from scangen.experiments import scanner_bias as sb
    from scangen.metrics import robustness as rb
    from scangen.store import load_bags

    multi = rb.select_scans(load_bags(tiny_store, "phikon-sim"), "multiscanner", 40)
    row = sb.embedding_metrics(tiny_store, "phikon-sim", multi, max_patches_per_slide=4, max_tile_queries=8,
                               predictability_pca=4)
    assert row == sb.embedding_metrics(tiny_store, "phikon-sim", multi, max_patches_per_slide=4,
                                       max_tile_queries=8, predictability_pca=4)  # deterministic
    for key in ("robustness_index", "wsi_top1", "tile_top10", "scanner_predictability"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["ri_n_patches"] <= 4 * multi.slides.height
    with pytest.raises(ValueError, match="predictability_pca"):
        sb.embedding_metrics(tiny_store, "phikon-sim", multi, predictability_pca=0)


def test_paired_display_formats_changes():
    paired = pl.DataFrame({"fm": ["a"], "metric": ["scanner_cov"], "baseline": [0.4], "scangen": [0.3], "diff": [-0.1],
                           "diff_lo": [-0.2], "diff_hi": [0.05], "level": [0.95], "verdict": ["inconclusive"], "n_pairs": [5]})
    shown = stats.paired_display(paired, "fm", {"a": "A"})
    assert shown.row(0, named=True) == {"fm": "A", "metric": "scanner CoV (paper)", "baseline": "0.400",
                                        "ScanGen": "0.300", "change [95% CI]": "-0.100 [-0.20, 0.05]",
                                        "verdict": "inconclusive", "pairs": "5"}
