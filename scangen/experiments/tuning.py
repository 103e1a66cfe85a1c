"""ScanGen's settings chosen on validation only, by a rule written down before any run (notebook 03).

Search (staged coordinate search, affordable on 2 cores): start from the spec's defaults `START`; each
stage varies one group of settings around the current choice, trains every candidate with the tuning
seeds, and keeps the candidate the rule picks; the next stage starts from it. Stages, in order:
1. item level x distance: scangen_level in {slide, bag, patch} x scangen_distance in {cosine (paper),
   cosine_norm (length-aware)}, jointly (they interact: the level decides which vector's length the
   length-aware distance sees);
2. margin m over the range of cosine distances observed between slide-mean FM embeddings of the
   ScanGen-train split (`observed_distances`, never val or test): the median distance of repulsion pairs
   (same scanner, different specimens), the median of attraction pairs (same specimen, different
   scanners) and the larger 90th percentile (`margin_candidates`), plus the current value;
3. alpha in {0.25, 0.5, 0.75}; 4. lambda in {0.3, 1, 3}; 5. per-kind pair normalisation off / on.
A stage whose TrainConfig field does not exist in the trainer is skipped and logged.

Rule (`RULE`), on validation metrics of the selected model of each run (40x multiscanner WSIs of the
"val" split; `val_metrics`), averaged over the tuning seeds:
- admissible: val AUC >= the baseline's val AUC (same seeds) - AUC_TOLERANCE;
- among admissible candidates, the lowest val median CoV (the paper's CoV on logits without its heavy
  tail); ties within 1e-9 go to the higher val AUC, then to the earlier candidate in the declared order
  (the current setting first);
- no admissible candidate: the stage keeps the current setting.
Test predictions are never read: `val_metrics` filters the validation split before anything else, and a
test corrupts the test rows of every run and checks that every choice stays the same.

The choice is written to `results/<set>/scangen_choice.json` (`write_choice`); `read_choice` returns the
TrainConfig overrides that Table 1, the ablation and Table 2 apply to their ScanGen runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from scangen.experiments.results import read_json, write_json
from scangen.metrics import median_scanner_cov, roc_auc, scanner_cov, within_specimen_sd
from scangen.metrics.scanner_variance import scanner_variance
from scangen.metrics.summary import evaluation_rows
from scangen.splits import specimen_splits
from scangen.train import TrainConfig

CHOICE_NAME = "scangen_choice"
AUC_TOLERANCE = 0.02
START: dict[str, Any] = {"scangen_level": "slide", "scangen_distance": "cosine", "scangen_pair_norm": False,
                         "margin": 0.75, "alpha": 0.5, "lam": 1.0}
"""The spec's defaults, where the search starts."""
STAGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("item level and distance", {"scangen_level": ["slide", "bag", "patch"], "scangen_distance": ["cosine", "cosine_norm"]}),
    ("margin", {"margin": "observed"}),
    ("alpha", {"alpha": [0.25, 0.5, 0.75]}),
    ("lambda", {"lam": [0.3, 1.0, 3.0]}),
    ("pair normalisation", {"scangen_pair_norm": [False, True]}),
)
"""Declared search: (stage name, {field: candidate values, or "observed" for the margin})."""
RULE = (f"On the validation split only (40x WSIs of held-out 'val' specimens), averaged over the tuning seeds: "
        f"a candidate is admissible when its val AUC is at least the baseline's val AUC minus {AUC_TOLERANCE}; "
        "among admissible candidates the lowest val median CoV wins (ties: higher val AUC, then declared order, "
        "current setting first); with no admissible candidate the stage keeps the current setting.")
VAL_METRICS: tuple[str, ...] = ("val_auc", "val_median_cov", "val_cov", "val_within_sd", "val_share")


def val_metrics(pred: pl.DataFrame) -> dict[str, float]:
    """Validation metrics of one run: AUC, median and mean CoV, within-specimen SD and scanner share of
    the logits of the 40x multiscanner WSIs of split "val". Reads no other split."""
    val = evaluation_rows(pred, "val")
    if val.height == 0:
        raise ValueError("predictions: no 40x multiscanner rows in split 'val' to tune on")
    logit = val["logit"].to_numpy().astype(np.float64)
    spec = val["specimen_id"].to_numpy()
    return {"val_auc": roc_auc(val["egfr"].to_numpy(), logit), "val_median_cov": median_scanner_cov(logit, spec),
            "val_cov": scanner_cov(logit, spec), "val_within_sd": within_specimen_sd(logit, spec),
            "val_share": scanner_variance(logit, spec, val["scanner"].to_numpy()).scanner_share}


def mean_val_metrics(preds: Sequence[pl.DataFrame]) -> dict[str, float]:
    """`val_metrics` averaged over runs (seeds)."""
    per_run = [val_metrics(p) for p in preds]
    return {k: float(np.mean([m[k] for m in per_run])) for k in VAL_METRICS}


