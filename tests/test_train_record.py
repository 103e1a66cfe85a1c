"""RunRecord: predictions with diag_* columns, one history row per evaluation, test tracing never
changes selection, and the harmonisation / adversary options (skipped without scangen.harmonise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.store import Bags, load_bags
from scangen.train import PREDICTION_COLUMNS, TrainConfig, run_experiment, run_record
from scangen.train.diagnose import DIAGNOSTIC_NAMES
from scangen.train.evaluation import TEST_TRACE_COLUMNS
from scangen.train.experiment import HISTORY_COLUMNS

FAST = dict(fm="phikon-sim", max_steps=12, eval_every=4, task_batch_size=8, max_patches_train=16,
            progress=False, num_threads=1)


@pytest.fixture(scope="module")
def tiny_bags(tiny_store: Path) -> Bags:
    return load_bags(tiny_store, "phikon-sim")


def test_record_holds_predictions_history_and_diagnostics(tiny_bags: Bags) -> None:
    rec = run_record(TrainConfig(use_scangen=True, **FAST), tiny_bags)
    names = list(rec.diagnostics)
    assert names[: len(DIAGNOSTIC_NAMES)] == list(DIAGNOSTIC_NAMES)
    scanners = rec.predictions.filter(pl.col("magnification") == 40)["scanner"].unique().to_list()
    assert sorted(names[len(DIAGNOSTIC_NAMES):]) == sorted(f"norm_{s}" for s in scanners)
    assert all(np.isfinite(v) for v in rec.diagnostics.values())
    assert tuple(rec.predictions.columns) == PREDICTION_COLUMNS + tuple(f"diag_{n}" for n in names)
    for name, value in rec.diagnostics.items():
        col = rec.predictions[f"diag_{name}"]
        assert col.dtype == pl.Float64 and (col == value).all()
    assert set(HISTORY_COLUMNS) <= set(rec.history.columns) and rec.history["step"].to_list() == [4, 8, 12]
    assert not set(TEST_TRACE_COLUMNS) & set(rec.history.columns)
    h = rec.history
    assert np.allclose(h["scangen_loss"], h["att_term"] + h["rep_term"], rtol=1e-5)


def test_baseline_terms_are_nan_and_run_experiment_is_the_records_table(tiny_bags: Bags) -> None:
    cfg = TrainConfig(**FAST)
    rec = run_record(cfg, tiny_bags)
    assert np.isnan(rec.diagnostics["att_term"]) and np.isnan(rec.diagnostics["rep_term"])
    assert rec.history["att_term"].is_nan().all() and (rec.history["scangen_loss"] == 0).all()
    assert run_experiment(cfg, tiny_bags).equals(rec.predictions)


@pytest.mark.parametrize("min_step", [0, 8])
def test_tracing_the_test_split_changes_nothing_but_the_history(tiny_bags: Bags, min_step: int) -> None:
    """A traced run adds test columns and the (never selectable) evaluations before select_min_step
    to the history; its predictions and every other history value are bit-identical."""
    cfg = TrainConfig(use_scangen=True, select_min_step=min_step, **FAST)
    plain, traced = run_record(cfg, tiny_bags), run_record(cfg.replace(trace_test=True), tiny_bags)
    assert set(TEST_TRACE_COLUMNS) <= set(traced.history.columns)
    assert traced.history["step"].to_list() == [4, 8, 12]
    assert plain.history["step"].to_list() == [s for s in (4, 8, 12) if s >= min_step]
    assert traced.history.drop(TEST_TRACE_COLUMNS).filter(pl.col("step") >= min_step).equals(plain.history)
    assert traced.predictions.equals(plain.predictions)


@pytest.mark.parametrize("change, field", [({"harmonize": "combat"}, "harmonize"), ({"adversary_weight": 0.5}, "adversary_weight")])
def test_missing_harmonise_package_is_a_clear_error(tiny_bags: Bags, change: dict, field: str, monkeypatch) -> None:
    import scangen.train.extensions as ext

    def missing(name: str):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(ext.importlib, "import_module", missing)
    with pytest.raises(ImportError, match=f"TrainConfig.{field}"):
        run_record(TrainConfig(**FAST, **change), tiny_bags)


@pytest.mark.parametrize("use_scangen", [False, True])
def test_adversary_runs_with_and_without_scangen(tiny_bags: Bags, use_scangen: bool) -> None:
    pytest.importorskip("scangen.harmonise")
    cfg = TrainConfig(use_scangen=use_scangen, **FAST)
    plain, adv = run_record(cfg, tiny_bags), run_record(cfg.replace(adversary_weight=1.0), tiny_bags)
    assert adv.history.height >= 1 and np.isfinite(adv.predictions["logit"].to_numpy()).all()
    assert not np.array_equal(plain.predictions["logit"].to_numpy(), adv.predictions["logit"].to_numpy())


def test_harmonised_features_are_fitted_on_training_slides_only(tiny_bags: Bags, monkeypatch) -> None:
    harmonise = pytest.importorskip("scangen.harmonise")
    seen: dict[str, np.ndarray] = {}
    original = harmonise.harmonise_bags

    def spy(bags, fit_positions, method):
        seen["pos"] = np.asarray(fit_positions)
        return original(bags, fit_positions, method)

    monkeypatch.setattr(harmonise, "harmonise_bags", spy)
    cfg = TrainConfig(harmonize="standardize", **FAST)
    rec = run_record(cfg, tiny_bags)
    from scangen.train import assign_splits

    splits = assign_splits(tiny_bags.slides, cfg)["split"].to_numpy()
    assert set(splits[seen["pos"]]) == {"task_train", "scangen_train"}
    assert seen["pos"].size == int(np.isin(splits, ["task_train", "scangen_train"]).sum())
    assert np.isfinite(rec.predictions["logit"].to_numpy()).all()
