"""Grid throughput: runs per minute trained as one ensemble vs the same configs one by one, and what the
full parameter set's grid would take.

Builds a Table-1-like grid on one FM (baseline and ScanGen x `--seeds` seeds, the training settings of
`--params`: same steps, evaluation schedule and early stopping in both modes) and trains it twice on
the same bags, taking turns (`--repeats` rounds, order alternated, so load bursts from other processes
fall on both): once as one unit of work of the grid (`scangen.experiments.grid.train_group`, i.e.
`run_ensemble` over all configs) and once config by config (`train_group` per config, i.e.
`run_record`). Prints runs/minute of each, the ratio (issue target: >= 2x on 2 CPU threads, >= 20x on
a GPU), and the largest |logit| difference between a member and the same config trained alone.

Then the estimate for the full set: the measured seconds per run (ensemble and one by one) times the
number of runs in params/full.yml's grid (`full_grid_runs`: tuning, Table 1 in every scenario, ablation,
MIL heads and harmonisation, with the runs the notebooks share counted once), on one device and on N workers
(perfect spreading of groups; a lower bound). The per-run cost is measured on the cohort given
(`--size quick` by default): with `--params full` the training settings are the full set's, but the
paper-size cohort has more slides to evaluate, so the estimate is a lower bound; say so when quoting.

`--end-to-end` instead runs the notebooks of `--params` through the pipeline (fresh root and run
cache, optionally on `--scheduler`) and prints its wall time per notebook.

Usage: python benchmarks/bench_grid.py [--store DIR | --size quick] [--fm uni-sim] [--seeds 4]
       [--params quick] [--threads 2] [--device auto] [--repeats 1] [--workers 1 4 16]
       python benchmarks/bench_grid.py --end-to-end --params full --size paper [--scheduler tcp://host:8786]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from common import param_set_training, sync  # benchmarks/ is the script's folder, on sys.path
from scangen.experiments.ablation import enumerate_subsets
from scangen.experiments.grid import GroupTask, train_group
from scangen.experiments.mil_table import MIL_HEADS
from scangen.paths import PARAMS
from scangen.store import load_bags
from scangen.train import TrainConfig
from scangen.train.device import resolve_device



def overrides(notebooks: dict, *topics: str) -> dict:
    """A notebook's overrides found by topic (`table1` matches `04_table1` and the older `03_table1`)."""
    for key, value in notebooks.items():
        if key.split("_", 1)[-1] in topics:
            return value or {}
    return {}


def _tuning_settings(stages: list[dict] | None) -> int:
    """ScanGen settings notebook 03 trains: every candidate of each stage, the current setting (carried
    over from the stage before) counted once; the margin stage has three observed-distance candidates."""
    from scangen.experiments.tuning import STAGES

    grids = [s["grid"] for s in stages] if stages else [g for _, g in STAGES]
    default = TrainConfig(use_scangen=True)
    n = 0
    for i, grid in enumerate(grids):
        combos = 1
        for field, values in grid.items():
            combos *= 3 if values == "observed" else len(values)
        current_inside = all(values != "observed" and getattr(default, field) in values for field, values in grid.items())
        n += combos - (1 if current_inside and i > 0 else 0)
    return n


def full_grid_runs(name: str = "full") -> dict[str, int]:
    """Distinct training runs per notebook of params/<name>.yml (03 tuning, 04 Table 1 in every scenario,
    05 ablation, 06 MIL heads, 07 harmonisation), each counted once where notebooks share runs (the
    run cache serves them: 04 reuses 03's baseline and chosen runs of the tuning FM on split 0, 05 its
    all-scanner subset and baseline from 04, 06 the GAP runs, 07 its 'none' and 'scangen' runs)."""
    doc = yaml.safe_load((PARAMS / f"{name}.yml").read_text())
    p, nb = doc["parameters"], doc.get("notebooks") or {}
    fms, seeds, splits = list(p["fms"]), list(p["seeds"]), len(p.get("split_seeds") or [0])
    tune = overrides(nb, "tuning")
    tune_seeds = len(tune.get("seeds", seeds))
    out = {"tuning": tune_seeds * (1 + _tuning_settings(tune.get("stages")))}
    t1 = overrides(nb, "table1")
    scenarios = t1.get("scenarios", p.get("scenarios", ["image"]))
    other_fms = len(t1.get("scenario_fms") or fms)
    out["table1"] = len(seeds) * splits * 2 * (len(fms) + other_fms * (len(scenarios) - 1)) - 2 * min(tune_seeds, len(seeds))
    abl = overrides(nb, "ablation")
    n_sub = abl.get("max_subsets") or len(enumerate_subsets())
    out["ablation"] = len(abl.get("scenarios", ["image"])) * len(seeds) * splits * (n_sub - 1)
    mil = overrides(nb, "mil_heads", "mil_extensions")
    n_heads = len([h for h in mil.get("heads", MIL_HEADS) if h != "gap"])
    out["mil_heads"] = len(mil.get("scenarios", ["image"])) * n_heads * 2 * len(seeds) * splits
    harm = overrides(nb, "harmonisation")
    from scangen.experiments.harmonisation import METHODS

    new_methods = len([m for m in harm.get("methods", METHODS) if m not in ("none", "scangen")])
    out["harmonisation"] = len(harm.get("fms", fms)) * new_methods * len(seeds) * splits
    out["total"] = sum(out.values())
    return out


