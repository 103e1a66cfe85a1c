"""Whole training runs on one device: wall time, test metrics, repeatability, ScanGen against baseline.

Trains, for every FM and seed asked for, the baseline and ScanGen at the spec's slide level and at the
bag level with `scangen.train.run_experiment`, using the training settings of a parameter set
(`--params quick` or `full`). Each configuration runs `--repeats` times on `--device`. Per run it
prints: wall time, the model-selection step, test AUC (specimen-bootstrap CI), the mean logit CoV,
the scanner share (`scangen.metrics.scanner_variance`) and the largest |logit| difference between
repeats (0: bit-identical). With `--compare cpu` every configuration is also trained once on the CPU
and its largest |logit| difference to the device's first repeat is printed (on CUDA, mixed
precision changes the rounding, so the two runs take different paths).

At the end, for each FM and ScanGen level: in how many seeds ScanGen lowered the mean logit CoV and
the scanner share against the same seed's baseline, and kept the AUC at or above the baseline CI's
lower end. `--csv FILE` writes one row per run.

Usage: python benchmarks/bench_device_runs.py [--store DIR | --size quick] [--fms hoptimus0-sim]
       [--seeds 0] [--params quick] [--device auto] [--repeats 2] [--compare cpu] [--csv FILE]
Without --store, the cohort of `--size` (only the FMs asked for) is simulated into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from common import param_set_training, sync  # benchmarks/ is the script's folder, on sys.path
from scangen.metrics import summarize_predictions
from scangen.metrics.scanner_variance import scanner_variance
from scangen.store import load_bags
from scangen.train import TrainConfig, run_experiment
from scangen.train.device import resolve_device

CONFIGS: dict[str, dict] = {
    "baseline": {},
    "scangen-slide": {"use_scangen": True, "scangen_level": "slide"},
    "scangen-bag": {"use_scangen": True, "scangen_level": "bag"},
}


def make_store(size: str, fms: list[str]) -> Path:
    from scangen.simulate import simulate_cohort

    t0 = time.perf_counter()
    store = simulate_cohort(Path(tempfile.mkdtemp(prefix="bench_runs_")) / f"{size}-seed0", size=size, seed=0,
                            models=fms, registered_tiles=False)
    print(f"simulated the {size} cohort ({', '.join(fms)}) in {time.perf_counter() - t0:.1f} s", flush=True)
    return store


def timed_run(cfg: TrainConfig, bags) -> tuple[pl.DataFrame, float]:
    device = torch.device(cfg.device)
    sync(device)
    t0 = time.perf_counter()
    pred = run_experiment(cfg, bags)
    sync(device)
    return pred, time.perf_counter() - t0


def metrics(pred: pl.DataFrame) -> dict[str, float]:
    s = summarize_predictions(pred, n_boot=500)
    rows = pred.filter((pl.col("split") == "test") & (pl.col("magnification") == 40))
    v = scanner_variance(rows["logit"].to_numpy(), rows["specimen_id"].to_numpy(), rows["scanner"].to_numpy())
    return {"best_step": int(pred["best_step"][0]), "auc": s["auc"], "auc_ci_low": s["ci"][0],
            "auc_ci_high": s["ci"][1], "scanner_cov": s["scanner_cov"], "scanner_share": v.scanner_share}


def line(m: dict[str, float]) -> str:
    return (f"step {m['best_step']:4d}  AUC {m['auc']:.3f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]  "
            f"CoV {m['scanner_cov']:7.3f}  share {m['scanner_share']:.3f}")


def max_diff(a: pl.DataFrame, b: pl.DataFrame) -> float:
    return float(np.max(np.abs(a["logit"].to_numpy() - b["logit"].to_numpy())))


def summary(rows: pl.DataFrame) -> None:
    """Per FM and ScanGen level: seeds where ScanGen lowered CoV / share and kept AUC, against the baseline."""
    first = rows.filter(pl.col("repeat") == 0)
    base = first.filter(pl.col("config") == "baseline").select(
        "fm", "seed", pl.col("scanner_cov").alias("b_cov"), pl.col("scanner_share").alias("b_share"),
        pl.col("auc_ci_low").alias("b_ci_low"), pl.col("device"))
    sg = first.filter(pl.col("config") != "baseline").join(base, on=["fm", "seed", "device"])
    out = sg.group_by("fm", "config", "device", maintain_order=True).agg(
        pl.len().alias("seeds"),
        (pl.col("scanner_cov") < pl.col("b_cov")).sum().alias("cov_lower"),
        (pl.col("scanner_share") < pl.col("b_share")).sum().alias("share_lower"),
        (pl.col("auc") >= pl.col("b_ci_low")).sum().alias("auc_kept"),
        (pl.col("scanner_cov") / pl.col("b_cov")).median().alias("median_cov_ratio"),
        (pl.col("scanner_share") / pl.col("b_share")).median().alias("median_share_ratio"),
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store folder holding every FM of --fms")
    parser.add_argument("--size", default="quick", help="simulated size when no --store is given")
    parser.add_argument("--fms", nargs="+", default=["hoptimus0-sim"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--params", default="quick", help="parameter set whose training settings are used")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compare", default=None, help="also train once on this device (e.g. cpu)")
    parser.add_argument("--csv", default=None, help="write one row per run to this CSV file")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive integer, got {args.repeats}")
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"device {device} ({name}), torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    settings = param_set_training(args.params)
    print(f"training settings of params/{args.params}.yml: {settings}", flush=True)
    store = Path(args.store) if args.store else make_store(args.size, args.fms)
    records = []
    for fm in args.fms:
        bags = load_bags(store, fm)
        for seed in args.seeds:
            for label, extra in CONFIGS.items():
                cfg = TrainConfig(fm=fm, seed=seed, progress=False, device=str(device), **settings, **extra)
                runs = [(device.type, r, cfg) for r in range(args.repeats)]
                runs += [(args.compare, 0, cfg.replace(device=args.compare))] if args.compare else []
                first = None
                for dev, r, run_cfg in runs:
                    pred, wall = timed_run(run_cfg, bags)
                    m = metrics(pred)
                    diff = "" if first is None else f"  max|dlogit| vs {device.type} run 0 {max_diff(first, pred):.2e}"
                    first = pred if first is None else first
                    print(f"{fm:14s} s{seed} {label:14s} {dev:5s} run {r}: {wall:6.1f} s  {line(m)}{diff}", flush=True)
                    records.append({"fm": fm, "seed": seed, "config": label, "device": dev, "repeat": r,
                                    "wall_s": wall, **m})
    rows = pl.DataFrame(records)
    summary(rows)
    if args.csv:
        rows.write_csv(args.csv)


if __name__ == "__main__":
    main()
