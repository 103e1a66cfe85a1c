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
from scangen.models import MILModel, build_model
from scangen.splits import TASK_SPLIT, specimen_splits
from scangen.store.bags import Bags
from scangen.train.batching import BagTensors, collate, same_device
from scangen.train.config import TrainConfig, resolve_scanner_subset
from scangen.train.evaluation import split_metrics, split_positions, test_trace, validation_positions
from scangen.train.extensions import harmonised_bags, make_adversary
from scangen.train.selection import EarlyStopping, selection_key
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
    loss_terms: tuple[float, float] = (float("nan"), float("nan"))
    """Mean weighted attraction and repulsion terms of the ScanGen loss over all training steps (NaN without ScanGen)."""


def make_optimizer(
    model: torch.nn.Module | list[torch.Tensor], config: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over `model`'s parameters (or a list of tensors), with torch's fused kernel on CPU and CUDA.

    The fused step updates every parameter in one element-wise pass instead of ~10 kernel calls
    per tensor (the step took ~1 ms instead of 2.5-4.5 ms for GAP on uni-sim, 2 CPU threads); it is
    deterministic and differs from the per-tensor loop only by float rounding.
    """
    fused = True if device.type in ("cpu", "cuda") else None
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else list(model)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def assign_splits(slides: pl.DataFrame, config: TrainConfig) -> pl.DataFrame:
    """Slides with the run's `split` column (multiscanner specimens split, task rows 'task_train')."""
    return specimen_splits(slides, config.split_seed, config.split_fractions)


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


def _evaluate(
    model: MILModel, bt: BagTensors, slides: pl.DataFrame, evals: dict[str, np.ndarray], config: TrainConfig
) -> dict[str, float]:
    """Validation metrics (`split_metrics` with prefix "val") and, with `trace_test`, the traced test
    metrics, of the model in its current state."""
    out: dict[str, float] = {}
    for split, pos in evals.items():
        logits = predict_logits(model, bt, pos, patch_budget=config.eval_patch_budget)
        if split == "val":
            out.update(split_metrics(logits, slides[pos], "val"))
        else:
            out.update(test_trace(logits, slides[pos]))
    return out


def _task_pool(slides: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions and EGFR labels of the task training pool."""
    rows = slides.with_row_index("_pos").filter(pl.col("split") == TASK_SPLIT)
    return rows["_pos"].to_numpy().astype(np.int64), rows["egfr"].to_numpy()


def train(config: TrainConfig, bags: Bags, *, bag_tensors: BagTensors | None = None) -> TrainResult:
    """Train one model on `bags` (all cohorts of one FM) as `config` says; see module docstring.

    `bag_tensors` lets a caller reuse bags already moved to the device (they must match `bags`, and
    be harmonised already when `config.harmonize` is set: then pass the harmonised `bags` too).
    """
    device = resolve_device(config.device)
    dtype = amp_dtype(device, config.amp)
    slides = assign_splits(bags.slides, config)
    if bag_tensors is None and config.harmonize != "none":
        bags = harmonised_bags(bags, slides, config.harmonize)
    bt = bag_tensors if bag_tensors is not None else BagTensors.from_bags(bags, device)
    if len(bt) != len(bags) or bt.dim != bags.dim or not same_device(bt.device, device):
        raise ValueError(
            f"bag_tensors: expected {len(bags)} bags of D={bags.dim} on {device}, "
            f"got {len(bt)} of D={bt.dim} on {bt.device}"
        )
    evals = {"val": validation_positions(slides)}
    if config.trace_test:
        evals["test"] = split_positions(slides, "test")
    val_y = slides[evals["val"]]["egfr"].to_numpy()
    if np.unique(val_y).size < 2:
        raise ValueError("validation split: holds a single EGFR class; AUC-based selection impossible")
    task_pos, task_y = _task_pool(slides)
    rng = np.random.default_rng(config.seed)
    task_sampler = TaskSampler(task_pos, task_y, config.task_batch_size, rng)
    sg_sampler = None
    if config.use_scangen or config.adversary_weight > 0:
        subset = resolve_scanner_subset(config, slides)
        sg_sampler = ScanGenSampler(slides, config.scangen_k, rng, subset, config.include_20x_in_scangen)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), deterministic_mode(True), cpu_threads(config.num_threads):
        torch.manual_seed(config.seed)
        model = build_model(bags.dim, config.head, config.hidden_dim, phi_dropout=config.dropout, **config.head_kwargs)
        model.to(device)
        adversary = None
        if config.adversary_weight > 0:
            assert sg_sampler is not None
            adversary = make_adversary(model.phi.out_dim, len(sg_sampler.scanner_labels)).to(device)
        gen_store = torch.Generator(device=bt.storage).manual_seed(config.seed + 1)
        same = same_device(bt.storage, device)
        gen_dev = gen_store if same else torch.Generator(device=device).manual_seed(config.seed + 2)
        flows = Flows(task_sampler, sg_sampler, adversary, gen_store, gen_dev)
        history, best_step, best_state, terms = _loop(config, model, bt, slides, flows, evals, device, dtype)
    model.load_state_dict(best_state)
    model.eval()
    excluded = 0 if sg_sampler is None else int(sg_sampler.n_excluded)
    return TrainResult(model, config, slides, bt, pl.DataFrame(history), best_step, device, dtype, excluded, terms)


@dataclass
class Flows:
    """The run's data flows and random generators: task sampler, second-flow sampler (ScanGen and/or
    adversary; None for a plain baseline), the DANN adversary (or None), and the torch generators of
    patch subsampling (on the feature storage) and of the model's own draws (compute device)."""

    task: TaskSampler
    second: ScanGenSampler | None
    adversary: torch.nn.Module | None
    gen_store: torch.Generator
    gen_dev: torch.Generator


def _second_flow_loss(
    config: TrainConfig, model: MILModel, bt: BagTensors, flows: Flows, dtype: torch.dtype | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lam * ScanGen loss + adversary_weight * adversary loss, weighted attraction, weighted repulsion)
    of one second-flow batch; the ScanGen parts are zero when ScanGen is off."""
    assert flows.second is not None
    with autocast(device, dtype):
        z, spec, scan = scangen_embeddings(model, bt, flows.second.next(), config, flows.gen_store)
    # Cosine distances near 0 need full precision: bf16 rounds cos to ~0.004 steps, which would erase
    # the attraction term; so the loss runs outside autocast, in float32.
    z = z.float()
    zero = z.sum() * 0.0
    loss, att, rep = zero, zero.detach(), zero.detach()
    if config.use_scangen:
        sg, parts = scangen_loss(z, spec, scan, config.alpha, config.margin, distance=config.scangen_distance,
                                 pair_norm=config.scangen_pair_norm, return_terms=True)
        if parts["n_att"] == 0 or parts["n_rep"] == 0:
            raise RuntimeError(f"ScanGen batch without both pair kinds (|P|={parts['n_att']}, |N|={parts['n_rep']})")
        loss = loss + config.lam * sg
        att, rep = parts["attraction"].detach(), parts["repulsion"].detach()
    if flows.adversary is not None:
        loss = loss + config.adversary_weight * flows.adversary.loss(z, scan)
    return loss, att, rep


def _loop(
    config: TrainConfig,
    model: MILModel,
    bt: BagTensors,
    slides: pl.DataFrame,
    flows: Flows,
    evals: dict[str, np.ndarray],
    device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[list[dict[str, float]], int, dict[str, torch.Tensor], tuple[float, float]]:
    """The optimisation loop; returns the evaluation history, best step, best model state and the
    mean weighted (attraction, repulsion) terms over all steps (NaN without ScanGen)."""
    params = list(model.parameters()) + ([] if flows.adversary is None else list(flows.adversary.parameters()))
    opt = make_optimizer(params, config, device)
    scaler = make_grad_scaler(device, dtype)
    history: list[dict[str, float]] = []
    stopper = EarlyStopping.for_config(config)
    best_state = None
    sums = torch.zeros(4, device=device)  # task, scangen (lam-free), attraction, repulsion
    totals = torch.zeros(2, device=device)
    n_since = 0
    model.train()
    bar = tqdm(total=config.max_steps, disable=not config.progress, desc=f"{config.head}{'+ScanGen' if config.use_scangen else ''}")
    for step in range(1, config.max_steps + 1):
        pos, y = flows.task.next()
        x, mask = collate(bt, pos, config.max_patches_train, flows.gen_store)
        y_t = torch.as_tensor(y, device=device)
        with autocast(device, dtype):
            task_loss, _ = model.task_loss(x, mask, y_t, generator=flows.gen_dev)
        loss = task_loss
        att = rep = torch.zeros((), device=device)
        if flows.second is not None:
            extra, att, rep = _second_flow_loss(config, model, bt, flows, dtype, device)
            loss = task_loss.float() + extra
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        parts = torch.stack([task_loss.detach().float(), att + rep, att, rep])
        sums += parts
        totals += parts[2:]
        n_since += 1
        bar.update(1)
        if step % config.eval_every == 0 or step == config.max_steps:
            means = (sums / n_since).tolist()
            sums.zero_()
            n_since = 0
            if not config.use_scangen:  # no ScanGen loss: its terms are undefined, not zero
                means[2] = means[3] = float("nan")
            record = {"step": step, "task_loss": means[0], "scangen_loss": means[1], "att_term": means[2], "rep_term": means[3]}
            record.update(_evaluate(model, bt, slides, evals, config))
            improved = stopper.update(step, selection_key(config, record))
            if improved:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            record["selected"] = float(improved)
            history.append(record)
            bar.set_postfix(val_auc=f"{record['val_auc']:.3f}", val_cov=f"{record['val_cov']:.3f}")
            if stopper.stop:
                break
    bar.close()
    if best_state is None:  # unreachable: the last step always evaluates and select_min_step <= max_steps
        raise RuntimeError("training ended without any eligible validation evaluation")
    mean_terms = (totals / step).tolist() if config.use_scangen else [float("nan"), float("nan")]
    return history, stopper.best_step, best_state, (mean_terms[0], mean_terms[1])
