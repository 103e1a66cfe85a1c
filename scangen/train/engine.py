"""The batched trainer: M runs of one `ensemble_group_key` trained as one stacked model.

Each step, for every active member a: a task batch from its own sampler (x_a (B, N_a, D), padded to
the common N), phi for all members in one batched pass (`StackedModel.phi`), the head's task loss
per member (vmapped or looped), and for members with a second flow (ScanGen and/or the DANN
adversary) their own ScanGen batch; the summed loss is backpropagated once (member parameters are
disjoint, so each gets exactly its own gradient) and one fused AdamW step updates all members
(element-wise, so identical to per-member optimisers). Every `eval_every` steps the members are
validated in a batched pass (members sharing a split share the validation bags); each member keeps
its own selection record and early stopping; a stopped member's selected weights are kept and it
leaves the stacked model (its rows and optimiser state are dropped), so the others run on.

Random streams are per member and independent of the ensemble's size: numpy Generator(seed) for
the samplers, a torch generator seeded seed + 1 for patch subsampling (on the feature storage), one
seeded seed + 2 for dropout and head augmentations (on the compute device), the global RNG seeded
with seed for initialisation (forked), and a per-member CPU RNG state for head dropout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from scangen.models import MILModel, build_model
from scangen.train.batching import BagTensors, collate, inference_batches
from scangen.train.config import TrainConfig, resolve_scanner_subset
from scangen.train.evaluation import split_metrics, split_positions, test_trace, validation_positions
from scangen.train.extensions import make_adversary
from scangen.train.samplers import ScanGenSampler, TaskSampler
from scangen.train.selection import EarlyStopping
from scangen.train.stacked import StackedModel
from scangen.splits import TASK_SPLIT


@dataclass
class Member:
    """One run inside the ensemble: its config, split, samplers, generators and selection record."""

    config: TrainConfig
    slides: pl.DataFrame
    task: TaskSampler
    second: ScanGenSampler | None
    adversary: torch.nn.Module | None
    gen_store: torch.Generator
    gen_dev: torch.Generator
    rng_state: torch.Tensor
    evals: dict[str, np.ndarray]
    stopper: EarlyStopping
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    """(positions, logits, pooled, mean_phi) of the evaluation that selected best_state, per split: the
    final pass reuses them instead of predicting those bags again."""
    sums: torch.Tensor | None = None
    totals: torch.Tensor | None = None
    n_since: int = 0
    steps: int = 0


def make_member(config: TrainConfig, slides: pl.DataFrame, bt: BagTensors, in_dim: int, device: torch.device) -> tuple[Member, MILModel]:
    """A member and its freshly initialised model (the global RNG seeded with config.seed first)."""
    evals = {"val": validation_positions(slides)}
    if config.trace_test:
        evals["test"] = split_positions(slides, "test")
    if np.unique(slides[evals["val"]]["egfr"].to_numpy()).size < 2:
        raise ValueError("validation split: holds a single class of the task label; AUC-based selection impossible")
    task_rows = slides.with_row_index("_pos").filter(pl.col("split") == TASK_SPLIT)
    rng = np.random.default_rng(config.seed)
    task = TaskSampler(task_rows["_pos"].to_numpy().astype(np.int64), task_rows["egfr"].to_numpy(), config.task_batch_size, rng)
    second = None
    if config.use_scangen or config.adversary_weight > 0:
        subset = resolve_scanner_subset(config, slides)
        second = ScanGenSampler(slides, config.scangen_k, rng, subset, config.include_20x_in_scangen)
    torch.manual_seed(config.seed)
    model = build_model(in_dim, config.head, config.hidden_dim, phi_dropout=config.dropout, **config.head_kwargs).to(device)
    adversary = None
    if config.adversary_weight > 0:
        assert second is not None
        adversary = make_adversary(model.phi.out_dim, len(second.scanner_labels)).to(device)
    gen_store = torch.Generator(device=bt.storage).manual_seed(config.seed + 1)
    gen_dev = torch.Generator(device=device).manual_seed(config.seed + 2)
    member = Member(config, slides, task, second, adversary, gen_store, gen_dev, torch.get_rng_state(), evals,
                    EarlyStopping.for_config(config))
    member.sums = torch.zeros(4, device=device)
    member.totals = torch.zeros(2, device=device)
    return member, model


def pad_stack(xs: list[torch.Tensor], masks: list[torch.Tensor], width: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-member padded batches x_a (B, N_a, D), mask_a (B, N_a) into (A, B, N, D), (A, B, N),
    N = `width` when given (at least every N_a), else the largest N_a."""
    n = max(x.shape[1] for x in xs)
    if width is not None:
        if width < n:
            raise ValueError(f"width: expected at least the longest member batch ({n}), got {width}")
        n = width
    x_out = xs[0].new_zeros((len(xs), xs[0].shape[0], n, xs[0].shape[2]))
    m_out = masks[0].new_zeros((len(xs), masks[0].shape[0], n))
    for a, (x, m) in enumerate(zip(xs, masks)):
        x_out[a, :, : x.shape[1]] = x
        m_out[a, :, : m.shape[1]] = m
    return x_out, m_out


