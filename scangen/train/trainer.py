"""Two-flow trainer: EGFR task batches and ScanGen batches through one shared phi.

Each step draws a task batch (`task_batch_size` bags of the task cohort, `max_patches_train`
random patches each, padded) and, with ScanGen on, an independent batch of K specimens of the
`scangen_train` split with all their scans in the scanner subset. Loss:
    L = model.task_loss(x, mask, y) + lambda * scangen_loss(z, specimen, scanner, alpha, m)
with z = phi of slide-mean embeddings ("slide"), of random patches ("patch"), or the masked mean
of phi over `max_patches_train` random patches per WSI ("bag", GAP's bag embedding); see
`scangen_embeddings`. AdamW (fused kernel on CPU/CUDA, `make_optimizer`); every `eval_every` steps
the validation split (multiscanner "val", 40x WSIs, all patches) is predicted and the best model by
`select_metric` is kept; training stops after `patience` evaluations without
improvement. Random state is private to the run (numpy Generator, torch generators, forked global
torch RNG), so the same config gives bit-identical CPU results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from scangen.losses import scangen_loss
from scangen.metrics import roc_auc, scanner_cov
from scangen.metrics.scanner_variance import scanner_variance
from scangen.models import MILModel, build_model
from scangen.splits import TASK_SPLIT, specimen_splits
from scangen.store.bags import Bags
from scangen.train.batching import BagTensors, collate, same_device
from scangen.train.config import TrainConfig
from scangen.train.device import (
    amp_dtype,
    autocast,
    cpu_threads,
    deterministic_mode,
    make_grad_scaler,
    resolve_device,
)
from scangen.train.predict import predict_logits
from scangen.train.samplers import ScanGenBatch, ScanGenSampler, TaskSampler


@dataclass
class TrainResult:
    """Trained model (best validation state, eval mode) and the record of how it was chosen."""

    model: MILModel
    config: TrainConfig
    slides: pl.DataFrame
    bag_tensors: BagTensors
    history: pl.DataFrame
    best_step: int
    device: torch.device
    amp: torch.dtype | None
    scangen_excluded: int = 0
    """Specimens of the ScanGen pool left out for having fewer than two eligible scans (0 without ScanGen)."""


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `model`'s parameters, with torch's fused kernel on CPU and CUDA.

    The fused step updates every parameter in one element-wise pass instead of ~10 kernel calls
    per tensor (the step took ~1 ms instead of 2.5-4.5 ms for GAP on uni-sim, 2 CPU threads); it is
    deterministic and differs from the per-tensor loop only by float rounding.
    """
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def assign_splits(slides: pl.DataFrame, config: TrainConfig) -> pl.DataFrame:
    """Slides with the run's `split` column (multiscanner specimens split, task rows 'task_train')."""
    return specimen_splits(slides, config.split_seed, config.split_fractions)


def validation_positions(slides: pl.DataFrame) -> np.ndarray:
    """Bag positions of the 40x multiscanner validation WSIs (model selection uses only these)."""
    sel = (pl.col("cohort") == "multiscanner") & (pl.col("split") == "val") & (pl.col("magnification") == 40)
    pos = slides.with_row_index("_pos").filter(sel)["_pos"].to_numpy().astype(np.int64)
    if pos.size == 0:
        raise ValueError("validation split: no 40x multiscanner WSIs in split 'val'")
    return pos