def observed_distances(slides: pl.DataFrame, means: np.ndarray, split_seed: int = 0,
                       fractions: Sequence[float] | None = None) -> dict[str, float]:
    """Cosine distances of slide-mean embeddings `means` (n, D) (row i = slide i of `slides`) over the
    40x multiscanner WSIs of the ScanGen-train split: percentiles of same-specimen cross-scanner pairs
    (`pos_*`) and same-scanner cross-specimen pairs (`neg_*`). Validation and test WSIs are not read."""
    kw = {} if fractions is None else {"fractions": tuple(fractions)}
    split = specimen_splits(slides, split_seed, **kw)
    keep = ((split["cohort"] == "multiscanner") & (split["split"] == "scangen_train")
            & (split["magnification"] == 40)).to_numpy()
    if keep.sum() < 4:
        raise ValueError("slides: fewer than four 40x ScanGen-train WSIs to measure distances on")
    z = np.asarray(means, dtype=np.float64)[keep]
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    d = 1.0 - z @ z.T
    spec, scan = split["specimen_id"].to_numpy()[keep], split["scanner"].to_numpy()[keep]
    upper = np.triu(np.ones_like(d, dtype=bool), 1)
    pos = d[upper & (spec[:, None] == spec[None, :]) & (scan[:, None] != scan[None, :])]
    neg = d[upper & (spec[:, None] != spec[None, :]) & (scan[:, None] == scan[None, :])]
    out = {}
    for name, arr in (("pos", pos), ("neg", neg)):
        if arr.size == 0:
            raise ValueError(f"slides: no {name} pairs among the ScanGen-train WSIs")
        for q in (10, 50, 90):
            out[f"{name}_q{q}"] = float(np.percentile(arr, q))
    return out


def margin_candidates(observed: Mapping[str, float]) -> list[float]:
    """Margins spanning the observed distances: the median repulsion-pair distance (the hinge is active
    for half the pairs), the median attraction-pair distance, and the larger of the two 90th percentiles
    (active for nearly all pairs); rounded to 3 decimals, within TrainConfig's (0, 2]."""
    raw = (observed["neg_q50"], observed["pos_q50"], max(observed["pos_q90"], observed["neg_q90"]))
    return sorted({min(max(round(float(v), 3), 0.001), 2.0) for v in raw})


def choose(candidates: Sequence[Mapping[str, Any]], baseline_val_auc: float,
           tolerance: float = AUC_TOLERANCE) -> int:
    """Index of the candidate the rule picks (see RULE); `candidates[i]` holds mean val metrics and
    index 0 is the current setting (kept when none is admissible)."""
    if not candidates:
        raise ValueError("candidates: expected at least the current setting")
    ok = [i for i, c in enumerate(candidates) if c["val_auc"] >= baseline_val_auc - tolerance]
    if not ok:
        return 0
    best = min(c["val_median_cov"] for i, c in enumerate(candidates) if i in ok)
    tied = [i for i in ok if candidates[i]["val_median_cov"] <= best + 1e-9]
    return max(tied, key=lambda i: (candidates[i]["val_auc"], -i))


def _stage_settings(current: dict[str, Any], grid: Mapping[str, Any], margins: Sequence[float]) -> list[dict[str, Any]]:
    """Candidate settings of one stage, current setting first, no duplicates."""
    names = list(grid)
    values = [list(margins) if grid[n] == "observed" else list(grid[n]) for n in names]
    out = [dict(current)]
    for combo in product(*values):
        cand = {**current, **dict(zip(names, combo))}
        if cand not in out:
            out.append(cand)
    return out


def tune(evaluate: Callable[[dict[str, Any]], Sequence[pl.DataFrame]], baseline: Sequence[pl.DataFrame],
         margins: Sequence[float], *, start: Mapping[str, Any] = START,
         stages: Sequence[tuple[str, Mapping[str, Any]]] = STAGES, known_fields: set[str] | None = None,
         tolerance: float = AUC_TOLERANCE) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Run the staged search. `evaluate(setting)` returns the predictions of the tuning seeds' runs of a
    ScanGen setting; `baseline` the baseline's runs on the same seeds. Returns (log: one row per stage
    and candidate with its mean val metrics and `chosen`, choice: the final setting, the rule, the
    baseline's val metrics and the skipped stages)."""
    known = {f.name for f in fields(TrainConfig)} if known_fields is None else set(known_fields)
    base = mean_val_metrics(baseline)
    current = {k: v for k, v in start.items() if k in known}
    rows, skipped, seen = [], [], {}
    for name, grid in stages:
        missing = [f for f in grid if f not in known]
        if missing:
            skipped.append({"stage": name, "reason": f"TrainConfig has no field {missing}"})
            continue
        settings = _stage_settings(current, grid, margins)
        metrics = []
        for s in settings:
            key = tuple(sorted(s.items()))
            if key not in seen:
                seen[key] = mean_val_metrics(evaluate(dict(s)))
            metrics.append(seen[key])
        pick = choose(metrics, base["val_auc"], tolerance)
        for i, (s, m) in enumerate(zip(settings, metrics)):
            rows.append({"stage": name, "candidate": i, "setting": _describe(s, grid), **m,
                         "admissible": m["val_auc"] >= base["val_auc"] - tolerance, "chosen": i == pick})
        current = settings[pick]
    log = pl.DataFrame(rows) if rows else pl.DataFrame(schema={"stage": pl.String})
    choice = {"overrides": current, "rule": RULE, "auc_tolerance": tolerance, "baseline_val": base,
              "chosen_val": seen.get(tuple(sorted(current.items())), {}), "skipped_stages": skipped,
              "n_settings_trained": len(seen)}
    return log, choice


