"""Calibrate the simulated foundation models to published embedding-level robustness.

Targets (the only ones; downstream outcomes such as CoV, AUC or ScanGen's effect never are):
- PathoROB average robustness index (arXiv:2507.17845): Phikon 0.476, UNI 0.598, Gigapath 0.630,
  H-optimus-0 0.812, Virchow 0.815;
- plismbench cross-scanner top-10 retrieval (Owkin): Phikon 0.125, UNI 0.532, Gigapath 0.592,
  H-optimus-0 0.744 (no Virchow value).

Method: the multi-scanner cohort of the "quick" simulator size (seed 0, task cohort reduced to
one slide because no metric reads it) is generated once as scanned patch images (with their
neutral-device renderings). For every model its scanner-sensitivity parameters are searched
(colour_sensitivity, detail_sensitivity, scanner_sensitivity; texture_tuning, hidden_units and gain
stay as they are): a coarse grid GRID, then a local refinement of (colour_sensitivity,
scanner_sensitivity) around the model's best coarse point (REFINE: compass search with halving steps).
Every point is embedded and scored with the project's own metrics: RI on
patches (tissue_class labels, specimen-excluded neighbours, PathoROB k selection) and
plismbench top-10 twin-tile retrieval (scanner pools). A dynamic programme over the models in
published order then picks one scored point per model minimising the squared distance to the
anchors subject to the published order (RI: Phikon < UNI < Gigapath < H-optimus-0 < Virchow;
top-10: Phikon < UNI < Gigapath < H-optimus-0). The chosen values are written into
scangen/simulate/fm_params.json (only the searched values change) and the achieved-vs-published
table into data/calibration/achieved_vs_published.{parquet,json}, together with the same metrics
recomputed under a cheaper "check" protocol that tests/test_calibration.py reproduces.

Scenario "feature" (`--scenario feature`, see scangen/simulate/feature_effects.py): the same anchors,
cohort, metrics, order constraint and DP, but the searched parameters are the per-model strengths of the
feature-space scanner offsets (feature_shift, feature_noise; FEATURE_GRID then FEATURE_REFINE) on top of
each model's embedding of the neutral rendering. Writes scangen/simulate/fm_params_feature.json and
data/calibration/feature/achieved_vs_published.{parquet,json}; the image scenario's files are untouched.
It was run before any ScanGen run on that scenario.

Usage: python scripts/calibrate_simulator.py            (search, write, print)
       python scripts/calibrate_simulator.py --check    (recompute check values, compare, exit 1 on mismatch)
       python scripts/calibrate_simulator.py --scenario feature [--check]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from scangen.atomic import atomic_write_text, atomic_write_with
from scangen.constants import REAL_MODEL_OF, SIMULATED_MODELS
from scangen.metrics.robustness import cross_scanner_retrieval, robustness_index
from scangen.paths import DATA
from scangen.simulate import SimConfig, SimulatedFM, generate_cohort, load_fm_params
from scangen.simulate.feature_effects import FEATURE_PARAMS_PATH, apply_feature_effects, load_feature_params
from scangen.simulate.foundation_models import FM_PARAMS_PATH

CALIBRATION_DIR = DATA / "calibration"
TABLE_STEM = "achieved_vs_published"
ANCHORS: dict[str, dict[str, float | None]] = {
    "phikon-sim": {"ri": 0.476, "top10": 0.125},
    "uni-sim": {"ri": 0.598, "top10": 0.532},
    "gigapath-sim": {"ri": 0.630, "top10": 0.592},
    "hoptimus0-sim": {"ri": 0.812, "top10": 0.744},
    "virchow-sim": {"ri": 0.815, "top10": None},
}
"""Published anchors, listed in increasing published RI (the order the calibration keeps)."""
SOURCES = {"ri": "PathoROB average robustness index", "top10": "plismbench cross-scanner top-10 accuracy"}
GRID = {"colour_sensitivity": (0.25, 0.5, 1.0, 2.0), "detail_sensitivity": (0.0, 3.0),
        "scanner_sensitivity": (0.0, 1.0, 2.0)}
REFINE = {"steps": {"colour_sensitivity": 0.4, "scanner_sensitivity": 0.4}, "max_evals": 16, "min_step": 0.05,
          "bounds": {"colour_sensitivity": (0.0, 4.0), "scanner_sensitivity": (0.0, 10.0)}}
"""Local refinement: try the 8 neighbours (+-step and diagonals: RI and top-10 trade off along a diagonal)
of the best point, move to any improvement, else halve the steps; stop at max_evals or min_step."""
FEATURE_DIR = CALIBRATION_DIR / "feature"
FEATURE_GRID = {"feature_shift": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
                "feature_noise": (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)}
FEATURE_REFINE = {"steps": {"feature_shift": 0.04, "feature_noise": 0.25}, "max_evals": 12, "min_step": 0.01,
                  "bounds": {"feature_shift": (0.0, 8.0), "feature_noise": (0.0, 8.0)}}
"""Scenario "feature": coarse grid and compass refinement of the two offset strengths."""


@dataclass(frozen=True)
class Protocol:
    """What is simulated and how the metrics are sampled (all fixed; seeds included)."""

    name: str
    size: str
    seed: int
    n_ms_specimens: int | None
    patches_per_slide: int
    max_queries: int


CALIBRATION = Protocol("calibration", "quick", 0, None, 8, 128)
CHECK = Protocol("check", "quick", 1, 16, 6, 64)


@dataclass
class Prepared:
    """Scanned images of the multi-scanner 40x slides and the labels the metrics need."""

    images: np.ndarray
    neutral: np.ndarray
    tissue: np.ndarray
    scanner: np.ndarray
    specimen: np.ndarray
    reg_images: np.ndarray
    reg_neutral: np.ndarray
    reg_tile: np.ndarray
    reg_scanner: np.ndarray
    reg_specimen: np.ndarray


def prepare(p: Protocol) -> Prepared:
    """Generate the cohort of protocol `p` and keep the rows the metrics read."""
    overrides = {"n_task_slides": 1}
    if p.n_ms_specimens is not None:
        overrides["n_ms_specimens"] = p.n_ms_specimens
    coh = generate_cohort(SimConfig.from_size(p.size, **overrides), seed=p.seed)
    sl = coh.slides
    ms = ((sl["cohort"] == "multiscanner") & (sl["magnification"] == 40)).to_numpy()
    rng = np.random.default_rng(p.seed)
    rows = []
    for i in np.flatnonzero(ms):
        bag = np.arange(coh.offsets[i], coh.offsets[i + 1])
        rows.append(np.sort(rng.choice(bag, size=min(p.patches_per_slide, bag.size), replace=False)))
    rows = np.concatenate(rows)
    slide_of = np.repeat(np.arange(sl.height), np.diff(coh.offsets))
    position = {s: i for i, s in enumerate(sl["slide_id"].to_list())}
    reg_slide = np.array([position[s] for s in coh.reg_slide_ids])
    reg_slide = np.repeat(reg_slide, np.diff(coh.reg_offsets))
    keep = ms[reg_slide]
    scanner, specimen = sl["scanner"].to_numpy().astype(str), sl["specimen_id"].to_numpy().astype(str)
    return Prepared(
        images=coh.images[rows], neutral=coh.neutral_images[rows], tissue=coh.tissue_class[rows],
        scanner=scanner[slide_of[rows]], specimen=specimen[slide_of[rows]],
        reg_images=coh.reg_images[keep], reg_neutral=coh.reg_neutral_images[keep], reg_tile=coh.reg_tile_id[keep],
        reg_scanner=scanner[reg_slide[keep]], reg_specimen=specimen[reg_slide[keep]],
    )


def evaluate(data: Prepared, p: Protocol, model: str, params: dict[str, float]) -> dict[str, float]:
    """RI (patches) and cross-scanner retrieval (registered tiles) of one model's parameters."""
    fm = SimulatedFM(model, SIMULATED_MODELS[model], params)
    ri = robustness_index(fm.embed(data.images, data.neutral), data.tissue, data.scanner, data.specimen)
    ret = cross_scanner_retrieval(fm.embed(data.reg_images, data.reg_neutral), data.reg_tile, data.reg_scanner,
                                  data.reg_specimen, max_queries=p.max_queries, seed=p.seed)
    return {"ri": ri.value, "ri_k": float(ri.k), "top1": ret.mean_top_k[1], "top10": ret.mean_top_k[10],
            "cosine": ret.mean_cosine}


