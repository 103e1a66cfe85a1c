"""Training speed: the batched trainer step vs batch-size-1 loops, and achieved GFLOP/s.

Trains the GAP model on the quick simulated cohort three ways, over the same bags, the same random
patch subsets, the same initial model and the same optimiser (`make_optimizer`, as the trainer):
- batched trainer: vectorised collation, one forward/backward and one AdamW step per batch;
- plain bs-1 loop (optimiser step per bag): forward, backward and optimizer.step() for every bag,
  as the usual MIL training scripts do (CLAM, DS-MIL, TransMIL). The issue's speed target (the
  batched trainer >= 3x faster on 2 CPU cores) refers to this loop;
- bs-1 with gradient accumulation (same maths): forward/backward per bag, gradients accumulated,
  one optimiser step per batch. This is the same update as the batched step, so its ratio (no
  target) is the stricter one: what batching alone buys.
Each line gives patches/s and the batched trainer's speed-up over it. Achieved GFLOP/s of the
batched step counts phi's matmul FLOPs (the 3-layer MLP, forward + backward) and is given as a
fraction of a plain (rows, D) @ (D, H) float32 matmul measured in the same run (target >= 50%).

Other processes may share the CPU, so the three loops and the matmul take turns at every batch
(order rotated), each with its own model copy, optimiser and patch-subset generator: load bursts fall
on all of them alike. Totals give the rates; the median of the per-batch ratios is printed too, and
the load average before and after. The full `scangen.train.train` loop (validation included) is
timed once at the end for reference.

Usage: python benchmarks/bench_training.py [--store DIR] [--fm uni-sim] [--steps 30]
       [--threads N] [--batch 16] [--max-patches N] [--device auto]
--max-patches defaults to `max_patches_train` of params/quick.yml (the quick run's setting); 128 is
the heavier setting also worth measuring. Without --store, the quick cohort (one model) is simulated
into a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common import param_set_training, sync  # benchmarks/ is the script's folder, on sys.path
from scangen.models import MILModel, build_model
from scangen.store import Bags, load_bags
from scangen.train import TrainConfig, train
from scangen.train.batching import BagTensors, collate
from scangen.train.device import resolve_device
from scangen.train.trainer import make_optimizer


def quick_max_patches() -> int:
    """`max_patches_train` of the quick parameter set (the patches per bag of the default run)."""
    value = param_set_training("quick").get("max_patches_train")
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"params/quick.yml: parameters.train.max_patches_train: expected a positive int, got {value!r}")
    return value


def mlp_flops_per_patch(d: int, h: int) -> int:
    """Matmul FLOPs of phi per patch, forward + backward.

    Forward: 2(DH + 2H^2). Backward: weight gradients 2(DH + 2H^2) and input gradients of
    layers 2 and 3, 2(2H^2) (the first layer's input needs no gradient).
    """
    fwd = 2 * (d * h + 2 * h * h)
    return fwd + fwd + 2 * (2 * h * h)


Step = Callable[[np.ndarray, np.ndarray], int]
"""One training step over a batch of bag positions and labels; returns its real patch count."""


def batched_step(model: MILModel, opt: torch.optim.Optimizer, bt: BagTensors, max_patches: int,
                 gen: torch.Generator) -> Step:
    """The trainer's step: one collation, forward/backward and optimiser step per batch."""

    def step(pos: np.ndarray, y: np.ndarray) -> int:
        x, mask = collate(bt, pos, max_patches, gen)
        loss, _ = model.task_loss(x, mask, torch.as_tensor(y, device=bt.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return int(mask.sum())

    return step


def single_bag_step(model: MILModel, opt: torch.optim.Optimizer, bt: BagTensors, max_patches: int,
                    gen: torch.Generator, step_per_bag: bool) -> Step:
    """A batch-size-1 loop over one batch's bags, with the batched run's patch subsets: an optimiser
    step per bag (`step_per_bag`, the plain loop) or gradients accumulated and one step per batch."""

    def step(pos: np.ndarray, y: np.ndarray) -> int:
        x_all, mask_all = collate(bt, pos, max_patches, gen)  # same subsets as the batched run
        counts = mask_all.sum(dim=1).tolist()
        opt.zero_grad(set_to_none=True)
        for b, n in enumerate(counts):
            mask = torch.ones((1, n), dtype=torch.bool, device=bt.device)
            loss, _ = model.task_loss(x_all[b : b + 1, :n], mask, torch.as_tensor(y[b : b + 1], device=bt.device))
            if step_per_bag:
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                (loss / len(pos)).backward()
        if not step_per_bag:
            opt.step()
        return int(sum(counts))

    return step


def matmul_step(lengths: np.ndarray, max_patches: int, batch: int, d: int, h: int, device: torch.device,
                repeats: int = 3) -> Step:
    """A plain float32 (rows, D) @ (D, H) matmul, rows = the batch's real patches, `repeats` times;
    returns the FLOPs done (the reference the batched step's achieved GFLOP/s is compared with)."""
    a = torch.randn(batch * max_patches, d, device=device)
    w = torch.randn(d, h, device=device)

    def step(pos: np.ndarray, y: np.ndarray) -> int:
        n = int(np.minimum(lengths[pos], max_patches).sum())
        if n > a.shape[0]:
            raise ValueError(f"batch: {n} patches exceed the matmul buffer of {a.shape[0]} rows")
        for _ in range(repeats):
            a[:n] @ w
        return 2 * n * d * h * repeats

    return step


MODES = (
    "batched trainer",
    "plain bs-1 loop (optimiser step per bag)",
    "bs-1 with gradient accumulation (same maths)",
)
MATMUL = "plain matmul"


def interleaved(steps: dict[str, Step], batches, ys, device: torch.device) -> dict[str, np.ndarray]:
    """Seconds and counts per step and mode, (n_steps, 2) each. The modes take turns at every batch
    (order rotated each time), so load from other processes falls on all of them alike."""
    names = list(steps)
    out = {name: np.zeros((len(batches), 2)) for name in names}
    for i, (pos, y) in enumerate(zip(batches, ys)):
        for name in names[i % len(names):] + names[: i % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            count = steps[name](pos, y)
            sync(device)
            out[name][i] = (time.perf_counter() - t0, count)
    return out


def quick_bags(store: str | None, fm: str) -> Bags:
    """Bags of `fm` from `store`, or from a freshly simulated quick cohort."""
    if store is not None:
        return load_bags(Path(store), fm)
    from scangen.simulate import simulate_cohort

    folder = tempfile.mkdtemp(prefix="bench_training_")
    t0 = time.perf_counter()
    path = simulate_cohort(folder, size="quick", seed=0, models=[fm], registered_tiles=False)
    print(f"simulated quick cohort ({fm}) in {time.perf_counter() - t0:.1f} s -> {path}")
    return load_bags(path, fm)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store folder (default: simulate the quick cohort)")
    parser.add_argument("--fm", default="uni-sim")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-patches", type=int, default=None,
                        help="patches per bag (default: max_patches_train of params/quick.yml)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA > MPS > CPU) or a torch device")
    args = parser.parse_args()
    if args.max_patches is None:
        args.max_patches = quick_max_patches()
    for name in ("steps", "batch", "max_patches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    return args


def main() -> None:
    args = _parse()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bags = quick_bags(args.store, args.fm)
    bt = BagTensors.from_bags(bags, device)
    task = np.flatnonzero(bags.slides["cohort"].to_numpy() == "task")
    rng = np.random.default_rng(0)
    n_warm = 2
    batches = [rng.choice(task, args.batch, replace=False) for _ in range(args.steps + n_warm)]
    ys = [bags.slides["egfr"].to_numpy()[b].astype(np.float32) for b in batches]
    cfg = TrainConfig(fm=args.fm, max_steps=args.steps, eval_every=args.steps, task_batch_size=args.batch,
                      max_patches_train=args.max_patches, progress=False, dropout=0.0, device=args.device,
                      amp=False, num_threads=torch.get_num_threads())
    steps: dict[str, Step] = {}
    for name in MODES:  # same initial model, optimiser and patch-subset seed for every mode
        torch.manual_seed(0)
        model = build_model(bags.dim, "gap", phi_dropout=0.0).to(device)
        opt = make_optimizer(model, cfg, device)
        gen = torch.Generator(device=bt.storage).manual_seed(1)
        steps[name] = (batched_step(model, opt, bt, args.max_patches, gen) if name == MODES[0]
                       else single_bag_step(model, opt, bt, args.max_patches, gen, step_per_bag=name == MODES[1]))
    h = model.phi.hidden_dim
    steps[MATMUL] = matmul_step(bags.lengths, args.max_patches, args.batch, bags.dim, h, device)
    load0 = os.getloadavg()[0]
    interleaved(steps, batches[:n_warm], ys[:n_warm], device)  # warm-up: allocations, kernel choice
    timed = interleaved(steps, batches[n_warm:], ys[n_warm:], device)
    report(args, device, bags.dim, h, timed, load0)

    t0 = time.perf_counter()
    train(cfg, bags, bag_tensors=bt)
    t_full = time.perf_counter() - t0
    n_b = int(timed[MODES[0]][:, 1].sum())
    print(f"full train()    : {n_b / t_full:10.0f} patches/s  ({t_full:.2f} s incl. setup and one validation)")


def report(args: argparse.Namespace, device: torch.device, d: int, h: int, timed: dict[str, np.ndarray],
           load0: float) -> None:
    """Print patches/s per mode, the batched trainer's speed-ups, achieved GFLOP/s and the matmul fraction.

    Speed-ups are ratios of total times over the same patches; the median of the per-batch ratios,
    which a burst of load on one step cannot move, is shown alongside.
    """
    print(f"device={device} cores={os.cpu_count()} threads={torch.get_num_threads()} "
          f"load={load0:.1f}->{os.getloadavg()[0]:.1f} D={d} H={h} batch={args.batch} "
          f"max_patches={args.max_patches} steps={args.steps} (modes interleaved per batch)")
    seconds = {name: t[:, 0] for name, t in timed.items()}
    base = MODES[0]
    rate = {name: timed[name][:, 1].sum() / seconds[name].sum() for name in MODES}
    width = max(len(n) for n in MODES)
    for name in MODES:
        line = f"{name:<{width}} : {rate[name]:8.0f} patches/s  ({seconds[name].sum():.2f} s)"
        if name != base:
            target = "issue target >= 3" if name == MODES[1] else "stricter, same maths"
            median = float(np.median(seconds[name] / seconds[base]))
            line += f"  batched speed-up {rate[base] / rate[name]:.2f}x ({target}; per-batch median {median:.2f}x)"
        print(line)
    achieved = mlp_flops_per_patch(d, h) * rate[base] / 1e9
    ref = timed[MATMUL][:, 1].sum() / seconds[MATMUL].sum() / 1e9
    per_step = mlp_flops_per_patch(d, h) * timed[base][:, 1] / seconds[base] / 1e9
    median = float(np.median(per_step / (timed[MATMUL][:, 1] / seconds[MATMUL] / 1e9)))
    rows = round(float(timed[base][:, 1].mean()))
    print(f"achieved        : {achieved:10.1f} GFLOP/s (phi matmuls, fwd+bwd)")
    print(f"plain matmul    : {ref:10.1f} GFLOP/s (~{rows}x{d} @ {d}x{h}, the same rows, interleaved)")
    print(f"fraction        : {achieved / ref:10.2%}   (target >= 50%; per-batch median {median:.0%})")


if __name__ == "__main__":
    main()