def _describe(setting: Mapping[str, Any], grid: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={setting[k]}" for k in grid)


def run_tuning(session, fm: str, seeds: Sequence[int], *, stages: Sequence[tuple[str, Mapping[str, Any]]] = STAGES,
               start: Mapping[str, Any] = START, tolerance: float = AUC_TOLERANCE) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`tune` on `session`'s store for one FM: margins from `observed_distances` of its bags, every
    candidate and the baseline trained (or read from the run cache) for each of `seeds`."""
    if not seeds:
        raise ValueError("seeds: expected at least one tuning seed")
    bags = session.bags(fm)
    base_cfg = session.config(fm=fm, use_scangen=False)
    observed = observed_distances(bags.slides, bags.mean_embeddings(), base_cfg.split_seed, base_cfg.split_fractions)

    def predictions(configs: list[TrainConfig]) -> list[pl.DataFrame]:
        if hasattr(session, "records"):
            return [r.predictions for r in session.records(configs)]
        return [session.run(c)[0] for c in configs]

    def evaluate(setting: dict[str, Any]) -> list[pl.DataFrame]:
        return predictions([session.config(fm=fm, use_scangen=True, seed=int(s), **setting) for s in seeds])

    baseline = predictions([base_cfg.replace(seed=int(s)) for s in seeds])
    log, choice = tune(evaluate, baseline, margin_candidates(observed), start=start, stages=stages, tolerance=tolerance)
    choice.update(fm=fm, seeds=[int(s) for s in seeds], observed_distances=observed,
                  margins=margin_candidates(observed))
    return log.with_columns(pl.lit(fm).alias("fm")), choice


def write_choice(results_dir: Path, choice: Mapping[str, Any], *, simulated: bool) -> Path:
    """Write `results_dir/scangen_choice.json` (atomic, with the `simulated` flag)."""
    if "overrides" not in choice:
        raise ValueError("choice: expected an 'overrides' mapping of TrainConfig fields")
    return write_json(Path(results_dir), CHOICE_NAME, choice, simulated=simulated)


def read_choice(results_dir: Path) -> dict[str, Any]:
    """TrainConfig field overrides chosen on validation (from scangen_choice.json); a clear error names
    the file when notebook 03 has not run, or a field TrainConfig does not know."""
    doc = read_json(Path(results_dir), CHOICE_NAME)
    overrides = dict(doc.get("overrides") or {})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{Path(results_dir) / (CHOICE_NAME + '.json')}: unknown TrainConfig fields {unknown}")
    return overrides


def log_display(log: pl.DataFrame) -> pl.DataFrame:
    """The tuning log as text: stage, candidate setting, its mean validation metrics, whether it was
    admissible (AUC rule) and which candidate each stage chose."""
    from scangen.tables import fmt

    return pl.DataFrame([{
        "stage": r["stage"], "setting": r["setting"], "val AUC": fmt(r["val_auc"]),
        "val median CoV": fmt(r["val_median_cov"]), "val CoV": fmt(r["val_cov"]),
        "val within-specimen SD": fmt(r["val_within_sd"]), "val share": fmt(r["val_share"]),
        "admissible": "yes" if r["admissible"] else "no", "chosen": "chosen" if r["chosen"] else ""}
        for r in log.iter_rows(named=True)])


def tuning_chart(log: pl.DataFrame, baseline_val: Mapping[str, float], *, simulated: bool = True):
    """Validation median CoV of every candidate, one panel per stage; filled = admissible, large = chosen;
    the dashed line is the baseline's validation median CoV."""
    import altair as alt

    df = log.with_columns(pl.when(pl.col("chosen")).then(pl.lit("chosen")).otherwise(pl.lit("not chosen"))
                          .alias("choice")).to_pandas()
    points = alt.Chart().mark_point(filled=True).encode(
        x=alt.X("setting:N", title=None, sort=None, axis=alt.Axis(labelAngle=-40, labelLimit=220)),
        y=alt.Y("val_median_cov:Q", title="validation median CoV"),
        color=alt.Color("admissible:N", title="AUC rule met"),
        size=alt.Size("choice:N", scale=alt.Scale(domain=["chosen", "not chosen"], range=[220, 60]), title=None),
        tooltip=["stage", "setting", "val_auc", "val_median_cov", "val_within_sd", "val_share"])
    base = alt.Chart().mark_rule(strokeDash=[4, 3]).encode(y="y:Q").transform_calculate(
        y=str(float(baseline_val["val_median_cov"])))
    title = "Validation-only tuning of ScanGen" + (" (simulated cohort)" if simulated else "")
    return (alt.layer(points, base, data=df).properties(width=180, height=160)
            .facet(column=alt.Column("stage:N", title=None, sort=None)).resolve_scale(x="independent")
            .properties(title=title))
