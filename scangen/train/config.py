"""`TrainConfig`: every knob of one training run, flat, documented and saved with each checkpoint.

The paper's hyper-parameter ranges were lost in extraction (see shared/spec/method.md); defaults
below are our choices inside the ranges the spec suggests and are swept by the notebooks.
`config_hash` identifies a run by everything that can change its numbers (not by progress bars or
output paths).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import polars as pl

from scangen.models import HEADS as _HEAD_REGISTRY
from scangen.scan_labels import primary_scanners
from scangen.splits import DEFAULT_FRACTIONS

HEADS = tuple(_HEAD_REGISTRY)
SCANGEN_LEVELS = ("slide", "patch", "bag")
SELECT_METRICS = ("auc", "loss", "auc_cov", "auc_pcov", "auc_share")
SCANGEN_DISTANCES = ("cosine", "cosine_norm")
HARMONIZE_METHODS = ("none", "standardize", "combat", "coral")
NON_RESULT_FIELDS = frozenset({"progress", "output", "checkpoint", "num_threads", "trace_test"})
"""Fields that cannot change a run's numbers, so they are left out of `config_hash`. `trace_test` only
adds display columns to the history: a traced run's weights, selection and predictions are bit-identical
to the untraced run's (the final pass never takes test outputs from a traced evaluation)."""