def _bce(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits (numerically stable form)."""
    return float(np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))))


def _score(config: TrainConfig, auc: float, loss: float, cov: float, pcov: float, share: float) -> tuple[float, float]:
    """Selection key (higher is better), compared as a tuple: see TrainConfig.select_metric."""
    if config.select_metric == "loss":
        return (-loss, auc)
    if config.select_metric == "auc_cov":
        return (auc - config.cov_weight * cov, -loss)
    if config.select_metric == "auc_pcov":
        return (auc - config.cov_weight * pcov, -loss)
    if config.select_metric == "auc_share":
        return (auc - config.cov_weight * share, -loss)
    return (auc, -loss)


def scangen_embeddings(
    model: MILModel, bt: BagTensors, batch: ScanGenBatch, config: TrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projected ScanGen items z (n, H) with specimen and scanner ids (n,) on the compute device.

    Levels (`config.scangen_level`), for a batch of W WSIs:
    - "slide": z_w = phi(mean_k e_k) over all patches of WSI w; n = W.
    - "patch": `scangen_patches` random patches per WSI, z = phi(e_k), each labelled with its WSI's
      specimen and scanner; n = sum of kept patches.
    - "bag": z_w = sum_k m_wk phi(e_wk) / sum_k m_wk over `max_patches_train` random patches of WSI w
      (padded batch x (W, N, D), mask (W, N)); n = W. For GAP this is exactly the bag embedding
      the classifier sees; for the other heads it is still the masked mean of phi outputs (not the
      head's attention-weighted pooling), so the loss acts on phi, the part shared by all heads.
    """
    pos = torch.as_tensor(batch.positions, device=bt.device)
    spec = torch.as_tensor(batch.specimen, device=bt.device)
    scan = torch.as_tensor(batch.scanner, device=bt.device)
    if config.scangen_level == "slide":
        return model.project(bt.means[pos]), spec, scan
    if config.scangen_level == "bag":
        x, mask = collate(bt, batch.positions, config.max_patches_train, gen)
        h = model.embed(x, mask)  # (W, N, H), zeros at padding
        w = mask.to(h.dtype)
        return h.sum(dim=1) / w.sum(dim=1, keepdim=True), spec, scan
    x, mask = collate(bt, batch.positions, config.scangen_patches, gen)
    counts = mask.sum(dim=1)
    return model.project(x[mask]), spec.repeat_interleave(counts), scan.repeat_interleave(counts)


def _validation(
    model: MILModel, bt: BagTensors, slides: pl.DataFrame, pos: np.ndarray, config: TrainConfig, amp: torch.dtype | None
) -> dict[str, float]:
    """Val metrics of the 40x validation WSIs: AUC, BCE, scanner CoV of logits (`val_cov`) and of
    probabilities (`val_pcov`), and the scale-free scanner share of logits (`val_share`): mean over
    specimens of std_c(logit) divided by the std over specimens of their mean logit."""
    logits = predict_logits(model, bt, pos, patch_budget=config.eval_patch_budget, amp=amp)
    rows = slides[pos]
    y = rows["egfr"].to_numpy().astype(np.float64)
    return {
        "val_auc": roc_auc(y, logits),
        "val_loss": _bce(logits, y),
        "val_cov": scanner_cov(logits, rows["specimen_id"].to_numpy()),
        "val_pcov": scanner_cov(logits, rows["specimen_id"].to_numpy(), on="prob"),
        "val_share": scanner_variance(logits, rows["specimen_id"].to_numpy(), rows["scanner"].to_numpy()).scanner_share,
    }


def _task_pool(slides: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions and EGFR labels of the task training pool."""
    rows = slides.with_row_index("_pos").filter(pl.col("split") == TASK_SPLIT)
    return rows["_pos"].to_numpy().astype(np.int64), rows["egfr"].to_numpy()


def train(config: TrainConfig, bags: Bags, *, bag_tensors: BagTensors | None = None) -> TrainResult:
    """Train one model on `bags` (all cohorts of one FM) as `config` says; see module docstring.

    `bag_tensors` lets a caller reuse bags already moved to the device (they must match `bags`).
    """
    device = resolve_device(config.device)
    dtype = amp_dtype(device, config.amp)
    slides = assign_splits(bags.slides, config)
    bt = bag_tensors if bag_tensors is not None else BagTensors.from_bags(bags, device)
    if len(bt) != len(bags) or bt.dim != bags.dim or not same_device(bt.device, device):
        raise ValueError(
            f"bag_tensors: expected {len(bags)} bags of D={bags.dim} on {device}, "
            f"got {len(bt)} of D={bt.dim} on {bt.device}"
        )
    val_pos = validation_positions(slides)
    val_y = slides[val_pos]["egfr"].to_numpy()
    if np.unique(val_y).size < 2:
        raise ValueError("validation split: holds a single EGFR class; AUC-based selection impossible")
    task_pos, task_y = _task_pool(slides)
    rng = np.random.default_rng(config.seed)
    task_sampler = TaskSampler(task_pos, task_y, config.task_batch_size, rng)
    sg_sampler = None
    if config.use_scangen:
        sg_sampler = ScanGenSampler(
            slides, config.scangen_k, rng, config.scanner_subset, config.include_20x_in_scangen
        )
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), deterministic_mode(True), cpu_threads(config.num_threads):
        torch.manual_seed(config.seed)
        model = build_model(bags.dim, config.head, config.hidden_dim, phi_dropout=config.dropout, **config.head_kwargs)
        model.to(device)
        gen_store = torch.Generator(device=bt.storage).manual_seed(config.seed + 1)
        same = same_device(bt.storage, device)
        gen_dev = gen_store if same else torch.Generator(device=device).manual_seed(config.seed + 2)
        history, best_step, best_state = _loop(
            config, model, bt, slides, task_sampler, sg_sampler, val_pos, device, dtype, gen_store, gen_dev
        )
    model.load_state_dict(best_state)
    model.eval()
    excluded = 0 if sg_sampler is None else int(sg_sampler.n_excluded)
    return TrainResult(model, config, slides, bt, pl.DataFrame(history), best_step, device, dtype, excluded)


def _loop(
    config: TrainConfig,
    model: MILModel,
    bt: BagTensors,
    slides: pl.DataFrame,
    task_sampler: TaskSampler,
    sg_sampler: ScanGenSampler | None,
    val_pos: np.ndarray,
    device: torch.device,
    dtype: torch.dtype | None,
    gen_store: torch.Generator,
    gen_dev: torch.Generator,
) -> tuple[list[dict[str, float]], int, dict[str, torch.Tensor]]:
    """The optimisation loop; returns the evaluation history, best step and best state."""
    opt = make_optimizer(model, config, device)
    scaler = make_grad_scaler(device, dtype)
    history: list[dict[str, float]] = []
    best_key: tuple[float, float] | None = None
    best_step, best_state, stale = 0, None, 0
    sums = torch.zeros(2, device=device)
    n_since = 0
    model.train()
    bar = tqdm(total=config.max_steps, disable=not config.progress, desc=f"{config.head}{'+ScanGen' if config.use_scangen else ''}")
    for step in range(1, config.max_steps + 1):
        pos, y = task_sampler.next()
        x, mask = collate(bt, pos, config.max_patches_train, gen_store)
        y_t = torch.as_tensor(y, device=device)
        with autocast(device, dtype):
            task_loss, _ = model.task_loss(x, mask, y_t, generator=gen_dev)
            loss = task_loss
            sg = torch.zeros((), device=device)
            if sg_sampler is not None:
                z, spec, scan = scangen_embeddings(model, bt, sg_sampler.next(), config, gen_store)
        if sg_sampler is not None:
            # Cosine distances near 0 need full precision: bf16 rounds cos to ~0.004 steps, which
            # would erase the attraction term; so the loss runs outside autocast, in float32.
            sg, (n_att, n_rep) = scangen_loss(z.float(), spec, scan, config.alpha, config.margin, return_counts=True)
            if n_att == 0 or n_rep == 0:
                raise RuntimeError(f"ScanGen batch without both pair kinds (|P|={n_att}, |N|={n_rep})")
            loss = task_loss.float() + config.lam * sg
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sums += torch.stack([task_loss.detach().float(), sg.detach().float()])
        n_since += 1
        bar.update(1)
        if step % config.eval_every == 0 or step == config.max_steps:
            means = (sums / n_since).tolist()
            sums.zero_()
            n_since = 0
            record = {"step": step, "task_loss": means[0], "scangen_loss": means[1]}
            record.update(_validation(model, bt, slides, val_pos, config, dtype))
            key = _score(config, record["val_auc"], record["val_loss"], record["val_cov"], record["val_pcov"], record["val_share"])
            improved = best_key is None or key > best_key
            if improved:
                best_key, best_step, stale = key, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            record["selected"] = float(improved)
            history.append(record)
            bar.set_postfix(val_auc=f"{record['val_auc']:.3f}", val_cov=f"{record['val_cov']:.3f}")
            if stale >= config.patience:
                break
    bar.close()
    if best_state is None:  # unreachable: the last step always evaluates
        raise RuntimeError("training ended without any validation evaluation")
    return history, best_step, best_state