def _cost(model: str, m: dict[str, float]) -> float:
    a = ANCHORS[model]
    return sum((m[key] - a[key]) ** 2 for key in ("ri", "top10") if a[key] is not None)


def _ordered(prev: dict, cur: dict, prev_model: str, model: str) -> bool:
    if not cur["ri"] > prev["ri"]:
        return False
    both = ANCHORS[prev_model]["top10"] is not None and ANCHORS[model]["top10"] is not None
    return not both or cur["top10"] > prev["top10"]


def choose(grid: dict[str, list[tuple[dict, dict]]]) -> tuple[dict[str, tuple[dict, dict]], bool]:
    """One grid point per model: least total squared gap subject to the published order (DP)."""
    models = list(ANCHORS)
    best = [{i: (_cost(models[0], g[1]), [i]) for i, g in enumerate(grid[models[0]])}]
    for prev_model, model in itertools.pairwise(models):
        layer = {}
        for j, (_, mj) in enumerate(grid[model]):
            options = [(c + _cost(model, mj), path + [j]) for i, (c, path) in best[-1].items()
                       if _ordered(grid[prev_model][i][1], mj, prev_model, model)]
            if options:
                layer[j] = min(options, key=lambda o: o[0])
        best.append(layer)
    if best[-1]:
        _, path = min(best[-1].values(), key=lambda o: o[0])
        return {m: grid[m][i] for m, i in zip(models, path)}, True
    return {m: min(grid[m], key=lambda g: _cost(m, g[1])) for m in models}, False