@dataclass(frozen=True)
class TrainConfig:
    """One experiment. Defaults: GAP head, baseline (ScanGen off), quick CPU-sized training.

    Data: `store` (folder of the embedding store; optional when bags are passed in), `fm` (model
    name in the store).
    Model: `head` (one of HEADS), `head_kwargs` (extra keyword arguments of the head), `hidden_dim`
    (H of phi; None = `default_hidden_dim(D)`, 256-512), `dropout` of phi.
    ScanGen: `use_scangen`, `lam` (lambda, weight of the ScanGen loss, default 1.0; on the simulated
    quick cohort neither 1 nor 5 lowered the test scanner CoV reliably: the notebooks sweep it),
    `alpha` (attraction weight; 1 - alpha weighs repulsion; default 0.5), `margin` (cosine-distance
    radius m of the repulsion hinge; default 0.75), `scangen_level` ("slide": one item per WSI, its
    mean patch embedding; "patch": `scangen_patches` random patches per WSI, each labelled with
    its WSI's specimen and scanner; "bag": one item per WSI, the masked mean of phi over
    `max_patches_train` random patches, i.e. GAP's bag embedding; for other heads still the plain
    masked mean of phi outputs), `scanner_subset` (primary-magnification scanners whose scans feed
    the ScanGen branch; None = all primary scanners of the store, `scan_labels.primary_scanners`;
    codes are checked against the store when training starts), `include_20x_in_scangen` (add GT450@20x scans as a scanner of their own), `scangen_k`
    (K specimens per ScanGen batch, each with all its scans in the subset), `scangen_distance`
    ("cosine", the paper's d = 1 - cos; "cosine_norm", the length-aware distance of
    `scangen.losses.distance_matrix`), `scangen_pair_norm` (False: the spec's
    (alpha L_att + (1 - alpha) L_rep) / (|P| + |N|); True: alpha L_att / |P| + (1 - alpha) L_rep / |N|).
    Beyond the paper: `harmonize` ("none" | "standardize" | "combat" | "coral": features harmonised
    by `scangen.harmonise.harmonise_bags`, fitted on the training slides (task_train and
    scangen_train) only, applied to every slide), `adversary_weight` (> 0 adds
    weight * ScannerAdversary.loss(z, scanner) on the second flow's items, a scanner classifier
    behind gradient reversal (DANN); the second flow is then drawn even with ScanGen off).
    Task branch: `task_batch_size` bags per step, `max_patches_train` random patches per bag in
    training (None = all); inference always uses every patch.
    Optimisation: AdamW (`lr`, `weight_decay`), `max_steps`, validation every `eval_every` steps,
    early stopping after `patience` evaluations without improvement of `select_metric` on the
    validation split: "auc" (val AUC over 40x multiscanner WSIs, ties broken by lower val BCE),
    "loss" (val BCE), "auc_cov" (val AUC - `cov_weight` * val scanner CoV of logits; unstable: a
    val specimen with mean logit near 0 makes it explode) or "auc_pcov" (val AUC - `cov_weight` *
    val scanner CoV of probabilities, bounded, but it favours barely trained models whose
    probabilities all sit near 0.5) or "auc_share" (val AUC - `cov_weight` * val scanner share:
    mean within-specimen std of logits / std of specimen mean logits, scale-free; the option that
    lets validation weigh scanner agreement without rewarding timid logits). Default "auc": the
    task metric, the same rule for baseline and ScanGen runs. `select_min_step`: only evaluations at
    step >= this may be selected (earlier ones are recorded, never chosen; early stopping counts
    only evaluations from there on), the same for both arms. `trace_test`: also record test-split
    metrics in the history at every evaluation (display only; selection never reads them).
    Reproducibility: `seed` (weights, sampling), `split_seed` and `split_fractions`
    (scangen_train/val/test of the multiscanner cohort).
    Hardware: `device` ("auto" = CUDA > MPS > CPU, or a torch device string), `amp` (mixed precision
    of training on CUDA: bfloat16 autocast, float16 where bf16 is unsupported), `amp_cpu` (bfloat16
    autocast of training's forward and backward on CPU, default off; worth it on CPUs with native
    bf16 matrix instructions, AVX512-BF16 or AMX, where a bf16 product runs ~4x the float32 rate;
    `scangen.train.device.resolve_amp_cpu` turns the parameter sets' "auto" into a bool, so the
    precision a run used is part of its config; parameters stay float32, the optimiser steps in
    float32, the ScanGen loss is float32, and evaluation, selection and final predictions always run
    in float32 on every device), `eval_patch_budget` (max padded patches per inference batch),
    `num_threads` (CPU threads for torch during the run, restored after; None = leave as is; use 1
    when several runs share the cores: OpenMP threads that wait on busy cores are very slow).
    Outputs (not hashed): `progress` (tqdm bars), `output` (Parquet path of predictions),
    `checkpoint` (path of the model checkpoint), `predict_task` (also predict task-cohort WSIs).
    """

    store: str | None = None
    fm: str = "uni-sim"
    head: str = "gap"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden_dim: int | None = None
    dropout: float = 0.1
    use_scangen: bool = False
    lam: float = 1.0
    alpha: float = 0.5
    margin: float = 0.75
    scangen_level: str = "slide"
    scanner_subset: tuple[str, ...] | None = None
    include_20x_in_scangen: bool = False
    scangen_k: int = 8
    scangen_patches: int = 8
    scangen_distance: str = "cosine"
    scangen_pair_norm: bool = False
    harmonize: str = "none"
    adversary_weight: float = 0.0
    task_batch_size: int = 16
    max_patches_train: int | None = 128
    lr: float = 3e-4
    weight_decay: float = 1e-2
    max_steps: int = 400
    eval_every: int = 25
    patience: int = 6
    select_metric: str = "auc"
    cov_weight: float = 0.1
    select_min_step: int = 0
    trace_test: bool = False
    seed: int = 0
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    device: str = "auto"
    amp: bool = True
    amp_cpu: bool = False
    eval_patch_budget: int = 262_144
    num_threads: int | None = None
    predict_task: bool = False
    progress: bool = True
    output: str | None = None
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.scanner_subset is not None:
            if isinstance(self.scanner_subset, str):
                raise ValueError(f"TrainConfig.scanner_subset: expected None or a sequence of scanner codes, got {self.scanner_subset!r}")
            object.__setattr__(self, "scanner_subset", tuple(self.scanner_subset))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        object.__setattr__(self, "head_kwargs", dict(self.head_kwargs))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its allowed values."""
        subset = self.scanner_subset
        checks: list[tuple[bool, str, str]] = [
            (self.head in HEADS, "head", f"one of {HEADS}"),
            (self.scangen_level in SCANGEN_LEVELS, "scangen_level", f"one of {SCANGEN_LEVELS}"),
            (self.select_metric in SELECT_METRICS, "select_metric", f"one of {SELECT_METRICS}"),
            (subset is None or len(subset) >= 2 or not (self.use_scangen or self.adversary_weight > 0), "scanner_subset",
             "None or at least two scanners"),
            (subset is None or all(isinstance(s, str) and s for s in subset), "scanner_subset", "scanner codes (strings)"),
            (subset is None or len(set(subset)) == len(subset), "scanner_subset", "distinct codes"),
            (self.scangen_distance in SCANGEN_DISTANCES, "scangen_distance", f"one of {SCANGEN_DISTANCES}"),
            (self.harmonize in HARMONIZE_METHODS, "harmonize", f"one of {HARMONIZE_METHODS}"),
            (self.adversary_weight >= 0, "adversary_weight", "a non-negative number"),
            (self.select_min_step >= 0, "select_min_step", "a non-negative integer"),
            (self.select_min_step <= self.max_steps, "select_min_step", f"at most max_steps ({self.max_steps})"),
            (self.lam >= 0, "lam", "a non-negative number"),
            (0.0 <= self.alpha <= 1.0, "alpha", "a number in [0, 1]"),
            (0.0 < self.margin <= 2.0, "margin", "a cosine distance in (0, 2]"),
            (self.scangen_k >= 2, "scangen_k", "an integer >= 2"),
            (self.scangen_patches >= 1, "scangen_patches", "a positive integer"),
            (self.task_batch_size >= 1, "task_batch_size", "a positive integer"),
            (self.max_patches_train is None or self.max_patches_train >= 1, "max_patches_train", "None or >= 1"),
            (self.hidden_dim is None or self.hidden_dim >= 1, "hidden_dim", "None or a positive integer"),
            (0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)"),
            (self.lr > 0, "lr", "a positive number"),
            (self.weight_decay >= 0, "weight_decay", "a non-negative number"),
            (self.max_steps >= 1, "max_steps", "a positive integer"),
            (self.eval_every >= 1, "eval_every", "a positive integer"),
            (self.patience >= 1, "patience", "a positive integer"),
            (len(self.split_fractions) == 3, "split_fractions", "three fractions"),
            (self.eval_patch_budget >= 1, "eval_patch_budget", "a positive integer"),
            (self.num_threads is None or self.num_threads >= 1, "num_threads", "None or a positive integer"),
            (isinstance(self.amp_cpu, bool), "amp_cpu", "True or False (\"auto\" is resolved by train_settings)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (tuples as lists) safe for JSON and `torch.load(weights_only=True)`."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys raise ValueError naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        """Copy with `changes` applied (validated)."""
        return replace(self, **changes)

    def __hash__(self) -> int:
        return hash(config_hash(self))


def config_hash(config: TrainConfig, length: int = 12) -> str:
    """Stable hex digest of every result-relevant field (sorted-key JSON, SHA-256)."""
    data = {k: v for k, v in config.to_dict().items() if k not in NON_RESULT_FIELDS}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def resolve_scanner_subset(config: TrainConfig, slides: pl.DataFrame) -> tuple[str, ...]:
    """The run's ScanGen scanner subset: `config.scanner_subset`, or all primary scanners of the
    store when it is None (`scan_labels.primary_scanners`). Raises ValueError naming
    `scanner_subset` when a code is not a primary scanner of `slides`."""
    primary = primary_scanners(slides)
    if config.scanner_subset is None:
        return primary
    unknown = [s for s in config.scanner_subset if s not in primary]
    if unknown:
        raise ValueError(f"TrainConfig.scanner_subset: {unknown} are not primary scanners of the store {primary}")
    return config.scanner_subset
