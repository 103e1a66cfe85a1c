"""Throughput of each MIL head: synthetic forward+backward, or the real trainer on a store.

Synthetic mode (default): python benchmarks/bench_models.py [--dim 1536] [--batch 16] [--patches 512]
[--steps 5]. Prints bags per second per head (phi + head, task loss + backward on one random padded
batch) and the ratio to GAP on the same device (CUDA when present), and the ScanGen loss cost.

Store mode: python benchmarks/bench_models.py --store DIR --fm hoptimus0-sim [--train-steps 20]
[--warm-steps 5] [--threads N] [--device auto] [--repeats 1]. Trains every head with
`scangen.train.train` and the trainer's default settings (batch, patches per bag, optimiser), ScanGen off, the same for all
heads, early stopping unreachable (one validation, at the last step). Each head runs twice, for
`warm-steps` and for `warm-steps + train-steps` steps; the difference of the two wall times divided by
`train-steps` is the training time per step, so setup, warm-up and the single validation pass cancel
(a discarded GAP run first absorbs one-time start-up costs; with --repeats N each run is timed N times
and the fastest kept, which a GPU needs: use --repeats 3 and a few hundred train steps there)
(validation is excluded from s/step; its cost is printed separately as one pass over the validation
WSIs). Patches/s counts the patches fed to the head (after the per-bag cap, before SlotMIL's
subsampling), replayed exactly from the trainer's task sampler. The machine load (os.getloadavg) is
printed before and after, since other processes may share the CPU.
Timings are measurements, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from common import sync  # benchmarks/ is the script's folder, on sys.path
from scangen.losses import scangen_loss
from scangen.models import HEADS, build_model, count_parameters
from scangen.store import Bags, load_bags
from scangen.train import (
    BagTensors,
    TaskSampler,
    TrainConfig,
    assign_splits,
    predict_logits,
    resolve_device,
    train,
)
from scangen.train.trainer import validation_positions


def ragged_batch(batch: int, patches: int, dim: int, device: torch.device, seed: int = 0):
    """Padded batch whose bag sizes spread uniformly over [patches/2, patches]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(patches // 2, patches + 1, (batch,), generator=g)
    x = torch.randn(batch, patches, dim, generator=g)
    mask = torch.arange(patches).unsqueeze(0) < lengths.unsqueeze(1)
    y = (torch.rand(batch, generator=g) < 0.5).float()
    return x.to(device), mask.to(device), y.to(device)


def time_head(name: str, args: argparse.Namespace, device: torch.device) -> tuple[float, int]:
    """Seconds per training step (task_loss + backward) for head ``name`` and its parameter count."""
    torch.manual_seed(0)
    kwargs = {"subsample_rate": 0.5, "mixup_alpha": 1.0} if name == "slotmil" else {}
    model = build_model(args.dim, name, **kwargs).to(device).train()
    x, mask, y = ragged_batch(args.batch, args.patches, args.dim, device)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # warm-up
        loss, _ = model.task_loss(x, mask, y, gen)
        loss.backward()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        model.zero_grad(set_to_none=True)
        loss, _ = model.task_loss(x, mask, y, gen)
        loss.backward()
    sync(device)
    return (time.perf_counter() - start) / args.steps, count_parameters(model)


def time_scangen(args: argparse.Namespace, device: torch.device, n: int = 256) -> float:
    """Seconds per ScanGen loss forward+backward on n projected items."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 512, generator=g).to(device).requires_grad_()
    specimen = torch.randint(0, n // 6, (n,), generator=g).to(device)
    scanner = torch.randint(0, 6, (n,), generator=g).to(device)
    scangen_loss(z, specimen, scanner, 0.5, 0.5).backward()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        z.grad = None
        scangen_loss(z, specimen, scanner, 0.5, 0.5).backward()
    sync(device)
    return (time.perf_counter() - start) / args.steps


def store_config(fm: str, head: str, steps: int, args: argparse.Namespace) -> TrainConfig:
    """Trainer defaults, one validation at the last step, no early stop, quiet."""
    return TrainConfig(fm=fm, head=head, max_steps=steps, eval_every=steps, patience=1_000_000,
                       progress=False, num_threads=args.threads, device=args.device)


def fed_patches(bags: Bags, config: TrainConfig) -> int:
    """Patches the trainer feeds to the model in `config.max_steps` steps (replays its task sampler)."""
    slides = assign_splits(bags.slides, config)
    pool = np.flatnonzero(slides["split"].to_numpy() == "task_train")
    sampler = TaskSampler(pool, slides["egfr"].to_numpy()[pool], config.task_batch_size,
                          np.random.default_rng(config.seed))
    cap = config.max_patches_train or int(bags.lengths.max())
    return sum(int(np.minimum(bags.lengths[sampler.next()[0]], cap).sum()) for _ in range(config.max_steps))


def timed_train(bags: Bags, bt: BagTensors, config: TrainConfig):
    """(wall seconds of `train`, its result)."""
    start = time.perf_counter()
    result = train(config, bags, bag_tensors=bt)
    sync(result.device)
    return time.perf_counter() - start, result


def time_head_on_store(head: str, bags: Bags, bt: BagTensors, args: argparse.Namespace) -> dict[str, float]:
    """Training s/step and patches/s of `head` and one validation pass.

    s/step is the difference of a long and a short run over their extra steps, so set-up, the one
    validation and the prediction cancel. Each run is timed `args.repeats` times and the fastest
    kept: on a GPU a step takes milliseconds and one slow start would otherwise swamp the difference.
    """
    short = store_config(args.fm, head, args.warm_steps, args)
    long = short.replace(max_steps=args.warm_steps + args.train_steps, eval_every=args.warm_steps + args.train_steps)
    t_short = min(timed_train(bags, bt, short)[0] for _ in range(args.repeats))
    runs = [timed_train(bags, bt, long) for _ in range(args.repeats)]
    t_long, result = min(runs, key=lambda run: run[0])
    if t_long <= t_short:
        raise SystemExit(f"{head}: the {long.max_steps}-step run was not slower than the {short.max_steps}-step "
                         "one (timing noise); raise --train-steps")
    seconds = (t_long - t_short) / args.train_steps
    patches = fed_patches(bags, long) - fed_patches(bags, short)
    val = validation_positions(result.slides)
    start = time.perf_counter()
    predict_logits(result.model, bt, val, patch_budget=long.eval_patch_budget)
    sync(result.device)
    return {"s_step": seconds, "patches_s": patches / (t_long - t_short), "val_s": time.perf_counter() - start,
            "n_val": float(val.size), "params": float(count_parameters(result.model))}


def load_line() -> str:
    """The 1/5/15-minute load averages and the core count."""
    one, five, fifteen = os.getloadavg()
    return f"load={one:.2f}/{five:.2f}/{fifteen:.2f} cores={os.cpu_count()}"


def run_store_mode(args: argparse.Namespace) -> None:
    """Per-head training throughput with the real trainer on the store's `fm` bags."""
    if not (Path(args.store) / "slides.parquet").is_file():
        raise SystemExit(f"--store: {args.store!r} is not a store folder (no slides.parquet)")
    if args.train_steps < 1 or args.warm_steps < 1 or args.repeats < 1:
        raise SystemExit("--train-steps, --warm-steps and --repeats: expected positive integers")
    device = resolve_device(args.device)
    bags = load_bags(Path(args.store), args.fm)
    bt = BagTensors.from_bags(bags, device)
    cfg = store_config(args.fm, "gap", args.train_steps, args)
    print(f"device={device} torch={torch.__version__} threads={args.threads or torch.get_num_threads()} "
          f"fm={args.fm} D={bags.dim} bags={len(bags)} batch={cfg.task_batch_size} "
          f"max_patches_train={cfg.max_patches_train} steps={args.warm_steps}+{args.train_steps} {load_line()}")
    timed_train(bags, bt, store_config(args.fm, "gap", args.warm_steps, args))  # one-time start-up costs
    results = {name: time_head_on_store(name, bags, bt, args) for name in HEADS}
    gap = results["gap"]["s_step"]
    print(f"{'head':<12}{'params':>10}{'s/step':>10}{'patches/s':>11}{'x GAP':>8}{'val pass s':>12}")
    for name, r in results.items():
        print(f"{name:<12}{int(r['params']):>10}{r['s_step']:>10.4f}{r['patches_s']:>11.0f}"
              f"{r['s_step'] / gap:>8.2f}{r['val_s']:>12.3f}")
    print(f"(x GAP: ratio of s/step; val pass: one inference pass over {int(results['gap']['n_val'])} "
          f"validation WSIs, excluded from s/step) {load_line()}")


def run_synthetic_mode(args: argparse.Namespace) -> None:
    """Per-head forward+backward on one random padded batch, and the ScanGen loss."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"D={args.dim} B={args.batch} N<={args.patches} {load_line()}")
    results = {name: time_head(name, args, device) for name in HEADS}
    gap = results["gap"][0]
    print(f"{'head':<12}{'params':>10}{'s/step':>10}{'bags/s':>10}{'x GAP':>8}")
    for name, (seconds, params) in results.items():
        print(f"{name:<12}{params:>10}{seconds:>10.4f}{args.batch / seconds:>10.1f}{seconds / gap:>8.2f}")
    print(f"scangen_loss (n=256, H=512) forward+backward: {time_scangen(args, device) * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1536, help="synthetic mode: feature size D")
    parser.add_argument("--batch", type=int, default=16, help="synthetic mode: bags per batch")
    parser.add_argument("--patches", type=int, default=512, help="synthetic mode: max patches per bag")
    parser.add_argument("--steps", type=int, default=5, help="synthetic mode: timed steps")
    parser.add_argument("--store", default=None, help="store folder: train each head with the real trainer")
    parser.add_argument("--fm", default="hoptimus0-sim", help="store mode: foundation model in the store")
    parser.add_argument("--train-steps", type=int, default=20, help="store mode: timed training steps")
    parser.add_argument("--warm-steps", type=int, default=5, help="store mode: steps of the reference run")
    parser.add_argument("--threads", type=int, default=None, help="store mode: torch CPU threads")
    parser.add_argument("--repeats", type=int, default=1, help="store mode: timings per run, fastest kept")
    parser.add_argument("--device", default="auto", help="store mode: 'auto' (CUDA > MPS > CPU) or a device")
    args = parser.parse_args()
    if args.store is not None:
        run_store_mode(args)
    else:
        run_synthetic_mode(args)


if __name__ == "__main__":
    main()
