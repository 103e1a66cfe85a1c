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
number of runs in params/full.yml's grid (`full_grid_runs`: Table 1, ablation, MIL heads, sensitivity
sweep, with the runs Table 1 shares with the others counted once), on one device and on N workers
(perfect spreading of groups; a lower bound). The per-run cost is measured on the cohort given
(`--size quick` by default): with `--params full` the training settings are the full set's, but the
paper-size cohort has more slides to evaluate, so the estimate is a lower bound; say so when quoting.

`--end-to-end` instead trains the whole grid of `--params` through the experiment modules (the
notebooks' calls, fresh run cache, optionally on `--scheduler`) and prints its wall time per notebook.

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


def full_grid_runs(name: str = "full") -> dict[str, int]:
    """Distinct training runs per notebook of params/<name>.yml, counting runs shared with Table 1 once."""
    doc = yaml.safe_load((PARAMS / f"{name}.yml").read_text())
    p, nb = doc["parameters"], doc.get("notebooks") or {}
    fms, seeds = len(p["fms"]), list(p["seeds"])
    t1_seeds = set(overrides(nb, "table1").get("seeds", seeds))
    out = {"table1": fms * 2 * len(t1_seeds)}
    abl = overrides(nb, "ablation")
    abl_seeds = set(abl.get("seeds", seeds))
    n_sub = abl.get("max_subsets") or len(enumerate_subsets())
    # per seed: 1 baseline + n_sub ScanGen subsets; the baseline of a Table 1 seed is reused
    out["ablation"] = len(abl_seeds) * (1 + n_sub) - len(abl_seeds & t1_seeds)
    mil = overrides(nb, "mil_heads", "mil_extensions")
    n_heads = len([h for h in mil.get("heads", MIL_HEADS) if h != "gap"])  # GAP runs are Table 1's
    out["mil_heads"] = n_heads * 2 * len(set(mil.get("seeds", seeds)))
    sens = overrides(nb, "tuning", "sensitivity")
    grid = sens.get("grid") or {}
    sens_seeds = set(sens.get("seeds", seeds))
    # one-at-a-time sweep: the default ScanGen run + each non-default value; the default run is Table 1's
    default = TrainConfig(use_scangen=True, **(p.get("train") or {}))
    changes = sum(1 for field, values in grid.items() for v in values if v != getattr(default, field))
    out["sensitivity"] = len(sens_seeds) * changes + len(sens_seeds - t1_seeds)
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
    """Train params/<name>.yml's whole grid through the experiment modules (Table 1, ablation, MIL heads,
    sensitivity; each module's own grid through ExperimentSession, fresh run cache) and time it."""
    from scangen.experiments.ablation import run_ablation
    from scangen.experiments.mil_table import run_mil_table
    from scangen.experiments.sensitivity import run_sensitivity
    from scangen.experiments.session import ExperimentSession, train_settings
    from scangen.experiments.table1 import run_table1

    doc = yaml.safe_load((PARAMS / f"{name}.yml").read_text())
    p, nb = doc["parameters"], doc.get("notebooks") or {}
    store = store or make_store(size, list(p["fms"]))
    cache = Path(tempfile.mkdtemp(prefix="bench_grid_cache_"))
    session = ExperimentSession(store, cache, train_settings(p["steps"], p.get("device", "auto"), p.get("train")),
                                scheduler=scheduler or "local")
    fm = p["fms"][-1]
    mil, sens = overrides(nb, "mil_heads", "mil_extensions"), overrides(nb, "tuning", "sensitivity")
    steps = {
        "table1": lambda: run_table1(session, p["fms"], overrides(nb, "table1").get("seeds", p["seeds"])),
        "ablation": lambda: run_ablation(session, fm, overrides(nb, "ablation").get("seeds", p["seeds"]),
                                         max_subsets=overrides(nb, "ablation").get("max_subsets")),
        "mil_heads": lambda: run_mil_table(session, fm, mil.get("heads", MIL_HEADS), mil.get("seeds", p["seeds"])),
        "sensitivity": lambda: run_sensitivity(session, fm, sens.get("grid"), sens.get("seeds", p["seeds"])),
    }
    total = time.perf_counter()
    for label, step in steps.items():
        t0, misses = time.perf_counter(), session.cache.misses
        step()
        trained, sec = session.cache.misses - misses, time.perf_counter() - t0
        print(f"{label:>12}: {trained} runs trained in {sec:.1f} s ({60 * trained / max(sec, 1e-9):.1f} runs/min)")
    sec = time.perf_counter() - total
    print(f"params/{name}.yml grid end to end on {scheduler or 'this machine'}: {session.cache.misses} runs trained, "
          f"{session.cache.hits} served from the cache, {sec:.1f} s ({sec / 3600:.2f} h); counted in advance: "
          f"{full_grid_runs(name)['total']} distinct runs")
    session.close()


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