def refine(data: Prepared, model: str, start: tuple[dict, dict], settings: dict | None = None,
           score=None) -> list[tuple[dict, dict]]:
    """Compass search on `settings`' parameters (default REFINE, scored by `evaluate` under CALIBRATION)
    from `start`; returns every newly scored point."""
    REFINE_ = REFINE if settings is None else settings
    score = score or (lambda params: evaluate(data, CALIBRATION, model, params))
    steps = dict(REFINE_["steps"])
    best, seen, scored = start, {json.dumps(start[0], sort_keys=True)}, []
    while len(scored) < REFINE_["max_evals"] and max(steps.values()) >= REFINE_["min_step"]:
        moved = False
        for signs in itertools.product((0.0, 1.0, -1.0), repeat=len(steps)):
            if not any(signs):
                continue
            params = dict(best[0], **{k: round(min(max(best[0][k] + sg * steps[k], REFINE_["bounds"][k][0]),
                                                    REFINE_["bounds"][k][1]), 4) for k, sg in zip(steps, signs)})
            tag = json.dumps(params, sort_keys=True)
            if tag in seen or len(scored) >= REFINE_["max_evals"]:
                continue
            seen.add(tag)
            scored.append((params, score(params)))
            if _cost(model, scored[-1][1]) < _cost(model, best[1]):
                best, moved = scored[-1], True
        if not moved:
            steps = {k: v / 2 for k, v in steps.items()}
    return scored


def _write_model_json(path: Path, doc: str | None, rows: dict[str, dict[str, float]]) -> None:
    """A params JSON with the doc string first and one line per simulated model (diff-friendly)."""
    lines = ["{"] + ([f'  "_doc": {json.dumps(doc)},'] if doc is not None else [])
    for i, model in enumerate(SIMULATED_MODELS):
        body = ", ".join(f'"{k}": {round(float(v), 6)}' for k, v in rows[model].items())
        lines.append(f'  "{model}": {{{body}}}' + ("," if i < len(SIMULATED_MODELS) - 1 else ""))
    atomic_write_text(Path(path), "\n".join(lines + ["}"]) + "\n")


def write_params(chosen: dict[str, dict[str, float]], path: Path = FM_PARAMS_PATH) -> None:
    """Rewrite fm_params.json keeping its layout (doc string first, one line per model)."""
    _write_model_json(path, json.loads(Path(path).read_text()).get("_doc"), chosen)


def achieved_table(achieved: dict[str, dict[str, float]], protocol: Protocol) -> pl.DataFrame:
    """Long table: model, metric, published, achieved, gap, protocol."""
    rows = []
    for model, anchors in ANCHORS.items():
        for metric in ("ri", "top10"):
            pub = anchors[metric]
            got = achieved[model][metric]
            rows.append({"model": model, "real_model": REAL_MODEL_OF[model], "metric": metric,
                         "source": SOURCES[metric], "published": pub, "achieved": got,
                         "gap": None if pub is None else got - pub, "protocol": protocol.name})
    return pl.DataFrame(rows)


def order_holds(achieved: dict[str, dict[str, float]]) -> bool:
    """Whether achieved values keep the published order on both metrics."""
    models = list(ANCHORS)
    return all(_ordered(achieved[a], achieved[b], a, b) for a, b in itertools.pairwise(models))


