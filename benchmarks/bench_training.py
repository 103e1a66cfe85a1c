"""Training speed: the batched trainer vs a plain batch-size-1 loop, and achieved GFLOP/s.

Trains the GAP model on the quick simulated cohort both ways, over the same bags (same random
patch subsets) and the same initial model, and prints:
- patches/s of the batched step (vectorised collation + one forward/backward per batch) and of a
  batch-size-1 loop (one forward/backward per bag, gradients accumulated, one optimiser step per
  batch: the same maths), and their ratio (target >= 3x on 2 CPU cores);
- achieved GFLOP/s of the batched step, counting the matmul FLOPs of phi (the 3-layer MLP,
  forward + backward) and the GAP classifier, as a fraction of a plain torch matmul of the same
  shape measured in the same run (target >= 50%);
- patches/s of the full `scangen.train.train` loop (validation included) for reference.

Usage: python benchmarks/bench_training.py [--store DIR] [--fm uni-sim] [--steps 30] [--threads N]
       [--batch 16] [--max-patches 128] [--device auto]
Without --store, the quick cohort (one model) is simulated into a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scangen.models import build_model
from scangen.store import Bags, load_bags
from scangen.train import TrainConfig, train
from scangen.train.batching import BagTensors, collate
from scangen.train.device import resolve_device


def _sync(device: torch.device) -> None:
    """Wait for queued accelerator work so wall-clock timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mlp_flops_per_patch(d: int, h: int) -> int:
    """Matmul FLOPs of phi per patch, forward + backward.

    Forward: 2(DH + 2H^2). Backward: weight gradients 2(DH + 2H^2) and input gradients of
    layers 2 and 3, 2(2H^2) (the first layer's input needs no gradient).
    """
    fwd = 2 * (d * h + 2 * h * h)
    return fwd + fwd + 2 * (2 * h * h)


def matmul_gflops(rows: int, d: int, h: int, device: torch.device, repeats: int = 20) -> float:
    """GFLOP/s of a plain (rows, D) @ (D, H) float32 matmul on `device`, now."""
    a, w = torch.randn(rows, d, device=device), torch.randn(d, h, device=device)
    for _ in range(3):
        a @ w
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ w
    _sync(device)
    return 2 * rows * d * h * repeats / (time.perf_counter() - t0) / 1e9


def batched_steps(model, bt: BagTensors, batches, ys, max_patches: int, seed: int) -> tuple[float, int]:
    """Seconds and real patches of the batched training steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    gen = torch.Generator(device=bt.storage).manual_seed(seed)
    n_patches = 0
    _sync(bt.device)
    t0 = time.perf_counter()
    for pos, y in zip(batches, ys):
        x, mask = collate(bt, pos, max_patches, gen)
        loss, _ = model.task_loss(x, mask, torch.as_tensor(y, device=bt.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n_patches += int(mask.sum())
    _sync(bt.device)
    return time.perf_counter() - t0, n_patches


def single_bag_steps(model, bt: BagTensors, batches, ys, max_patches: int, seed: int) -> tuple[float, int]:
    """Seconds and real patches of the batch-size-1 loop over the same bags and patch subsets."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    gen = torch.Generator(device=bt.storage).manual_seed(seed)
    n_patches = 0
    _sync(bt.device)
    t0 = time.perf_counter()
    for pos, y in zip(batches, ys):
        x_all, mask_all = collate(bt, pos, max_patches, gen)  # same subsets as the batched run
        counts = mask_all.sum(dim=1).tolist()
        opt.zero_grad(set_to_none=True)
        for b, n in enumerate(counts):
            x = x_all[b : b + 1, :n]
            mask = torch.ones((1, n), dtype=torch.bool, device=bt.device)
            loss, _ = model.task_loss(x, mask, torch.as_tensor(y[b : b + 1], device=bt.device))
            (loss / len(pos)).backward()
            n_patches += n
        opt.step()
    _sync(bt.device)
    return time.perf_counter() - t0, n_patches


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store folder (default: simulate the quick cohort)")
    parser.add_argument("--fm", default="uni-sim")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-patches", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA > MPS > CPU) or a torch device")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bags = quick_bags(args.store, args.fm)
    bt = BagTensors.from_bags(bags, device)
    task = np.flatnonzero(bags.slides["cohort"].to_numpy() == "task")
    rng = np.random.default_rng(0)
    batches = [rng.choice(task, args.batch, replace=False) for _ in range(args.steps)]
    ys = [bags.slides["egfr"].to_numpy()[b].astype(np.float32) for b in batches]
    torch.manual_seed(0)
    init = build_model(bags.dim, "gap", phi_dropout=0.0).to(device)
    state = {k: v.clone() for k, v in init.state_dict().items()}
    h = init.phi.hidden_dim
    print(f"device={device} cores={os.cpu_count()} threads={torch.get_num_threads()} load={os.getloadavg()[0]:.1f} "
          f"D={bags.dim} H={h} batch={args.batch} max_patches={args.max_patches} steps={args.steps}")

    batched_steps(init, bt, batches[:2], ys[:2], args.max_patches, 1)  # warm-up
    init.load_state_dict(state)
    t_b, n_b = batched_steps(init, bt, batches, ys, args.max_patches, 1)
    init.load_state_dict(state)
    t_1, n_1 = single_bag_steps(init, bt, batches, ys, args.max_patches, 1)
    rate_b, rate_1 = n_b / t_b, n_1 / t_1
    rows = int(round(n_b / args.steps))
    ref = matmul_gflops(rows, bags.dim, h, device)
    achieved = mlp_flops_per_patch(bags.dim, h) * rate_b / 1e9
    print(f"batched trainer : {rate_b:10.0f} patches/s  ({t_b:.2f} s, {n_b} patches)")
    print(f"batch-size-1    : {rate_1:10.0f} patches/s  ({t_1:.2f} s, {n_1} patches)")
    print(f"speed-up        : {rate_b / rate_1:10.2f} x   (target >= 3)")
    print(f"achieved        : {achieved:10.1f} GFLOP/s (phi matmuls, fwd+bwd)")
    print(f"plain matmul    : {ref:10.1f} GFLOP/s ({rows}x{bags.dim} @ {bags.dim}x{h})")
    print(f"fraction        : {achieved / ref:10.2%}   (target >= 50%)")

    cfg = TrainConfig(fm=args.fm, max_steps=args.steps, eval_every=args.steps, task_batch_size=args.batch,
                      max_patches_train=args.max_patches, progress=False, dropout=0.0, device=args.device,
                      amp=False)
    t0 = time.perf_counter()
    train(cfg, bags, bag_tensors=bt)
    t_full = time.perf_counter() - t0
    print(f"full train()    : {n_b / t_full:10.0f} patches/s  ({t_full:.2f} s incl. setup and one validation)")


if __name__ == "__main__":
    main()
