"""Two-flow trainer: task batches and ScanGen batches through one shared phi; M runs at once.

Each step draws a task batch (`task_batch_size` bags of the task cohort, `max_patches_train`
random patches each, padded) and, with ScanGen (or the DANN adversary) on, an independent batch of
K specimens of the `scangen_train` split with all their scans in the scanner subset. Loss:
    L = task_loss + lambda * scangen_loss(z, specimen, scanner, alpha, m; distance, pair_norm)
        + adversary_weight * adversary.loss(z, scanner)
with z at the run's `scangen_level` (`scangen_embeddings`). AdamW (fused kernel on CPU/CUDA,
`make_optimizer`); every `eval_every` steps the validation split (primary-magnification
multiscanner "val" WSIs, all patches) is predicted and the best model by `select_metric` among
evaluations at step >= `select_min_step` is kept; training stops after `patience` eligible
evaluations without improvement (`selection.EarlyStopping`).

`train_group` trains several configs of one `ensemble_group_key` as one stacked model
(`scangen.train.engine`); `train` is its one-member case, so a run alone and the same run inside
an ensemble follow the same code and the same per-member random streams. Random state is private
to each run (numpy Generator, torch generators, forked global torch RNG), so the same config gives
bit-identical CPU results.

Precision: with mixed precision on (`amp` on CUDA, `amp_cpu` on CPU) the task flow (phi and the head)
and phi's ScanGen items run under bfloat16 (or float16) autocast; weights, AdamW, the ScanGen and
adversary losses (distances near 0) and every evaluation stay float32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import polars as pl
import torch
from tqdm.auto import tqdm

from scangen.models import MILModel
from scangen.splits import specimen_splits
from scangen.store.bags import Bags
from scangen.train.batching import BagTensors, collate, same_device
from scangen.train.config import TrainConfig
from scangen.train.engine import FinalOutputs, Member, evaluate, final_outputs, make_member, task_losses
from scangen.train.evaluation import validation_positions  # noqa: F401  (kept importable from here)
from scangen.train.extensions import harmonised_bags
from scangen.train.grouping import ensemble_group_key
from scangen.train.second_flow import second_flow_losses
from scangen.train.selection import selection_key
from scangen.train.stacked import StackedModel
from scangen.train.device import (
    amp_dtype,
    autocast,
    cpu_threads,
    deterministic_mode,
    make_grad_scaler,
    resolve_device,
)
from scangen.train.samplers import ScanGenBatch


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
    outputs: FinalOutputs | None = None
    """The selected model's outputs on the predictions table's bags, from the trainer's batched final pass."""


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


def train(config: TrainConfig, bags: Bags, *, bag_tensors: BagTensors | None = None) -> TrainResult:
    """Train one model on `bags` (all cohorts of one FM) as `config` says: the one-member case of
    `train_group`; see module docstring."""
    return train_group([config], bags, bag_tensors=bag_tensors)[0]


def train_group(configs: list[TrainConfig], bags: Bags, *, bag_tensors: BagTensors | None = None) -> list[TrainResult]:
    """Train configs of one `ensemble_group_key` together (scangen.train.engine); one result per config.

    `bag_tensors` lets a caller reuse bags already moved to the device (they must match `bags`, and
    be harmonised already when `harmonize` is set: then pass the harmonised `bags` too).
    """
    configs = list(configs)
    if len({ensemble_group_key(c) for c in configs}) != 1:
        raise ValueError("configs: expected one or more configs sharing one ensemble_group_key")
    first = configs[0]
    device = resolve_device(first.device)
    dtype = amp_dtype(device, first.amp, first.amp_cpu)
    slides = [assign_splits(bags.slides, c) for c in configs]
    if bag_tensors is None and first.harmonize != "none":
        bags = harmonised_bags(bags, slides[0], first.harmonize)
    bt = bag_tensors if bag_tensors is not None else BagTensors.from_bags(bags, device)
    if len(bt) != len(bags) or bt.dim != bags.dim or not same_device(bt.device, device):
        raise ValueError(
            f"bag_tensors: expected {len(bags)} bags of D={bags.dim} on {device}, "
            f"got {len(bt)} of D={bt.dim} on {bt.device}"
        )
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), deterministic_mode(True), cpu_threads(first.num_threads):
        built = [make_member(c, s, bt, bags.dim, device) for c, s in zip(configs, slides)]
        members = [b[0] for b in built]
        stack = StackedModel([b[1] for b in built])
        _loop(stack, members, bt, device, dtype)
    models = []
    for mem in members:
        model = copy.deepcopy(stack.template)
        model.load_state_dict(mem.best_state)
        models.append(model.train(False))
    # deterministic mode as in training: CUDA index_add_ (inference pooling) is deterministic only in it
    with deterministic_mode(True), cpu_threads(first.num_threads):
        outputs = final_outputs(models, members, bt)
    results = []
    for mem, model, out in zip(members, models, outputs):
        excluded = 0 if mem.second is None else int(mem.second.n_excluded)
        terms = (mem.totals / mem.steps).tolist() if mem.config.use_scangen else [float("nan")] * 2
        results.append(TrainResult(model, mem.config, mem.slides, bt, pl.DataFrame(mem.history), mem.stopper.best_step,
                                   device, dtype, excluded, (terms[0], terms[1]), out))
    return results


