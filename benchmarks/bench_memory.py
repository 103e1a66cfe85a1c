"""Bounded memory: peak RSS of a training run + its evaluation while the store grows, and step speed.

For each store size (GB of float16 patch embeddings, generated for the benchmark: random slides of
the two cohorts, D = --dim, about --patches patches per slide) the script, each part in a fresh
subprocess so that no measurement inherits another's memory:
1. writes the store (write_store), then builds its memory-mapped cache (`load_bags(mmap=True)` on
   first use), reporting the build's peak RSS and time;
2. trains and evaluates one GAP model on the map (`load_bags(mmap=True)`, `train`, `prediction_table`)
   and, up to --memory-max-gb, the same config on the in-memory float32 path (`load_bags`), and
   reports peak RSS (VmHWM), the peaks of its anonymous and file-backed parts (sampled every 10 ms),
   wall time, and the largest |logit| difference between the two paths (same numbers expected);
3. at the largest size with in-memory runs, times --speed-steps training steps (collate + forward/backward + AdamW, the
   trainer's task step) on the in-memory path, on the map with a warm page cache, and on the map
   after evicting the cache files from the page cache (posix_fadvise DONTNEED on each file: a cold
   read for this benchmark's files only, without dropping every other process's cache).
Targets (issue 16): map peak RSS flat within 20% across a 4x growth and below half the store size
at the largest; map steps/s within 1.5x of in-memory when warm. Load averages are printed with
every line (other processes may share the CPUs). Generated stores are deleted unless --keep.

Usage: python benchmarks/bench_memory.py [--sizes-gb 1 2 4] [--dim 1536] [--patches 1000]
       [--steps 40] [--eval-every 20] [--eval-budget 16384] [--speed-steps 30] [--memory-max-gb 2]
       [--root DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FM = "bench-sim"
FIELDS = ("VmRSS", "RssAnon", "RssFile")


class RssSampler:
    """Peaks of VmRSS / RssAnon / RssFile (MiB) of this process, sampled every `period` seconds."""

    def __init__(self, period: float = 0.01):
        self.peak = dict.fromkeys(FIELDS, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                self.peak[key] = max(self.peak[key], int(value.split()[0]) / 1024)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM")]
        return {"peak_rss_mib": int(hwm[0].split()[1]) / 1024, **{f"peak_{k}_mib": v for k, v in self.peak.items()}}


def make_store(store: Path, size_gb: float, dim: int, patches: int, seed: int = 0) -> dict:
    """Write a synthetic two-cohort store holding about `size_gb` GB of float16 embeddings."""
    import polars as pl

    from scangen.constants import SCANNERS_40X
    from scangen.store import Bags, write_store

    rng = np.random.default_rng(seed)
    n_slides = max(60, round(size_gb * 1e9 / (patches * dim * 2)))
    n_spec = max(6, round(n_slides * 2 / 3 / len(SCANNERS_40X)))
    n_task = max(8, n_slides - n_spec * len(SCANNERS_40X))
    rows = [{"slide_id": f"t{i}", "specimen_id": f"ts{i}", "cohort": "task", "scanner": "AT2", "egfr": i % 2}
            for i in range(n_task)]
    rows += [{"slide_id": f"m{s}-{sc}", "specimen_id": f"ms{s}", "cohort": "multiscanner", "scanner": sc, "egfr": s % 2}
             for s in range(n_spec) for sc in SCANNERS_40X]
    slides = pl.DataFrame(rows).with_columns(
        pl.lit(40, dtype=pl.Int16).alias("magnification"), pl.col("egfr").cast(pl.Int8),
        pl.lit(None, dtype=pl.String).alias("site"), pl.lit(None, dtype=pl.String).alias("split"),
        pl.lit(True).alias("simulated"),
    ).select("slide_id", "specimen_id", "cohort", "scanner", "magnification", "egfr", "site", "split", "simulated")
    lengths = rng.integers(patches // 2, patches * 3 // 2 + 1, slides.height)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    base = rng.standard_normal((4096, dim)).astype(np.float32)
    feats = np.empty((offsets[-1], dim), dtype=np.float16)
    shift = rng.standard_normal((slides.height, dim)).astype(np.float32) * 0.1
    shift[:, :16] += 0.3 * slides["egfr"].to_numpy()[:, None]  # a learnable label signal
    for i in range(slides.height):
        pick = rng.integers(0, len(base), lengths[i])
        feats[offsets[i] : offsets[i + 1]] = base[pick] + shift[i]
    coords = np.zeros((offsets[-1], 2), dtype=np.int32)
    write_store(store, slides, {FM: Bags(slides, feats, offsets, coords)}, {"simulated": True, "models": {}})
    return {"slides": slides.height, "patches": int(offsets[-1]), "gb": feats.nbytes / 1e9}


def child_build(store: Path) -> dict:
    from scangen.store import load_bags

    t0 = time.perf_counter()
    load_bags(store, FM, mmap=True)
    return {"seconds": time.perf_counter() - t0}


def child_run(store: Path, mode: str, args: argparse.Namespace, out: Path) -> dict:
    """Load (map or in-memory float32), train, predict val/test; predictions go to `out`."""
    from scangen.store import load_bags
    from scangen.train import TrainConfig, train
    from scangen.train.experiment import prediction_table

    t0 = time.perf_counter()
    bags = load_bags(store, FM, mmap=mode == "mmap")
    t_load = time.perf_counter() - t0
    cfg = TrainConfig(store=str(store), fm=FM, max_steps=args.steps, eval_every=args.eval_every, patience=1000,
                      eval_patch_budget=args.eval_budget, num_threads=1, device="cpu", progress=False)
    result = train(cfg, bags)
    table = prediction_table(result)
    table.write_parquet(out)
    return {"load_s": t_load, "train_eval_s": time.perf_counter() - t0 - t_load, "predictions": table.height}


def child_speed(store: Path, mode: str, steps: int, warmup: int) -> dict:
    """Steps/s of the trainer's task step (collate + forward/backward + AdamW) on one thread."""
    import torch

    from scangen.models import build_model
    from scangen.store import load_bags
    from scangen.train import TrainConfig
    from scangen.train.batching import BagTensors, collate
    from scangen.train.samplers import TaskSampler
    from scangen.train.trainer import assign_splits, make_optimizer, _task_pool

    torch.set_num_threads(1)
    cfg = TrainConfig(fm=FM, device="cpu")
    bags = load_bags(store, FM, mmap=mode != "memory")
    device = torch.device("cpu")
    bt = BagTensors.from_bags(bags, device)
    pos, y = _task_pool(assign_splits(bags.slides, cfg))
    sampler = TaskSampler(pos, y, cfg.task_batch_size, np.random.default_rng(0))
    torch.manual_seed(0)
    model = build_model(bags.dim, "gap", None)
    opt = make_optimizer(model, cfg, device)
    gen = torch.Generator().manual_seed(1)

    def step() -> None:
        p, labels = sampler.next()
        x, mask = collate(bt, p, cfg.max_patches_train, gen)
        loss, _ = model.task_loss(x, mask, torch.as_tensor(labels), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t0
    return {"steps_per_s": steps / seconds, "major_faults": resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults0}


def evict(folder: Path) -> None:
    """Drop `folder`'s files from the page cache (clean pages of files no process maps)."""
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def spawn(*argv: str) -> dict:
    """Run this script as a child with `argv`; its last stdout line is a JSON result."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> None:
    sampler = RssSampler()
    store = Path(args.store)
    if args.child == "make":
        out = make_store(store, args.size, args.dim, args.patches)
    elif args.child == "build":
        out = child_build(store)
    elif args.child == "run":
        out = child_run(store, args.mode, args, Path(args.out))
    else:
        out = child_speed(store, args.mode, args.speed_steps, 0 if args.mode == "cold" else 3)
    print(json.dumps({**out, **sampler.stop()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--patches", type=int, default=1000)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-budget", type=int, default=16384)
    p.add_argument("--speed-steps", type=int, default=30)
    p.add_argument("--memory-max-gb", type=float, default=2.0,
                   help="in-memory float32 runs (2x the store in RAM) only up to this store size")
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--child", choices=["make", "build", "run", "speed"])
    p.add_argument("--store"), p.add_argument("--mode"), p.add_argument("--out"), p.add_argument("--size", type=float)
    args = p.parse_args()
    if args.child:
        return child_main(args)
    common = ["--dim", str(args.dim), "--patches", str(args.patches), "--steps", str(args.steps),
              "--eval-every", str(args.eval_every), "--eval-budget", str(args.eval_budget),
              "--speed-steps", str(args.speed_steps)]
    root = Path(tempfile.mkdtemp(prefix="bench_memory_", dir=args.root))
    print(f"root {root}; D={args.dim}, ~{args.patches} patches/slide, {args.steps} steps, eval every "
          f"{args.eval_every}, eval patch budget {args.eval_budget}, 1 torch thread; {load()}", flush=True)
    rows = []
    sizes = sorted(args.sizes_gb)
    in_memory = [s for s in sizes if s <= args.memory_max_gb]
    speed_size = max(in_memory) if in_memory else None
    try:
        for size in sizes:
            store = root / f"store-{size:g}gb"
            made = spawn("--child", "make", "--store", str(store), "--size", str(size), *common)
            built = spawn("--child", "build", "--store", str(store), *common)
            print(f"{size:g} GB: {made['slides']} slides, {made['patches']} patches, {made['gb']:.2f} GB float16; "
                  f"cache built in {built['seconds']:.1f} s, build peak RSS {built['peak_rss_mib']:.0f} MiB; {load()}",
                  flush=True)
            row = {"gb": made["gb"]}
            for mode in ("mmap", "memory") if size in in_memory else ("mmap",):
                res = spawn("--child", "run", "--mode", mode, "--store", str(store), "--out", str(root / f"{mode}.parquet"),
                            *common)
                row[mode] = res
                print(f"  {mode:6s}: peak RSS {res['peak_rss_mib']:7.0f} MiB (anon {res['peak_RssAnon_mib']:.0f}, "
                      f"file {res['peak_RssFile_mib']:.0f}); load {res['load_s']:.1f} s, train+eval "
                      f"{res['train_eval_s']:.1f} s; {load()}", flush=True)
            if size in in_memory:
                import polars as pl

                a, b = (pl.read_parquet(root / f"{m}.parquet")["logit"].to_numpy() for m in ("mmap", "memory"))
                row["max_logit_diff"] = float(np.abs(a - b).max())
                print(f"  max |logit(mmap) - logit(memory)| = {row['max_logit_diff']:.3g}", flush=True)
            rows.append(row)
            if size == speed_size:
                speed = {m: spawn("--child", "speed", "--mode", m, "--store", str(store), *common)
                         for m in ("memory", "mmap")}
                evict(store / "memmap")
                speed["cold"] = spawn("--child", "speed", "--mode", "cold", "--store", str(store), *common)
                for m, r in speed.items():
                    print(f"  speed {m:6s}: {r['steps_per_s']:.2f} steps/s ({r['major_faults']} major faults); {load()}")
                print(f"  in-memory / map steps/s: warm {speed['memory']['steps_per_s'] / speed['mmap']['steps_per_s']:.2f}x, "
                      f"cold {speed['memory']['steps_per_s'] / speed['cold']['steps_per_s']:.2f}x (target warm <= 1.5x)")
            if not args.keep:
                shutil.rmtree(store)
        peaks = [r["mmap"]["peak_rss_mib"] for r in rows]
        print(f"map peak RSS across {rows[0]['gb']:.2f} -> {rows[-1]['gb']:.2f} GB: "
              f"{' / '.join(f'{v:.0f}' for v in peaks)} MiB; max/min {max(peaks) / min(peaks):.2f} (target <= 1.20); "
              f"largest / store size {peaks[-1] * 2**20 / (rows[-1]['gb'] * 1e9):.2f} (target < 0.50)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
