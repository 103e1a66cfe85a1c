"""ScanGen against the baseline on the quick simulated cohort (one FM, fixed seed).

What is asserted, and what is not:
- The setting is fixed in advance, not searched for this test: the quick cohort at seed 0, the FM
  Table 2 uses (hoptimus0-sim), the quick parameter set's training settings, and the item level
  ("bag") that the sensitivity notebook's validation rule picks; every other ScanGen setting is the
  default.
- Asserted: ScanGen lowers the scale-free scanner share of the test logits (mean within-specimen
  std over scanners / std of specimen means, `scangen.metrics.scanner_variance`) and shrinks the
  per-scanner logit offsets relative to the spread between specimens, while the pooled test AUC is
  at least the lower end of the baseline's specimen-bootstrap CI.
- Not asserted: the paper's mean logit CoV. On the simulated cohort's 22 test specimens it is
  dominated by the few specimens whose mean logit is near 0 (a heavy-tailed ratio), and an
  early-stopped baseline with small logits around a large intercept scores a low CoV without
  agreeing better across scanners. Table 1 reports it with the decomposition beside it.
"""

from __future__ import annotations

import polars as pl

from scangen.metrics import summarize_predictions
from scangen.metrics.scanner_variance import ScannerVariance, scanner_variance
from scangen.store import Bags
from scangen.train import TrainConfig, run_experiment


FM = "hoptimus0-sim"  # the quick_bags fixture (tests/conftest.py) holds this FM only
QUICK_TRAIN = dict(max_steps=150, eval_every=25, patience=4, max_patches_train=32)  # params/quick.yml


def _test_variance(pred: pl.DataFrame) -> ScannerVariance:
    rows = pred.filter((pl.col("split") == "test") & (pl.col("magnification") == 40))
    return scanner_variance(rows["logit"].to_numpy(), rows["specimen_id"].to_numpy(), rows["scanner"].to_numpy())


def test_scangen_lowers_scanner_share_and_keeps_auc(quick_bags: Bags) -> None:
    base = TrainConfig(fm=FM, progress=False, seed=0, device="cpu", **QUICK_TRAIN)
    pred_base = run_experiment(base, quick_bags)
    pred_sg = run_experiment(base.replace(use_scangen=True, scangen_level="bag"), quick_bags)
    v_base, v_sg = _test_variance(pred_base), _test_variance(pred_sg)
    s_base, s_sg = summarize_predictions(pred_base, n_boot=500), summarize_predictions(pred_sg, n_boot=500)

    assert v_base.n_specimens == v_sg.n_specimens >= 20
    assert v_sg.scanner_share < 0.85 * v_base.scanner_share
    assert v_sg.offset_sd / v_sg.between_sd < v_base.offset_sd / v_base.between_sd
    assert s_sg["auc"] >= s_base["ci"][0]