def compute_check(params: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Metrics of `params` under the cheap CHECK protocol (what the test recomputes)."""
    data = prepare(CHECK)
    return {m: evaluate(data, CHECK, m, params[m]) for m in ANCHORS}


def run_search(out_dir: Path = CALIBRATION_DIR, params_path: Path = FM_PARAMS_PATH) -> dict:
    """Grid search, order-constrained choice, write fm_params.json and the tables."""
    t0 = time.time()
    base = load_fm_params(params_path)
    data = prepare(CALIBRATION)
    print(f"cohort prepared in {time.time() - t0:.0f} s: {len(data.images)} patches, "
          f"{len(data.reg_images)} registered tiles", flush=True)
    grid: dict[str, list[tuple[dict, dict]]] = {}
    for model in ANCHORS:
        grid[model] = []
        for values in itertools.product(*GRID.values()):
            params = dict(base[model], **dict(zip(GRID, values)))
            grid[model].append((params, evaluate(data, CALIBRATION, model, params)))
        grid[model] += refine(data, model, min(grid[model], key=lambda g: _cost(model, g[1])))
        print(f"{model}: {len(grid[model])} points scored ({time.time() - t0:.0f} s)", flush=True)
    chosen, constrained = choose(grid)
    params = {m: chosen[m][0] for m in SIMULATED_MODELS}
    achieved = {m: chosen[m][1] for m in ANCHORS}
    write_params(params, params_path)
    return write_calibration(out_dir, params, achieved, compute_check(params), constrained, t0, {
        "anchors": ANCHORS, "grid": {k: list(v) for k, v in GRID.items()}, "refine": REFINE,
        "grid_scores": {m: [{**{k: g[0][k] for k in GRID}, **g[1], "cost": _cost(m, g[1])} for g in grid[m]] for m in grid}})


def write_calibration(out_dir: Path, params: dict, achieved: dict, check: dict, constrained: bool, t0: float,
                      search: dict) -> dict:
    """Write the achieved-vs-published table (Parquet) and the summary JSON of one search; return it.

    `search` holds what differs between scenarios (scenario name, grid, refine settings, grid scores);
    the gaps, the order check, the protocols and the timing are common to both."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pl.concat([achieved_table(achieved, CALIBRATION), achieved_table(check, CHECK)])
    atomic_write_with(out_dir / f"{TABLE_STEM}.parquet", table.write_parquet)
    gaps = table.filter(pl.col("protocol") == CALIBRATION.name)["gap"].drop_nulls().abs()
    grid_scores = search.pop("grid_scores")
    summary = {
        **search, "protocols": {p.name: asdict(p) for p in (CALIBRATION, CHECK)},
        "order_constrained_choice_found": constrained, "order_holds": order_holds(achieved),
        "max_abs_gap": float(gaps.max()), "mean_abs_gap": float(gaps.mean()),
        "params": params, "achieved": achieved, "check": check, "grid_scores": grid_scores,
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(out_dir / f"{TABLE_STEM}.json", json.dumps(summary, indent=2) + "\n")
    return summary


class FeatureScorer:
    """Metrics of feature-scenario strengths for one model: the neutral embeddings are computed once."""

    def __init__(self, data: Prepared, p: Protocol, model: str) -> None:
        fm = SimulatedFM(model, SIMULATED_MODELS[model], load_fm_params()[model])
        self.data, self.p, self.model = data, p, model
        self.base = fm.embed(data.neutral, data.neutral)
        self.reg_base = fm.embed(data.reg_neutral, data.reg_neutral)
        self.keys = np.char.add(np.char.add(data.specimen.astype(str), "|"), data.scanner.astype(str))
        self.reg_keys = np.char.add(np.char.add(data.reg_specimen.astype(str), "|"), data.reg_scanner.astype(str))
        self.jitter = SimConfig.from_size(p.size).scan_jitter

    def __call__(self, params: dict[str, float]) -> dict[str, float]:
        shift, noise = params["feature_shift"], params["feature_noise"]
        rng = np.random.default_rng(self.p.seed)
        emb = apply_feature_effects(self.base, self.model, self.data.scanner, self.keys, shift, noise, self.jitter, rng)
        reg = apply_feature_effects(self.reg_base, self.model, self.data.reg_scanner, self.reg_keys, shift, noise,
                                    self.jitter, rng)
        ri = robustness_index(emb, self.data.tissue, self.data.scanner, self.data.specimen)
        ret = cross_scanner_retrieval(reg, self.data.reg_tile, self.data.reg_scanner, self.data.reg_specimen,
                                      max_queries=self.p.max_queries, seed=self.p.seed)
        return {"ri": ri.value, "ri_k": float(ri.k), "top1": ret.mean_top_k[1], "top10": ret.mean_top_k[10],
                "cosine": ret.mean_cosine}


def write_feature_params(chosen: dict[str, dict[str, float]], path: Path = FEATURE_PARAMS_PATH) -> None:
    """Write fm_params_feature.json: a doc string, then one line per model."""
    doc = ("Feature-space scanner offsets of the 'feature' scenario (scangen/simulate/feature_effects.py), "
           "written by scripts/calibrate_simulator.py --scenario feature: e = f(neutral) + feature_shift * "
           "(scanner offset + jitter) + feature_noise * N(0, I).")
    _write_model_json(path, doc, {m: {k: chosen[m][k] for k in FEATURE_GRID} for m in SIMULATED_MODELS})


def compute_check_feature(params: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Feature-scenario metrics of `params` under the CHECK protocol (what the test recomputes)."""
    data = prepare(CHECK)
    return {m: FeatureScorer(data, CHECK, m)(params[m]) for m in ANCHORS}


def run_feature_search(out_dir: Path = FEATURE_DIR, params_path: Path = FEATURE_PARAMS_PATH) -> dict:
    """Scenario "feature": grid + compass search of the offset strengths, order-constrained DP, write."""
    t0 = time.time()
    data = prepare(CALIBRATION)
    grid: dict[str, list[tuple[dict, dict]]] = {}
    for model in ANCHORS:
        scorer = FeatureScorer(data, CALIBRATION, model)
        grid[model] = [(dict(zip(FEATURE_GRID, v)), scorer(dict(zip(FEATURE_GRID, v))))
                       for v in itertools.product(*FEATURE_GRID.values())]
        start = min(grid[model], key=lambda g: _cost(model, g[1]))
        grid[model] += refine(data, model, start, FEATURE_REFINE, scorer)
        print(f"{model}: {len(grid[model])} points scored ({time.time() - t0:.0f} s)", flush=True)
    chosen, constrained = choose(grid)
    params = {m: chosen[m][0] for m in SIMULATED_MODELS}
    achieved = {m: chosen[m][1] for m in ANCHORS}
    write_feature_params(params, params_path)
    return write_calibration(out_dir, params, achieved, compute_check_feature(params), constrained, t0, {
        "scenario": "feature", "anchors": ANCHORS, "grid": {k: list(v) for k, v in FEATURE_GRID.items()},
        "refine": FEATURE_REFINE,
        "grid_scores": {m: [{**g[0], **g[1], "cost": _cost(m, g[1])} for g in grid[m]] for m in grid}})


def print_summary(summary: dict) -> None:
    """Achieved beside published, per model and metric."""
    print(f"{'model':15s} {'metric':6s} {'published':>9s} {'achieved':>9s} {'gap':>7s}")
    for model, anchors in ANCHORS.items():
        for metric in ("ri", "top10"):
            pub, got = anchors[metric], summary["achieved"][model][metric]
            gap = "" if pub is None else f"{got - pub:+.3f}"
            print(f"{model:15s} {metric:6s} {'-' if pub is None else f'{pub:.3f}':>9s} {got:9.3f} {gap:>7s}")
    print(f"order holds: {summary['order_holds']}; max |gap| {summary['max_abs_gap']:.3f}, "
          f"mean |gap| {summary['mean_abs_gap']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="recompute the check protocol and compare")
    ap.add_argument("--scenario", choices=("image", "feature"), default="image",
                    help="which data-generating scenario to calibrate (default: image, the original simulator)")
    ap.add_argument("--tolerance", type=float, default=0.02, help="allowed |difference| in --check")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 is fastest for these many small products on a busy machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    feature = args.scenario == "feature"
    if args.check:
        stored = json.loads(((FEATURE_DIR if feature else CALIBRATION_DIR) / f"{TABLE_STEM}.json").read_text())
        fresh = compute_check_feature(load_feature_params()) if feature else compute_check(load_fm_params())
        bad = [(m, k, stored["check"][m][k], v) for m in fresh for k, v in fresh[m].items()
               if abs(v - stored["check"][m][k]) > args.tolerance]
        for m, k, old, new in bad:
            print(f"MISMATCH {m} {k}: stored {old:.4f}, recomputed {new:.4f}")
        print("check passed" if not bad else f"{len(bad)} mismatches")
        return 1 if bad else 0
    summary = run_feature_search() if feature else run_search()
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