def task_losses(stack: StackedModel, members: list[Member], rows: list[int], bt: BagTensors, device: torch.device) -> torch.Tensor:
    """Task losses (A,) of the active members (stack rows `rows`), one batched phi pass (the caller's
    autocast covers phi and the head: a float32 head under bf16 phi let last-bit differences of the
    batched head reach phi's bf16 backward, so members drifted from their runs alone)."""
    cfg = members[0].config
    xs, masks, ys = [], [], []
    for mem in members:
        pos, y = mem.task.next()
        x, mask = collate(bt, pos, cfg.max_patches_train, mem.gen_store)
        xs.append(x), masks.append(mask), ys.append(torch.as_tensor(y, device=device))
    # padded to max_patches_train, not to the members' longest bag, so a member's products have the
    # same shapes alone and in any ensemble (bf16 rounding can depend on a product's shape)
    x, mask = pad_stack(xs, masks, cfg.max_patches_train)
    a, b, n, d = x.shape
    hidden = stack.template.phi.out_dim
    drops = stack.dropout_masks([tuple(m.shape) for m in masks], (b, n), [mem.gen_dev for mem in members], device)
    p = stack.subset(rows)
    h = stack.phi(p, x.reshape(a, b * n, d), drops).reshape(a, b, n, hidden)
    h = torch.where(mask[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
    states = [mem.rng_state for mem in members]
    losses = stack.head_losses(p, h, mask, torch.stack(ys), [m.shape[1] for m in masks], [mem.gen_dev for mem in members], states)
    for mem, state in zip(members, states):
        mem.rng_state = state
    return losses


@torch.no_grad()
def evaluate(stack: StackedModel, members: list[Member], rows: list[int], bt: BagTensors
             ) -> tuple[list[dict[str, float]], list[list[tuple[np.ndarray, ...]]]]:
    """Validation metrics (and traced test metrics) of every active member, and its validation outputs
    (positions, logits, pooled, mean_phi) for the final pass to reuse; members that share a split share
    the bags of one batched pass."""
    records: list[dict[str, float]] = [{} for _ in members]
    outputs: list[list[tuple[np.ndarray, ...]]] = [[] for _ in members]
    groups: dict[tuple, list[int]] = {}
    for i, mem in enumerate(members):
        groups.setdefault((mem.config.split_seed, mem.config.split_fractions), []).append(i)
    for idx in groups.values():
        splits = ["val"] + (["test"] if any("test" in members[i].evals for i in idx) else [])
        for split in splits:
            lead = members[idx[0]]
            pos = lead.evals[split] if split in lead.evals else split_positions(lead.slides, split)
            logits, pooled, mean_phi = predict_members(stack, [rows[i] for i in idx], bt, pos,
                                                       members[0].config.eval_patch_budget)
            for j, i in enumerate(idx):
                if split == "val":
                    records[i].update(split_metrics(logits[j], members[i].slides[pos], "val"))
                    outputs[i].append((pos, logits[j], pooled[j], mean_phi[j]))
                elif "test" in members[i].evals:
                    # display only, outputs not kept: a traced run's final pass is exactly an untraced one's
                    records[i].update(test_trace(logits[j], members[i].slides[pos]))
    return records, outputs


@torch.no_grad()
def predict_members(stack: StackedModel, rows: list[int], bt: BagTensors, positions: np.ndarray, budget: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits (A, n), pooled (A, n, H'), mean phi (A, n, H)) of stack rows `rows` on bags `positions`,
    every patch, in batches of at most budget / A padded patches (bounded memory whatever A)."""
    p = stack.subset(rows)
    lengths = bt.lengths.cpu().numpy()[positions]
    out = None
    for batch in inference_batches(lengths, max(1, budget // max(1, len(rows)))):
        x, mask = collate(bt, positions[batch])
        res = [t.double().cpu().numpy() for t in stack.predict(p, x, mask)]
        if out is None:
            out = [np.zeros((len(rows), positions.size, *r.shape[2:])) for r in res]
        for o, r in zip(out, res):
            o[:, batch] = r
    return out[0], out[1], out[2]


@dataclass
class FinalOutputs:
    """One member's selected-model outputs on bags `positions` (n,): logits (n,), pooled bag
    embeddings (n, H') and masked mean of phi (n, H), all float64."""

    positions: np.ndarray
    logits: np.ndarray
    pooled: np.ndarray
    mean_phi: np.ndarray

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, pooled, mean_phi) rows of `positions` (each must be among self.positions)."""
        where = {int(p): i for i, p in enumerate(self.positions.tolist())}
        try:
            idx = np.array([where[int(p)] for p in positions], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"positions: bag {err} was not predicted in the final pass") from err
        return self.logits[idx], self.pooled[idx], self.mean_phi[idx]


@torch.no_grad()
def final_outputs(models: list[MILModel], members: list[Member], bt: BagTensors) -> list[FinalOutputs]:
    """Outputs of every member's selected model on its predictions-table bags, batched over the
    members that share a split (one stacked pass per split group)."""
    from scangen.train.experiment import prediction_positions  # deferred: experiment imports the trainer

    stack = StackedModel(models)
    out: list[FinalOutputs | None] = [None] * len(members)
    groups: dict[tuple, list[int]] = {}
    for i, mem in enumerate(members):
        groups.setdefault((mem.config.split_seed, mem.config.split_fractions), []).append(i)
    for idx in groups.values():
        cfg = members[idx[0]].config
        pos = prediction_positions(members[idx[0]].slides, cfg.predict_task)
        # bags every member of the group already predicted with its selected weights (at the selecting
        # evaluation) are taken from there; only the rest (e.g. 20x scans, test when untraced) is predicted
        have = [_outputs_by_position(members[i].best_outputs) for i in idx]
        covered = set.intersection(*(set(h) for h in have))
        need = np.array([q for q in pos.tolist() if q not in covered], dtype=np.int64)
        fresh = predict_members(stack, idx, bt, need, cfg.eval_patch_budget) if need.size else None
        where = {q: k for k, q in enumerate(need.tolist())}
        for j, i in enumerate(idx):
            parts = [np.stack([have[j][q][t] if q in covered else fresh[t][j][where[q]] for q in pos.tolist()])
                     for t in range(3)]
            out[i] = FinalOutputs(pos, parts[0], parts[1], parts[2])
    return out


def _outputs_by_position(outputs: list[tuple[np.ndarray, ...]]) -> dict[int, tuple]:
    """{bag position: (logit, pooled row, mean_phi row)} from evaluation outputs per split."""
    table: dict[int, tuple] = {}
    for pos, logits, pooled, mean_phi in outputs:
        for k, q in enumerate(pos.tolist()):
            table[q] = (logits[k], pooled[k], mean_phi[k])
    return table