def _optimizer(stack: StackedModel, members: list[Member], config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """One fused AdamW over the stacked parameters and every member's adversary."""
    params = list(stack.params.values())
    for mem in members:
        if mem.adversary is not None:
            params += list(mem.adversary.parameters())
    return make_optimizer(params, config, device)


def _compact(stack: StackedModel, opt: torch.optim.AdamW, keep: list[int], members: list[Member],
             config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """Drop stopped members' rows from the stack; carry the kept rows' AdamW state over unchanged."""
    old = {name: opt.state.get(p, {}) for name, p in stack.params.items()}
    adv_state = {p: opt.state[p] for mem in members if mem.adversary is not None for p in mem.adversary.parameters() if p in opt.state}
    stack.keep(keep)
    new = _optimizer(stack, members, config, device)
    for name, p in stack.params.items():
        if old[name]:
            new.state[p] = {k: (v[keep].clone() if k != "step" else v.clone()) for k, v in old[name].items()}
    for p, st in adv_state.items():
        new.state[p] = st
    return new


def _loop(stack: StackedModel, members: list[Member], bt: BagTensors, device: torch.device, dtype: torch.dtype | None) -> None:
    """Optimise all members; fills each member's history, best state and loss-term totals."""
    cfg = members[0].config
    opt = _optimizer(stack, members, cfg, device)
    scaler = make_grad_scaler(device, dtype)
    active = list(range(len(members)))  # members[active[r]] is row r of the stack
    desc = f"{cfg.head} x{len(members)}" if len(members) > 1 else f"{cfg.head}{'+ScanGen' if cfg.use_scangen else ''}"
    bar = tqdm(total=cfg.max_steps, disable=not any(m.config.progress for m in members), desc=desc)
    for step in range(1, cfg.max_steps + 1):
        mems = [members[i] for i in active]
        rows = list(range(len(mems)))
        with autocast(device, dtype):
            losses = task_losses(stack, mems, rows, bt, device)
        total = losses.float().sum()
        sec = [r for r, m in enumerate(mems) if m.second is not None]
        terms: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if sec:
            outs = second_flow_losses(stack, [mems[r] for r in sec], sec, bt, device, lambda: autocast(device, dtype))
            for r, (loss, att, rep) in zip(sec, outs):
                total = total + loss
                terms[r] = (att, rep)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
        zero = torch.zeros((), device=device)
        for r, mem in enumerate(mems):
            att, rep = terms.get(r, (zero, zero))
            parts = torch.stack([losses[r].detach().float(), att + rep, att, rep])
            mem.sums += parts
            mem.totals += parts[2:]
            mem.n_since += 1
            mem.steps += 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            # an evaluation before a member's select_min_step can never be selected: it is made (and
            # recorded) only for members that trace the test split, whose history the figure shows;
            # the others just start a new loss window, so their histories do not depend on it
            shown = [r for r, m in enumerate(mems) if step >= m.config.select_min_step or m.config.trace_test]
            for r in set(rows) - set(shown):
                mems[r].sums.zero_()
                mems[r].n_since = 0
            stopped = _record_evaluation(stack, [mems[r] for r in shown], [rows[r] for r in shown], bt, step)
            if stopped:
                keep = [r for r in rows if r not in stopped]
                active = [active[r] for r in keep]
                if not active:
                    break
                opt = _compact(stack, opt, keep, members, cfg, device)
    bar.close()
    for mem in members:
        if mem.best_state is None:  # unreachable: the last step evaluates and select_min_step <= max_steps
            raise RuntimeError("training ended without any eligible validation evaluation")


def _record_evaluation(stack: StackedModel, mems: list[Member], rows: list[int], bt: BagTensors, step: int) -> list[int]:
    """Evaluate members `mems` (stack rows `rows`), append their history rows, keep improved states;
    the stack rows that stop."""
    if not mems:
        return []
    metrics, outputs = evaluate(stack, mems, rows, bt)
    stopped = []
    for r, mem in enumerate(mems):
        means = (mem.sums / mem.n_since).tolist()
        mem.sums.zero_()
        mem.n_since = 0
        if not mem.config.use_scangen:  # no ScanGen loss: its terms are undefined, not zero
            means[2] = means[3] = float("nan")
        record = {"step": step, "task_loss": means[0], "scangen_loss": means[1], "att_term": means[2], "rep_term": means[3]}
        record.update(metrics[r])
        improved = mem.stopper.update(step, selection_key(mem.config, record))
        if improved:
            mem.best_state = stack.member_state(rows[r])
            mem.best_outputs = outputs[r]
        record["selected"] = float(improved)
        mem.history.append(record)
        if mem.stopper.stop:
            stopped.append(rows[r])
    return stopped
