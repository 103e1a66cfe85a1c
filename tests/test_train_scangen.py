"""ScanGen against the baseline on the quick simulated cohort, at a setting fixed in advance.

Protocol, written down on 2026-11-26 before any run of it:
- FM: the simulated FM with the lowest robustness index (notebook 02 on the quick cohort), the one
  with the most scanner disagreement to remove: phikon-sim (RI 0.41; among the five real models,
  Phikon also has the lowest published RI, 0.476). `SCANNER_SENSITIVE_FM` in conftest.py.
- Training: the full parameter set's settings (params/full.yml: 400 steps, validation every 25,
  patience 6, the trainer's default 128 patches per bag) on one CPU thread, so the numbers below are
  exact. The quick set's shorter schedule is not used: it often stops a baseline at its first
  evaluation, before it has learnt the scanner shortcut the paper is about.
- ScanGen item level "bag", the level the sensitivity notebook's validation rule picks; every other
  ScanGen setting is the default.
- Training seed 2, never run before the protocol was fixed; seeds 3 and 4 were run once as a
  replication and are not tested.

Asserted at seed 2: ScanGen lowers the paper's scanner CoV (mean over test specimens of std/|mean|
of the logits over the six 40x scanners, `scangen.metrics.scanner_cov`) and the scale-free scanner
share (`scangen.metrics.scanner_variance`), shrinks the per-scanner offsets relative to the spread
between specimens, and keeps the pooled test AUC at or above the lower end of the baseline's
specimen-bootstrap CI.

Measured (CPU, 1 thread), baseline -> ScanGen:
- seed 2: CoV 6.00 -> 1.73, share 3.16 -> 0.92, AUC 0.651 -> 0.807;
- seed 3: CoV 1.00 -> 3.56, share 2.74 -> 1.01, AUC 0.671 -> 0.814;
- seed 4: CoV 3.52 -> 8.22, share 2.61 -> 0.88, AUC 0.663 -> 0.821.
So the share and the AUC replicate; the mean logit CoV fell in one of the three seeds. Its denominator
is the specimen's mean logit: over 22 test specimens the few with a mean near 0 decide it, and a
baseline with a large intercept (seed 4) or one chosen at its first evaluation (seed 3) scores low
without agreeing better across scanners. Table 1 reports the CoV with the decomposition beside it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml

from conftest import SCANNER_SENSITIVE_FM
from scangen.metrics import summarize_predictions
from scangen.metrics.scanner_variance import ScannerVariance, scanner_variance
from scangen.paths import PARAMS
from scangen.store import load_bags
from scangen.train import TrainConfig, run_experiment

FULL_TRAIN = dict(max_steps=400, eval_every=25, patience=6)
"""params/full.yml's training settings, fixed here so that a change of the set cannot move the test."""


def _test_variance(pred: pl.DataFrame) -> ScannerVariance:
    rows = pred.filter((pl.col("split") == "test") & (pl.col("magnification") == 40))
    return scanner_variance(rows["logit"].to_numpy(), rows["specimen_id"].to_numpy(), rows["scanner"].to_numpy())


def test_protocol_settings_are_the_full_sets() -> None:
    params = yaml.safe_load((PARAMS / "full.yml").read_text())["parameters"]
    assert {"max_steps": params["steps"], **params["train"]} == FULL_TRAIN
    assert "max_patches_train" not in params["train"] and TrainConfig().max_patches_train == 128


def test_scangen_lowers_scanner_cov_and_keeps_auc(quick_store: Path) -> None:
    bags = load_bags(quick_store, SCANNER_SENSITIVE_FM)
    base = TrainConfig(fm=SCANNER_SENSITIVE_FM, seed=2, device="cpu", num_threads=1, progress=False, **FULL_TRAIN)
    pred_base = run_experiment(base, bags)
    pred_sg = run_experiment(base.replace(use_scangen=True, scangen_level="bag"), bags)
    s_base, s_sg = summarize_predictions(pred_base, n_boot=500), summarize_predictions(pred_sg, n_boot=500)
    v_base, v_sg = _test_variance(pred_base), _test_variance(pred_sg)

    assert s_base["n_specimens"] == s_sg["n_specimens"] == v_base.n_specimens >= 20
    assert s_sg["scanner_cov"] < s_base["scanner_cov"]
    assert v_sg.scanner_share < v_base.scanner_share
    assert v_sg.offset_sd / v_sg.between_sd < v_base.offset_sd / v_base.between_sd
    assert s_sg["auc"] >= s_base["ci"][0]
