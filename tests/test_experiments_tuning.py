"""Validation-only tuning: the declared rule on hand-made candidates, margins from the ScanGen-train
split, and the test-blindness of every choice (corrupted test rows change nothing)."""

from __future__ import annotations

import json
import zlib
from dataclasses import fields
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.experiments import tuning as T
from scangen.train import TrainConfig

SCANNERS = ("AT2", "GT450", "S360MD", "P1000", "B300", "DP200")
ALL_FIELDS = {f.name for f in fields(TrainConfig)} | {"scangen_distance", "scangen_pair_norm"}


def _fake_predictions(setting: dict, seed: int, corrupt_test: bool) -> pl.DataFrame:
    """A predictions table whose val rows depend on (setting, seed) only; test rows are arbitrary."""
    key = zlib.crc32(json.dumps(setting, sort_keys=True, default=str).encode()) + seed
    rng = np.random.default_rng(key)
    rows = []
    for split, n in (("val", 8), ("test", 10)):
        for s in range(n):
            y = s % 2
            centre = (2 * y - 1) * rng.uniform(0.3, 2.0)
            for c in SCANNERS:
                rows.append((f"{split}{s}-{c}", f"{split}{s}", c, 40, "multiscanner", split, y,
                             centre + rng.normal(0, rng.uniform(0.1, 0.8))))
    df = pl.DataFrame(rows, schema=["slide_id", "specimen_id", "scanner", "magnification", "cohort", "split", "egfr",
                                    "logit"], orient="row")
    if corrupt_test:
        noise = np.random.default_rng(99 + seed).normal(0, 50, df.height)
        df = df.with_columns(
            pl.when(pl.col("split") == "test").then(1 - pl.col("egfr")).otherwise(pl.col("egfr")).alias("egfr"),
            pl.when(pl.col("split") == "test").then(pl.Series(noise)).otherwise(pl.col("logit")).alias("logit"))
    return df


def _search(corrupt: bool):
    seeds = (0, 1)
    calls = []

    def evaluate(setting):
        calls.append(setting)
        return [_fake_predictions(setting, s, corrupt) for s in seeds]

    baseline = [_fake_predictions({"baseline": True}, s, corrupt) for s in seeds]
    log, choice = T.tune(evaluate, baseline, margins=[0.05, 0.1, 0.2], known_fields=ALL_FIELDS)
    return log, choice, calls


def test_corrupting_the_test_split_changes_no_choice():
    log, choice, calls = _search(corrupt=False)
    log_c, choice_c, calls_c = _search(corrupt=True)
    assert log.equals(log_c) and choice == choice_c and calls == calls_c
    assert set(log["stage"]) == {name for name, _ in T.STAGES}
    assert log.group_by("stage").agg(pl.col("chosen").sum())["chosen"].to_list() == [1] * len(T.STAGES)
    # stage 1 is the full level x distance product (6), the margin stage the 3 observed values + current
    counts = dict(log.group_by("stage").len().iter_rows())
    assert counts["item level and distance"] == 6 and counts["margin"] == 4 and counts["pair normalisation"] == 2
    assert choice["n_settings_trained"] == len(calls)  # every distinct setting trained once
    assert set(choice["overrides"]) == set(T.START)


def test_stages_of_fields_the_trainer_lacks_are_skipped_and_logged():
    known = ALL_FIELDS - {"scangen_pair_norm"}
    log, choice = T.tune(lambda s: [_fake_predictions(s, 0, False)], [_fake_predictions({}, 0, False)],
                         margins=[0.1], known_fields=known)
    assert "pair normalisation" not in set(log["stage"])
    assert choice["skipped_stages"] == [{"stage": "pair normalisation", "reason": "TrainConfig has no field ['scangen_pair_norm']"}]
    assert "scangen_pair_norm" not in choice["overrides"]


def test_choose_follows_the_declared_rule():
    c = lambda auc, mcov: {"val_auc": auc, "val_median_cov": mcov}
    # index 1 has the lowest median CoV but loses too much AUC; index 2 is admissible and lowest
    assert T.choose([c(0.80, 0.5), c(0.70, 0.1), c(0.79, 0.3)], baseline_val_auc=0.80) == 2
    assert T.choose([c(0.80, 0.5), c(0.78, 0.3)], baseline_val_auc=0.80) == 1  # exactly at the tolerance
    assert T.choose([c(0.70, 0.5), c(0.60, 0.1)], baseline_val_auc=0.80) == 0  # none admissible: keep current
    assert T.choose([c(0.80, 0.3), c(0.85, 0.3), c(0.85, 0.3)], baseline_val_auc=0.80) == 1  # ties: AUC, then order


def _slides_and_means(rng, corrupt: bool = False):
    from scangen.splits import specimen_splits

    rows, means = [], []
    for s in range(30):
        base = rng.normal(size=16)
        for c in SCANNERS:
            rows.append((f"s{s}-{c}", f"s{s}", c, 40, "multiscanner", s % 2))
            means.append(base + 0.3 * rng.normal(size=16))
    slides = pl.DataFrame(rows, schema=["slide_id", "specimen_id", "scanner", "magnification", "cohort", "egfr"],
                          orient="row")
    means = np.array(means)
    if corrupt:
        held = specimen_splits(slides, 0)["split"].is_in(["val", "test"]).to_numpy()
        means[held] = rng.normal(size=(held.sum(), 16)) * 100
    return slides, means


def test_observed_distances_read_the_scangen_train_split_only():
    slides, means = _slides_and_means(np.random.default_rng(0))
    _, corrupted = _slides_and_means(np.random.default_rng(0), corrupt=True)
    a = T.observed_distances(slides, means)
    assert a == T.observed_distances(slides, corrupted)
    assert a["pos_q50"] < a["neg_q50"]  # scans of one specimen are closer than specimens on one scanner
    assert a["neg_q10"] <= a["neg_q50"] <= a["neg_q90"]
    m = T.margin_candidates(a)
    assert m == sorted(m) and len(m) == 3 and all(0 < x <= 2 for x in m)
    assert round(a["neg_q50"], 3) in m and round(a["pos_q50"], 3) in m


def test_choice_file_round_trip(tmp_path: Path):
    T.write_choice(tmp_path, {"overrides": {"lam": 3.0, "scangen_level": "bag"}, "rule": T.RULE}, simulated=True)
    assert T.read_choice(tmp_path) == {"lam": 3.0, "scangen_level": "bag"}
    assert json.loads((tmp_path / "scangen_choice.json").read_text())["simulated"] is True
    T.write_choice(tmp_path, {"overrides": {"not_a_field": 1}}, simulated=True)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        T.read_choice(tmp_path)
    with pytest.raises(FileNotFoundError, match="scangen_choice"):
        T.read_choice(tmp_path / "nowhere")


def test_val_metrics_ignore_every_other_split():
    pred = _fake_predictions({"a": 1}, 0, corrupt_test=False)
    assert T.val_metrics(pred) == T.val_metrics(_fake_predictions({"a": 1}, 0, corrupt_test=True))
    with pytest.raises(ValueError, match="split 'val'"):
        T.val_metrics(pred.filter(pl.col("split") == "test"))


def test_log_display_and_chart():
    log, choice, _ = _search(corrupt=False)
    shown = T.log_display(log)
    assert shown.height == log.height and shown["chosen"].to_list().count("chosen") == len(T.STAGES)
    spec = T.tuning_chart(log, choice["baseline_val"]).to_dict()
    assert "facet" in spec
