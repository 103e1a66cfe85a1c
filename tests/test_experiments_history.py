"""Training-history tables and chart for both arms (notebook 04)."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pytest

from scangen.experiments.history import history_chart, history_long
from scangen.train import TrainConfig


def _record(best: int, trace: bool) -> SimpleNamespace:
    h = {"step": [25, 50, 75], "val_auc": [0.6, 0.7, 0.65], "val_cov": [1.0, 0.8, 0.9], "val_median_cov": [0.5, 0.4, 0.45],
         "val_within_sd": [0.3, 0.4, 0.5], "selected": [1.0, 1.0, 0.0]}
    if trace:
        h.update(test_auc=[0.5, 0.6, 0.7], test_cov=[2.0, 1.0, 1.5], test_median_cov=[0.6, 0.5, 0.4],
                 test_within_sd=[0.2, 0.3, 0.4])
    return SimpleNamespace(history=pl.DataFrame(h), predictions=pl.DataFrame({"best_step": [best]}))


def test_history_long_stacks_splits_metrics_and_marks_the_selected_step():
    cfgs = [TrainConfig(fm="uni-sim", seed=0), TrainConfig(fm="uni-sim", seed=0, use_scangen=True)]
    long = history_long(cfgs, [_record(50, True), _record(75, False)])
    assert long.height == 3 * 4 * 2 + 3 * 4  # baseline: val + test traced; ScanGen: val only
    assert set(long["arm"]) == {"baseline", "ScanGen"} and set(long["split"]) == {"val", "test"}
    picked = long.filter(pl.col("selected"))
    assert set(zip(picked["arm"], picked["step"])) == {("baseline", 50), ("ScanGen", 75)}
    v = long.filter((pl.col("arm") == "baseline") & (pl.col("split") == "test") & (pl.col("metric") == "cov"))
    assert v["value"].to_list() == [2.0, 1.0, 1.5]
    spec = history_chart(long).to_dict()
    assert "facet" in spec
    with pytest.raises(ValueError, match="equal lengths"):
        history_long(cfgs, [_record(50, True)])
