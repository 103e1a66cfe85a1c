"""`summarize_predictions` on a hand-made predictions table whose every number is known."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.constants import SCANNERS_40X
from scangen.metrics import roc_auc, summarize_predictions

VAL = {"v0": (0, [-1.0, -0.8]), "v1": (0, [0.2, 0.4]), "v2": (1, [0.5, 0.7]), "v3": (1, [1.0, 1.2])}
"""Validation specimens: Youden's threshold is 0.5 (TPR 1, FPR 0), the only optimum."""
TEST = {
    "t0": (0, [-2.0] * 6, 5.0),
    "t1": (1, [0.4, 0.6, 0.6, 0.6, 0.6, 0.6], 0.6),
    "t2": (1, [2.0, 2.0, 2.0, 3.0, 3.0, 3.0], 2.0),
    "t3": (0, [0.40, 0.40, 0.40, 0.55, 0.55, 0.55], 0.40),
}
"""Test specimens: (EGFR, six 40x logits in SCANNERS_40X order, GT450@20x logit). Youden's threshold on
these test scans would be 0.6, which flips only t1; at the validation threshold 0.5 t1 and t3 flip."""


def _table() -> pl.DataFrame:
    rows = []
    for spec, (y, logits) in VAL.items():
        rows += [(f"{spec}-{c}", spec, c, 40, "val", y, v) for c, v in zip(SCANNERS_40X, logits)]
    for spec, (y, logits, mag20) in TEST.items():
        rows += [(f"{spec}-{c}", spec, c, 40, "test", y, v) for c, v in zip(SCANNERS_40X, logits)]
        rows.append((f"{spec}-GT450-20", spec, "GT450", 20, "test", y, mag20))
    rows.append(("task-0", "task-0", "AT2", 40, "task_train", 1, 9.0))
    df = pl.DataFrame(rows, schema=["slide_id", "specimen_id", "scanner", "magnification", "split", "egfr", "logit"],
                      orient="row")
    return df.with_columns(pl.when(pl.col("split") == "task_train").then(pl.lit("task")).otherwise(pl.lit("multiscanner"))
                           .alias("cohort"))


def _cov(values) -> float:
    v = np.asarray(values, dtype=float)
    return float(v.std() / abs(v.mean()))


def test_summary_of_a_hand_made_table():
    out = summarize_predictions(_table(), n_boot=200)
    assert out["threshold"] == 0.5  # chosen on validation
    assert out["flip_rate"] == 0.5  # t1 and t3 of four specimens
    assert out["n_specimens"] == 4 and out["n_slides"] == 24  # 40x test WSIs only
    # the scanner CoV reads the six 40x scans; the 20x scans (e.g. t0's 5.0) are left out
    assert out["scanner_cov"] == pytest.approx(np.mean([_cov(TEST[s][1]) for s in TEST]), rel=1e-12)
    assert out["n_near_zero"] == 1  # t3: |mean logit| 0.475 < 0.5
    # the magnification CoV reads only the GT450 pair (40x logit is index 1 of SCANNERS_40X)
    mag = [_cov([TEST[s][1][1], TEST[s][2]]) for s in TEST]
    assert out["mag_cov"] == pytest.approx(np.mean(mag), rel=1e-12)
    y = np.repeat([TEST[s][0] for s in TEST], 6)
    assert out["auc"] == pytest.approx(roc_auc(y, np.concatenate([TEST[s][1] for s in TEST])))


def test_test_labels_never_move_the_threshold():
    table = _table()
    corrupted = table.with_columns(pl.when(pl.col("split") == "test").then(1 - pl.col("egfr")).otherwise(pl.col("egfr"))
                                   .alias("egfr"))
    a, b = summarize_predictions(table, n_boot=50), summarize_predictions(corrupted, n_boot=50)
    assert a["threshold"] == b["threshold"] == 0.5 and a["flip_rate"] == b["flip_rate"]
    assert b["auc"] == pytest.approx(1 - a["auc"])  # the test labels are read where they belong
    # an explicit threshold overrides validation
    assert summarize_predictions(table, n_boot=50, threshold=0.6)["flip_rate"] == 0.25


def test_missing_validation_split_is_an_error():
    with pytest.raises(ValueError, match="split 'val'"):
        summarize_predictions(_table().filter(pl.col("split") != "val"), n_boot=20)
