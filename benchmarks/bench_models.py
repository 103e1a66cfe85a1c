"""Forward+backward throughput of MILModel per head (phi + head), and of the ScanGen loss.

Usage: python benchmarks/bench_models.py [--dim 1536] [--batch 16] [--patches 512] [--steps 5]
Prints bags per second per head and the ratio to GAP on the same device (CUDA when present).
Timings are measurements, never asserted in tests.
"""

from __future__ import annotations

import argparse
import time

import torch

from scangen.losses import scangen_loss
from scangen.models import HEADS, build_model, count_parameters


def ragged_batch(batch: int, patches: int, dim: int, device: torch.device, seed: int = 0):
    """Padded batch whose bag sizes spread uniformly over [patches/2, patches]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(patches // 2, patches + 1, (batch,), generator=g)
    x = torch.randn(batch, patches, dim, generator=g)
    mask = torch.arange(patches).unsqueeze(0) < lengths.unsqueeze(1)
    y = (torch.rand(batch, generator=g) < 0.5).float()
    return x.to(device), mask.to(device), y.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patches", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"D={args.dim} B={args.batch} N<={args.patches}")
    results = {name: time_head(name, args, device) for name in HEADS}
    gap = results["gap"][0]
    print(f"{'head':<12}{'params':>10}{'s/step':>10}{'bags/s':>10}{'x GAP':>8}")
    for name, (seconds, params) in results.items():
        print(f"{name:<12}{params:>10}{seconds:>10.4f}{args.batch / seconds:>10.1f}{seconds / gap:>8.2f}")
    print(f"scangen_loss (n=256, H=512) forward+backward: {time_scangen(args, device) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
