"""Table 3 machinery on the tiny cohort: configs per method, every harmonisation fitted on training slides
only (a spy on the fitters sees no val or test slide, in training and at the embedding level), the
paired table against the baseline, and the result JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scangen.experiments import harmonisation as H
from scangen.experiments import harmonisation_views as V
from scangen.experiments.session import ExperimentSession, train_settings
from scangen.harmonise import api
from scangen.splits import specimen_splits

FM = "phikon-sim"


@pytest.fixture()
def session(tiny_store: Path, tmp_path: Path) -> ExperimentSession:
    return ExperimentSession(tiny_store, tmp_path / "cache",
                             train_settings(4, "cpu", {"eval_every": 2, "patience": 1}), progress=False)


@pytest.fixture()
def fit_spy(monkeypatch):
    """Records the slide ids every feature-map fit reads (wraps each fitter of scangen.harmonise)."""
    seen: list[list[str]] = []
    for name, fitter in list(api._FITTERS.items()):
        def spy(bags, positions, *a, _f=fitter, **k):
            seen.append(bags.slides["slide_id"][np.asarray(positions)].to_list())
            return _f(bags, positions, *a, **k)
        monkeypatch.setitem(api._FITTERS, name, spy)
    return seen


def _split_of(session: ExperimentSession) -> dict[str, str]:
    slides = specimen_splits(session.bags(FM).slides, session.base.split_seed, session.base.split_fractions)
    return dict(zip(slides["slide_id"].to_list(), slides["split"].to_list()))


def test_method_configs_share_the_baseline_and_differ_by_the_method_only(session):
    labelled = H.method_configs(session, FM, [0, 1], scangen={"lam": 3.0})
    assert [m for m, _ in labelled] == [m for m in H.METHODS for _ in range(2)]
    cfg = {m: c for m, c in labelled if c.seed == 0}
    assert cfg["none"] == session.config(fm=FM, head="gap", use_scangen=False, seed=0)
    assert cfg["combat"] == cfg["none"].replace(harmonize="combat")
    assert cfg["dann"] == cfg["none"].replace(adversary_weight=H.DANN_WEIGHT)
    assert cfg["scangen"].use_scangen and cfg["scangen"].lam == 3.0
    assert cfg["scangen+standardize"] == cfg["scangen"].replace(harmonize="standardize")
    with pytest.raises(ValueError, match="methods"):
        H.method_configs(session, FM, [0], ["combat", "none"])


def test_table3_fits_on_training_slides_only_and_pairs_every_method(session, fit_spy):
    methods = ["none", "standardize", "combat", "coral", "dann"]
    runs, summary, paired = H.run_table3(session, [FM], [0], methods, n_boot=50)
    split = _split_of(session)
    assert len(fit_spy) == 3  # one fit per feature-map run; DANN and the baseline fit nothing
    for ids in fit_spy:
        assert ids and {split[s] for s in ids} <= set(H.fit_splits())
    assert runs["method"].to_list() == methods and summary.height == len(methods)
    scanners = session.primary_scanners
    expected = list(H.TABLE3_METRICS) + [f"auc_{s}" for s in scanners]
    for m in methods[1:]:
        rows = paired.filter(pl.col("method") == m)
        assert rows["metric"].to_list() == expected
        assert (rows["diff"] - (rows["corrected"] - rows["baseline"])).abs().max() < 1e-12
    # the baseline's paired values are the baseline run's own test metrics
    base = runs.filter(pl.col("method") == "none")
    got = paired.filter((pl.col("method") == "dann") & (pl.col("metric") == "scanner_cov"))["baseline"][0]
    assert got == pytest.approx(base["scanner_cov"][0], rel=1e-6)
    doc = H.table3_json(paired, summary, None, seeds=[0])
    assert doc["fms"][FM]["combat"]["needs"].startswith("the slide's scanner label")
    assert doc["fms"][FM]["dann"]["needs"] == "the slide only"
    shown = V.table3_display(paired)
    assert shown.height == len(methods) - 1 and "needs at test time" in shown.columns


def test_embedding_table_fits_on_training_slides_and_measures_test_slides(session, fit_spy, tiny_store):
    bags = session.bags(FM)
    table = H.embedding_table(tiny_store, FM, bags, session.config(fm=FM), max_patches_per_slide=4,
                              max_tile_queries=16)
    split = _split_of(session)
    assert table["method"].to_list() == ["none", "standardize", "combat", "coral"]
    assert len(fit_spy) == 3
    for ids in fit_spy:
        assert {split[s] for s in ids} <= set(H.fit_splits())
    n_test = sum(v == "test" for v in split.values())
    assert (table["n_test_slides"] == n_test).all()
    assert table.filter(pl.col("method") == "none")["scanner_predictability_diff"][0] == 0.0
    assert np.isfinite(table["wsi_top1"].to_numpy()).all()
