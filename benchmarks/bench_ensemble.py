"""Ensemble trainer vs the same configs trained one by one: runs per minute (issue 12's CPU target >= 2x).

The configs are a Table-1-like group of the quick parameter set (params/quick.yml: steps, eval_every,
patience, max_patches_train, select_min_step, trace_test, amp_cpu) on one FM: baseline and ScanGen arms x
`--seeds` seeds, so both modes run exactly the same steps and evaluations (a member equals its run
alone; early stopping happens at the same evaluation). Both modes produce complete RunRecords (training, final predictions of
val/test, diagnostics). The one-by-one and ensemble passes alternate `--repeats` times and the
fastest of each is kept (other processes share the cores); the load average is printed.

Usage: python benchmarks/bench_ensemble.py [--store DIR] [--fm uni-sim] [--head gap] [--seeds 4]
       [--threads 2] [--steps N] [--repeats 1] [--device cpu]
Without --store the quick cohort (one FM) is simulated into a temporary folder first (~1 min).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import param_set_training, sync  # benchmarks/ is the script's folder, on sys.path
from scangen.store import load_bags
from scangen.train import TrainConfig, run_ensemble, run_record
from scangen.train.device import resolve_device


def group_configs(args: argparse.Namespace) -> list[TrainConfig]:
    """Baseline and ScanGen x seeds with the quick set's training settings."""
    train = param_set_training("quick")
    base = TrainConfig(fm=args.fm, head=args.head, max_steps=args.steps or int(train["max_steps"]), progress=False,
                       num_threads=args.threads, device=args.device,
                       **{k: v for k, v in train.items() if k in ("eval_every", "patience", "max_patches_train",
                                                                   "select_min_step", "trace_test", "amp_cpu")})
    return [base.replace(seed=s, use_scangen=sg) for s in range(args.seeds) for sg in (False, True)]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    sync(resolve_device(args_device))
    return time.perf_counter() - start, out


def main() -> None:
    global args_device
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--fm", default="uni-sim")
    parser.add_argument("--head", default="gap", help="MIL head of every config (scangen.models.HEADS)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0, help="0 = the quick set's steps")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args_device = args.device
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            from scangen.simulate import simulate_cohort

            store = simulate_cohort(Path(tmp) / "quick", size="quick", seed=0, models=[args.fm], registered_tiles=False)
        bags = load_bags(store, args.fm)
        configs = group_configs(args)
        print(f"{len(configs)} configs ({args.fm}, head {args.head}, {configs[0].max_steps} steps, eval every {configs[0].eval_every}, "
              f"patience {configs[0].patience}), {args.threads} threads, device {args.device}; load {os.getloadavg()}")
        run_record(configs[0].replace(max_steps=2, eval_every=1, select_min_step=0), bags)  # one-time start-up costs
        t_one, t_ens = float("inf"), float("inf")
        for _ in range(args.repeats):
            dt, alone = timed(lambda: [run_record(c, bags) for c in configs])
            t_one = min(t_one, dt)
            dt, ens = timed(lambda: run_ensemble(configs, bags))
            t_ens = min(t_ens, dt)
        diff = max(float(np.abs(a.predictions["logit"].to_numpy() - b.predictions["logit"].to_numpy()).max())
                   for a, b in zip(alone, ens))
        steps = sum(int(r.history["step"].max()) for r in ens)
        n = len(configs)
        print(f"one by one : {t_one:8.1f} s  {60 * n / t_one:7.2f} runs/min")
        print(f"ensemble   : {t_ens:8.1f} s  {60 * n / t_ens:7.2f} runs/min")
        print(f"speed-up   : {t_one / t_ens:.2f}x  (target >= 2x on CPU; {steps} member steps; max |logit diff| {diff:.2e})")
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
