"""Trainer: determinism, predictions table, checkpoints (weights_only), heads learn, ScanGen branch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from scangen.store import Bags, load_bags
from scangen.train import (
    PREDICTION_COLUMNS,
    TrainConfig,
    assign_splits,
    load_checkpoint,
    predict_logits,
    run_experiment,
    save_checkpoint,
    train,
)
from scangen.train.batching import BagTensors
from scangen.train.trainer import make_optimizer

FAST = dict(fm="phikon-sim", max_steps=12, eval_every=4, task_batch_size=8, max_patches_train=16,
            progress=False, num_threads=1)


@pytest.fixture(scope="module")
def tiny_bags(tiny_store: Path) -> Bags:
    return load_bags(tiny_store, "phikon-sim")


def test_two_runs_give_identical_predictions(tiny_bags: Bags) -> None:
    cfg = TrainConfig(use_scangen=True, **FAST)
    a = run_experiment(cfg, tiny_bags)
    b = run_experiment(cfg, tiny_bags)
    assert a.equals(b)
    c = run_experiment(cfg.replace(seed=1), tiny_bags)
    assert not np.array_equal(a["logit"].to_numpy(), c["logit"].to_numpy())


def test_prediction_table_rows_and_columns(tiny_bags: Bags, tmp_path: Path) -> None:
    out = tmp_path / "pred.parquet"
    cfg = TrainConfig(output=str(out), predict_task=True, **FAST)
    pred = run_experiment(cfg, tiny_bags)
    assert tuple(pred.columns[: len(PREDICTION_COLUMNS)]) == PREDICTION_COLUMNS
    assert all(c.startswith("diag_") for c in pred.columns[len(PREDICTION_COLUMNS):])
    assert pl.read_parquet(out).equals(pred)
    slides = assign_splits(tiny_bags.slides, cfg)
    expected = slides.filter(pl.col("split").is_in(["task_train", "val", "test"]))
    assert sorted(pred["slide_id"]) == sorted(expected["slide_id"])
    assert set(pred["split"]) == {"task_train", "val", "test"}
    assert pred["slide_id"].n_unique() == pred.height
    assert np.allclose(pred["prob"], 1 / (1 + np.exp(-pred["logit"].to_numpy())))
    assert pred["simulated"].all() and (pred["head"] == "gap").all()
    assert pred.group_by("specimen_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_checkpoint_round_trip_with_weights_only(tiny_bags: Bags, tmp_path: Path) -> None:
    cfg = TrainConfig(head="abmil", head_kwargs={"attention_dim": 32}, **FAST)
    result = train(cfg, tiny_bags)
    path = save_checkpoint(tmp_path / "m.pt", result.model, cfg, {"best_step": result.best_step})
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["head_kwargs"] == {"attention_dim": 32} and raw["info"]["best_step"] == result.best_step
    model, config = load_checkpoint(path)
    assert config == cfg
    bt = BagTensors.from_bags(tiny_bags, torch.device("cpu"))
    pos = np.arange(len(tiny_bags))
    # Compared on the CPU: on a CUDA machine `result.model` was trained there, and the same weights give
    # logits that differ at float rounding between devices.
    assert np.array_equal(predict_logits(model, bt, pos), predict_logits(result.model.cpu(), bt, pos))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by benchmarks/run_device_checks.sh)")
def test_predict_moves_cpu_bags_to_a_cuda_model(tiny_bags: Bags) -> None:
    from scangen.models import build_model

    torch.manual_seed(0)
    model = build_model(tiny_bags.dim, "abmil")
    bt = BagTensors.from_bags(tiny_bags, torch.device("cpu"))
    pos = np.arange(len(tiny_bags))
    on_cpu = predict_logits(model, bt, pos)
    on_gpu = predict_logits(model.to("cuda"), bt, pos)
    assert on_gpu.shape == (len(tiny_bags),) and np.allclose(on_gpu, on_cpu, atol=1e-3)


@pytest.mark.parametrize("level, with_20x", [("slide", False), ("patch", True), ("bag", False)])
def test_scangen_branch_lowers_its_loss(tiny_bags: Bags, level: str, with_20x: bool) -> None:
    cfg = TrainConfig(use_scangen=True, scangen_level=level, include_20x_in_scangen=with_20x, scangen_k=3,
                      scanner_subset=("AT2", "GT450", "B300"), lam=5.0, lr=1e-3,
                      **{**FAST, "max_steps": 30, "eval_every": 10, "patience": 10})
    hist = train(cfg, tiny_bags).history
    assert hist.height == 3
    assert hist["scangen_loss"][-1] < hist["scangen_loss"][0]
    assert (hist["scangen_loss"] > 0).all()


def test_baseline_has_no_scangen_loss_and_bad_validation_is_reported(tiny_bags: Bags) -> None:
    hist = train(TrainConfig(**FAST), tiny_bags).history
    assert (hist["scangen_loss"] == 0).all() and hist["step"].to_list() == [4, 8, 12]
    one_class = tiny_bags.slides.with_columns(
        pl.when(pl.col("cohort") == "multiscanner").then(0).otherwise(pl.col("egfr")).cast(pl.Int8).alias("egfr")
    )
    bad = Bags(slides=one_class, features=tiny_bags.features, offsets=tiny_bags.offsets, coords=tiny_bags.coords)
    with pytest.raises(ValueError, match="single class of the task label|split .val. has no specimen of class"):
        train(TrainConfig(**FAST), bad)


def test_optimizer_is_fused_on_cpu_and_runs_repeat_bit_identically(tiny_bags: Bags) -> None:
    cfg = TrainConfig(**FAST)
    model = torch.nn.Linear(3, 1)
    assert make_optimizer(model, cfg, torch.device("cpu")).defaults["fused"] is True
    a, b = train(cfg, tiny_bags), train(cfg, tiny_bags)
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name


def test_result_reports_scangen_specimens_left_out(tiny_bags: Bags) -> None:
    """A ScanGen specimen left with a single scan cannot form an attraction pair: it is counted."""
    cfg = TrainConfig(use_scangen=True, scangen_k=3, **FAST)
    assert train(TrainConfig(**FAST), tiny_bags).scangen_excluded == 0
    assert train(cfg, tiny_bags).scangen_excluded == 0  # every specimen has all its scans
    slides = assign_splits(tiny_bags.slides, cfg).with_row_index("_pos")
    pool = slides.filter((pl.col("split") == "scangen_train") & (pl.col("magnification") == 40))
    victim = pool["specimen_id"].sort()[0]
    drop = pool.filter(pl.col("specimen_id") == victim)["_pos"].to_numpy()[1:]
    assert drop.size >= 1
    keep = np.setdiff1d(np.arange(len(tiny_bags)), drop)
    assert train(cfg, tiny_bags.select(keep)).scangen_excluded == 1