def make_store(size: str, fms: list[str]) -> Path:
    from scangen.simulate import simulate_cohort

    t0 = time.perf_counter()
    store = simulate_cohort(Path(tempfile.mkdtemp(prefix="bench_grid_")) / f"{size}-seed0", size=size, seed=0,
                            models=fms, registered_tiles=False)
    print(f"simulated the {size} cohort ({', '.join(fms)}) in {time.perf_counter() - t0:.1f} s")
    return store


def end_to_end(name: str, size: str, scheduler: str | None, store: Path | None) -> None:
    """Run params/<name>.yml's notebooks through the pipeline (the same grid the notebooks train: 03
    tuning, 04 Table 1, 05 ablation, 06 MIL heads, 07 harmonisation) in a fresh temporary root with a
    fresh run cache, optionally on a Dask scheduler, and print each notebook's wall time."""
    from scangen.pipeline.layout import Layout
    from scangen.pipeline.runner import run

    if store is not None or size != "quick":
        print("--end-to-end runs the parameter set as written (its own store and size); --store/--size ignored")
    if scheduler:
        os.environ["SCANGEN_DASK_SCHEDULER"] = scheduler
    layout = Layout.under(Path(tempfile.mkdtemp(prefix="bench_grid_root_")), sources_from=Layout.default())
    t0 = time.perf_counter()
    run(name, layout, log=print)
    sec = time.perf_counter() - t0
    print(f"params/{name}.yml end to end on {scheduler or 'this machine'}: {sec:.1f} s ({sec / 3600:.2f} h); "
          f"grid counted in advance: {full_grid_runs(name)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--size", default="quick")
    ap.add_argument("--fm", default="uni-sim")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per arm: the grid has 2 x seeds runs")
    ap.add_argument("--params", default="quick", help="training settings of params/<name>.yml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--end-to-end", action="store_true",
                    help="instead: train params/<--params>.yml's whole grid (all its FMs) and time it")
    ap.add_argument("--scheduler", default=None, help="with --end-to-end: a Dask scheduler address")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.end_to_end:
        end_to_end(args.params, args.size, args.scheduler, args.store)
        return
    device = resolve_device(args.device)
    store = args.store or make_store(args.size, [args.fm])
    bags = load_bags(store, args.fm)
    settings = param_set_training(args.params)
    base = TrainConfig(store=str(store), fm=args.fm, device=args.device, progress=False, **settings)
    configs = [base.replace(use_scangen=sg, seed=s) for sg in (False, True) for s in range(args.seeds)]
    threads = args.threads if device.type == "cpu" else None
    as_group = GroupTask(args.fm, tuple(configs), tuple(str(i) for i in range(len(configs))), device.type, threads)
    alone = [GroupTask(args.fm, (c,), ("0",), device.type, threads) for c in configs]
    print(f"device {device}, {args.threads} CPU threads; grid: {args.fm}, baseline + ScanGen x {args.seeds} seeds "
          f"= {len(configs)} runs; training settings of params/{args.params}.yml: {settings}")

    seconds = {"ensemble": 0.0, "one by one": 0.0}
    cpu = {"ensemble": 0.0, "one by one": 0.0}  # process CPU time: less sensitive to other load than wall time
    logits: dict[str, list[np.ndarray]] = {}
    for r in range(args.repeats):
        order = ["ensemble", "one by one"] if r % 2 == 0 else ["one by one", "ensemble"]
        for mode in order:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            if mode == "ensemble":
                records = train_group(as_group, bags).records
            else:
                records = list(itertools.chain.from_iterable(train_group(t, bags).records for t in alone))
            sync(device)
            seconds[mode] += time.perf_counter() - t0
            cpu[mode] += time.process_time() - c0
            logits[mode] = [rec.predictions["logit"].to_numpy() for rec in records]
    n = len(configs) * args.repeats
    rate = {mode: 60.0 * n / s for mode, s in seconds.items()}
    for mode in seconds:
        print(f"{mode:>11}: {rate[mode]:7.2f} runs/min ({seconds[mode] / n:.2f} s/run wall, "
              f"{cpu[mode] / n:.2f} s/run process CPU time, {n} runs)")
    print(f"process CPU time per run, one by one / ensemble: {cpu['one by one'] / cpu['ensemble']:.2f}x")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (wall-time rates assume an idle machine)")
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(logits["ensemble"], logits["one by one"]))
    print(f"ensemble / one by one: {rate['ensemble'] / rate['one by one']:.2f}x runs per minute "
          f"(target >= 2x on CPU, >= 20x on GPU); largest |logit| difference member vs alone: {diff:.3g}")

    grid = full_grid_runs("full")
    print(f"params/full.yml grid: {grid} distinct runs")
    for mode, s in seconds.items():
        per_run = s / n
        total = per_run * grid["total"]
        spread = ", ".join(f"{w} workers {total / w / 3600:.2f} h" for w in args.workers)
        print(f"full set, {mode}, at the measured {per_run:.2f} s/run (params/{args.params} settings, "
              f"{args.size if args.store is None else store.name} cohort): {total / 3600:.2f} h on this device; {spread}")


if __name__ == "__main__":
    main()
