"""Paired specimen bootstrap and the chance reference of subset counts, against known answers."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from scangen.experiments.ablation import enumerate_subsets
from scangen.metrics import flip_rate, magnification_cov, median_scanner_cov, roc_auc, scanner_cov, within_specimen_sd
from scangen.metrics.paired import (
    PAIRED_METRICS,
    RunEval,
    count_reference,
    metric_values,
    paired_bootstrap,
    paired_from_predictions,
    run_eval,
    verdict,
    weighted_median,
)
from scangen.metrics.scanner_variance import scanner_variance

SCANNERS = ("AT2", "GT450", "S360MD", "P1000", "B300", "DP200")


def _predictions(logits: np.ndarray, y_spec: np.ndarray, prefix: str = "t", val_shift: float = 0.0) -> pl.DataFrame:
    """A predictions table: test specimens with logits (n_spec, n_scanners) and a small val split."""
    n_spec, n_scan = logits.shape
    rows = {"slide_id": [], "specimen_id": [], "scanner": [], "magnification": [], "cohort": [], "split": [],
            "egfr": [], "logit": []}
    for split, lg, yy in (("test", logits, y_spec), ("val", logits[:6] + val_shift, np.array([0, 1] * 3))):
        for s in range(lg.shape[0]):
            for c in range(n_scan + 1):  # the last one: GT450 at 20x, its logit 0.8 x the 40x one + 0.1
                mag20 = c == n_scan
                rows["slide_id"].append(f"{split}-{s}-{c}")
                rows["specimen_id"].append(f"{prefix}{split}{s:03d}")
                rows["scanner"].append("GT450" if mag20 else SCANNERS[c])
                rows["magnification"].append(20 if mag20 else 40)
                rows["cohort"].append("multiscanner")
                rows["split"].append(split)
                rows["egfr"].append(int(yy[s]))
                rows["logit"].append(float(0.8 * lg[s, 1] + 0.1 if mag20 else lg[s, c]))
    return pl.DataFrame(rows)


def _random_run(seed: int, n_spec: int = 40, n_scan: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_spec)
    y[:2] = [0, 1]
    logits = (2 * y - 1)[:, None] * rng.uniform(0.2, 2.0, (n_spec, 1)) + rng.normal(0, 0.6, (n_spec, n_scan))
    return logits, y


def test_weighted_median_is_the_median_of_the_expanded_sample():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 9))
        v = rng.normal(size=n).round(1)  # ties included
        w = rng.integers(0, 4, size=(3, n)).astype(float)
        w[:, 0] += 1  # at least one element per row
        got = weighted_median(v, w)
        want = [np.median(np.repeat(v, w[r].astype(int))) for r in range(3)]
        assert got == pytest.approx(want)


def test_unit_weights_give_the_projects_metrics():
    logits, y = _random_run(1)
    pred = _predictions(logits, y)
    ev = run_eval(pred)
    test = pred.filter((pl.col("split") == "test") & (pl.col("magnification") == 40))
    v, s = test["logit"].to_numpy(), test["specimen_id"].to_numpy()
    ones = np.ones((1, ev.specimens.size))
    val = pred.filter((pl.col("split") == "val") & (pl.col("magnification") == 40))
    expected = {
        "scanner_cov": scanner_cov(v, s), "median_cov": median_scanner_cov(v, s), "within_sd": within_specimen_sd(v, s),
        "scanner_share": scanner_variance(v, s, test["scanner"].to_numpy()).scanner_share,
        "flip_rate": flip_rate(v, s, ev.threshold), "auc": roc_auc(test["egfr"].to_numpy(), v),
        "mag_cov": magnification_cov(pred.filter(pl.col("split") == "test")),
    }
    for m in PAIRED_METRICS:
        assert metric_values(ev, m, ones)[0] == pytest.approx(expected[m], rel=1e-10), m
    # the flip threshold comes from the validation rows only
    from scangen.metrics import youden_threshold
    assert ev.threshold == youden_threshold(val["egfr"].to_numpy(), val["logit"].to_numpy())


def test_identical_arms_give_an_exact_zero_and_an_inconclusive_verdict():
    logits, y = _random_run(2)
    pred = _predictions(logits, y)
    out = paired_from_predictions([(pred, pred)], n_boot=300)
    assert out["metric"].to_list() == list(PAIRED_METRICS)
    assert out["diff"].to_list() == [0.0] * len(PAIRED_METRICS)
    assert out["diff_lo"].to_list() == [0.0] * len(PAIRED_METRICS) == out["diff_hi"].to_list()
    assert set(out["verdict"]) == {"inconclusive"}


def test_constant_shift_and_scaling_known_answers():
    logits, y = _random_run(3)
    base = run_eval(_predictions(logits, y))
    shifted = run_eval(_predictions(logits + 0.7, y))  # val logits shift too
    out = paired_bootstrap([(base, shifted)], ["within_sd", "auc", "flip_rate"], n_boot=400)
    # a constant shift moves neither the spread across scanners, the ranking, nor (threshold shifted too) the flips
    for row in out.iter_rows(named=True):
        assert abs(row["diff"]) < 1e-12 and abs(row["diff_lo"]) < 1e-12 and abs(row["diff_hi"]) < 1e-12, row
    doubled = run_eval(_predictions(2 * logits, y))
    out = paired_bootstrap([(base, doubled)], ["within_sd", "scanner_share", "scanner_cov"], n_boot=400).rows_by_key("metric", named=True)
    # doubling every logit doubles the within-specimen SD: the change equals the baseline's value, CI above 0
    assert out["within_sd"][0]["diff"] == pytest.approx(out["within_sd"][0]["baseline"])
    assert out["within_sd"][0]["diff_lo"] > 0 and out["within_sd"][0]["verdict"] == "higher"
    # and leaves the scale-free share and the CoV unchanged in every resample
    for m in ("scanner_share", "scanner_cov"):
        assert abs(out[m][0]["diff_lo"]) < 1e-9 and abs(out[m][0]["diff_hi"]) < 1e-9


def test_pooling_averages_pairs_and_shares_draws_within_a_split():
    (l0, y), (l1, _) = _random_run(4), _random_run(5)
    a0, b0 = run_eval(_predictions(l0, y)), run_eval(_predictions(0.5 * l0, y))
    a1, b1 = run_eval(_predictions(l1, y)), run_eval(_predictions(0.8 * l1, y))
    one = paired_bootstrap([(a0, b0)], ["within_sd"], n_boot=200)["diff"][0]
    two = paired_bootstrap([(a1, b1)], ["within_sd"], n_boot=200)["diff"][0]
    both = paired_bootstrap([(a0, b0), (a1, b1)], ["within_sd"], n_boot=200)
    assert both["diff"][0] == pytest.approx((one + two) / 2)
    assert both["n_pairs"][0] == 2 and both["n_specimens"][0] == 40  # one split: 40 specimens, one draw
    other = run_eval(_predictions(l1, y, prefix="u"))  # another split: its own specimens and draws
    mixed = paired_bootstrap([(a0, b0), (other, other)], ["within_sd"], n_boot=200)
    assert mixed["n_specimens"][0] == 80
    with pytest.raises(ValueError, match="different test specimens"):
        paired_bootstrap([(a0, other)], ["within_sd"])
    with pytest.raises(ValueError, match="unknown"):
        paired_bootstrap([(a0, b0)], ["nope"])


def _sd_known_case(rng: np.random.Generator, n_spec: int) -> tuple[RunEval, RunEval]:
    """Baseline with specimen spreads sigma_s ~ U(0.2, 1); ScanGen = 2 x baseline logits, so the change
    of within_sd is the baseline's mean per-specimen SD (a sample mean of iid values)."""
    n_scan = 6
    y = np.tile([0, 1], n_spec // 2)
    logits = rng.normal(0, 2, (n_spec, 1)) + rng.uniform(0.2, 1.0, (n_spec, 1)) * rng.normal(size=(n_spec, n_scan))
    spec = np.repeat(np.arange(n_spec), n_scan)
    mean = logits.mean(axis=1)
    sd = logits.std(axis=1)

    def ev(scale: float) -> RunEval:
        return RunEval(np.array([f"s{i:04d}" for i in range(n_spec)]), scale * mean, scale * sd,
                       sd / np.abs(mean), np.zeros(n_spec), np.repeat(y, n_scan).astype(float),
                       scale * logits.reshape(-1), spec, 0.0)

    return ev(1.0), ev(2.0)


@pytest.mark.parametrize("level,z", [(0.95, 1.959964), (0.90, 1.644854)])
def test_interval_level_matches_the_normal_theory_width(level: float, z: float):
    """For a mean of n = 600 iid values the percentile interval is mean +- z sd / sqrt(n); a 90% interval
    reported as 95% would be 16% too narrow."""
    a, b = _sd_known_case(np.random.default_rng(7), 600)
    row = paired_bootstrap([(a, b)], ["within_sd"], n_boot=4000, level=level, seed=1).row(0, named=True)
    half = z * a.sd.std(ddof=1) / math.sqrt(a.sd.size)
    assert (row["diff_hi"] - row["diff_lo"]) / 2 == pytest.approx(half, rel=0.06)
    assert row["diff_lo"] < row["diff"] < row["diff_hi"]


def test_interval_coverage_at_two_levels():
    """Coverage over 300 simulated cohorts (n = 60) of the true change E[sd_s] (Monte Carlo, 2e5 draws)."""
    rng = np.random.default_rng(11)
    big = rng.uniform(0.2, 1.0, (200_000, 1)) * rng.normal(size=(200_000, 6))
    truth = float(big.std(axis=1).mean())
    hits = {0.95: 0, 0.90: 0}
    for r in range(300):
        a, b = _sd_known_case(rng, 60)
        for level in hits:
            row = paired_bootstrap([(a, b)], ["within_sd"], n_boot=800, level=level, seed=r).row(0, named=True)
            hits[level] += row["diff_lo"] <= truth <= row["diff_hi"]
    cover95, cover90 = hits[0.95] / 300, hits[0.90] / 300
    assert 0.92 <= cover95 <= 0.985, cover95
    assert 0.855 <= cover90 <= 0.94, cover90
    assert cover95 > cover90


def test_verdict_reads_the_interval():
    assert verdict(-0.3, -0.1) == "lower" and verdict(0.1, 0.2) == "higher"
    assert verdict(-0.1, 0.2) == "inconclusive" and verdict(0.0, 0.2) == "inconclusive"
    assert verdict(float("nan"), 0.2) == "inconclusive"


def test_run_eval_errors_name_the_problem():
    logits, y = _random_run(6)
    pred = _predictions(logits, y)
    with pytest.raises(ValueError, match="'egfr'"):
        run_eval(pred.drop("egfr"))
    with pytest.raises(ValueError, match="no 40x multiscanner rows in split 'val'"):
        run_eval(pred.filter(pl.col("split") == "test"))
    with pytest.raises(ValueError, match="single 40x scan"):
        run_eval(pred.filter((pl.col("split") == "val") | (pl.col("scanner") == "AT2")))
    no20 = run_eval(pred.filter(pl.col("magnification") == 40))
    row = paired_bootstrap([(no20, no20)], ["mag_cov"], n_boot=20).row(0, named=True)
    assert np.isnan(row["diff"]) and row["verdict"] == "inconclusive"


def test_returned_samples_are_shared_by_calls_on_one_split():
    logits, y = _random_run(8)
    a, b, c = (run_eval(_predictions(f * logits, y)) for f in (1.0, 0.5, 0.7))
    t1, s1 = paired_bootstrap([(a, b)], ["within_sd"], n_boot=100, return_samples=True)
    t2, s2 = paired_bootstrap([(a, c)], ["within_sd"], n_boot=100, return_samples=True)
    # same draws: the contrast (a->b) - (a->c) is b - c resample by resample
    _, s3 = paired_bootstrap([(c, b)], ["within_sd"], n_boot=100, return_samples=True)
    assert s1["within_sd"] - s2["within_sd"] == pytest.approx(s3["within_sd"])
    assert t1["diff_lo"][0] == pytest.approx(np.quantile(s1["within_sd"], 0.025))


# --- chance reference of best/worst counts -------------------------------------------------------------

def _exact_pmf(subsets, item: str, sizes, top_k: int) -> np.ndarray:
    """Exact chance distribution of an item's count: per size a hypergeometric draw of top_k of the
    C size-k subsets, K of which contain the item; sizes independent, so their pmfs convolve."""
    pmf = np.array([1.0])
    for k in sizes:
        members = [s for s in subsets if len(s) == k]
        has = sum(all(c in s for c in item.split("+")) for s in members)
        n = min(top_k, len(members))
        pmf = np.convolve(pmf, sps.hypergeom(len(members), has, n).pmf(np.arange(n + 1)))
    return pmf


@pytest.mark.parametrize("top_k", [1, 2])
def test_count_reference_matches_the_exact_distribution(top_k: int):
    subsets = enumerate_subsets(SCANNERS)
    sizes = (2, 3, 4, 5)
    ref = count_reference(subsets, sizes, top_k, n_perm=20000, seed=3)
    for item in ("GT450", "S360MD", "AT2+GT450", "P1000+DP200"):
        j = ref.items.index(item)
        exact = _exact_pmf(subsets, item, sizes, top_k)
        freq = np.bincount(ref.samples[:, j], minlength=exact.size)[: exact.size] / ref.samples.shape[0]
        assert np.abs(freq - exact).max() < 0.012, item
        assert ref.samples[:, j].mean() == pytest.approx(float(exact @ np.arange(exact.size)), abs=0.03)
    if top_k == 1:  # P(scanner in a random k-subset of 6) = k / 6; P(pair) = C(4, k-2) / C(6, k)
        assert ref.samples[:, ref.items.index("AT2")].mean() == pytest.approx(14 / 6, abs=0.03)
        pair = sum(math.comb(4, k - 2) / math.comb(6, k) for k in sizes)
        assert ref.samples[:, ref.items.index("AT2+GT450")].mean() == pytest.approx(pair, abs=0.03)


def test_count_reference_table_flags_counts_above_chance():
    subsets = enumerate_subsets(SCANNERS)
    ref = count_reference(subsets, (2, 3, 4, 5), 1, n_perm=5000, seed=0)
    obs = {"GT450": 4, "AT2": 0, "AT2+GT450": 4}
    table = ref.table(obs).rows_by_key("item", named=True)
    gt = table["GT450"][0]
    assert gt["observed"] == 4 and gt["p_value"] == pytest.approx(np.prod([k / 6 for k in (2, 3, 4, 5)]), abs=0.01)
    # in the best subset of all four sizes by chance with p = (2 * 3 * 4 * 5) / 6^4 = 0.093: not beyond chance
    assert gt["chance_upper"] == 4 and not gt["exceeds"]
    assert not table["AT2"][0]["exceeds"] and table["AT2"][0]["p_value"] == 1.0
    assert table["AT2+GT450"][0]["kind"] == "pair" and table["AT2+GT450"][0]["exceeds"]
    assert gt["max_upper"] >= gt["chance_upper"]
    # a partial ablation (few subsets) is handled: only the subsets run can be drawn
    few = [s for s in subsets if len(s) == 2][:2] + [s for s in subsets if len(s) == 3][:1]
    ref_few = count_reference(few, (2, 3, 4), 1, n_perm=1000)
    assert ref_few.samples[:, ref_few.items.index(few[2][0])].min() >= 1  # the only size-3 subset is always drawn
