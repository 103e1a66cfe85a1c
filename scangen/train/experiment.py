"""`run_record` / `run_experiment`: train one configuration; predictions, history and diagnostics.

A `RunRecord` holds what the run cache stores per run: the predictions table (PREDICTION_COLUMNS plus
every diagnostic as a constant Float64 column "diag_<name>"), the history (one row per evaluation,
HISTORY_COLUMNS, plus TEST_TRACE_COLUMNS with `trace_test`) and the diagnostics dict
(`scangen.train.diagnose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from scangen.store import Bags, load_bags, read_meta
from scangen.atomic import atomic_write_with
from scangen.train.checkpoint import save_checkpoint
from scangen.train.config import TrainConfig, config_hash
from scangen.train.device import cpu_threads
from scangen.train.diagnose import run_diagnostics
from scangen.train.predict import predict_logits
from scangen.train.trainer import TrainResult, train

PREDICTION_COLUMNS = (
    "slide_id", "specimen_id", "scanner", "magnification", "cohort", "split", "egfr", "logit", "prob",
    "fm", "head", "aggregator", "use_scangen", "config_hash", "seed", "simulated", "best_step",
)
"""Columns of the predictions table (`aggregator` repeats `head`, the name DESIGN.md uses); the
diagnostics follow as "diag_<name>" columns."""

HISTORY_COLUMNS = (
    "step", "task_loss", "scangen_loss", "att_term", "rep_term", "val_auc", "val_loss", "val_cov",
    "val_median_cov", "val_within_sd", "val_share", "selected",
)
"""Columns every history has (one row per evaluation); `val_pcov` is kept too, and with
`trace_test` the TEST_TRACE_COLUMNS follow."""


@dataclass
class RunRecord:
    """One finished run: predictions (with diag_* columns), history (one row per evaluation) and
    diagnostics ({name: value}, see scangen.train.diagnose)."""

    predictions: pl.DataFrame
    history: pl.DataFrame
    diagnostics: dict[str, float]


def load_experiment_bags(config: TrainConfig) -> Bags:
    """Bags of `config.fm` from `config.store` (every slide of every cohort)."""
    if config.store is None:
        raise ValueError("TrainConfig.store: expected the store folder when no bags are passed in")
    store = Path(config.store)
    read_meta(store)
    return load_bags(store, config.fm, mmap=True)


def prediction_positions(slides: pl.DataFrame, include_task: bool = False) -> np.ndarray:
    """Bag positions of the predictions table: every multiscanner WSI of val/test (and task WSIs if asked)."""
    sel = (pl.col("cohort") == "multiscanner") & pl.col("split").is_in(["val", "test"])
    if include_task:
        sel = sel | (pl.col("cohort") == "task")
    return slides.with_row_index("_pos").filter(sel)["_pos"].to_numpy().astype(np.int64)


def prediction_table(result: TrainResult, include_task: bool = False) -> pl.DataFrame:
    """Predictions (all patches) for every multiscanner WSI of val/test (and task WSIs if asked).

    Logits come from `result.outputs` when the trainer computed them in its batched final pass,
    else from `predict_logits` on `result.model`.
    """
    pos = prediction_positions(result.slides, include_task)
    rows = result.slides[pos]
    if result.outputs is not None:
        logits = result.outputs.take(pos)[0]
    else:
        logits = predict_logits(
            result.model, result.bag_tensors, pos, patch_budget=result.config.eval_patch_budget, amp=result.amp
        )
    cfg = result.config
    simulated = rows["simulated"] if "simulated" in rows.columns else pl.Series([False] * rows.height)
    return pl.DataFrame(
        {
            "slide_id": rows["slide_id"],
            "specimen_id": rows["specimen_id"],
            "scanner": rows["scanner"],
            "magnification": rows["magnification"].cast(pl.Int16),
            "cohort": rows["cohort"],
            "split": rows["split"],
            "egfr": rows["egfr"].cast(pl.Int8),
            "logit": logits,
            "prob": 1.0 / (1.0 + np.exp(-logits)),
            "fm": [cfg.fm] * rows.height,
            "head": [cfg.head] * rows.height,
            "aggregator": [cfg.head] * rows.height,
            "use_scangen": [cfg.use_scangen] * rows.height,
            "config_hash": [config_hash(cfg)] * rows.height,
            "seed": pl.Series([cfg.seed] * rows.height, dtype=pl.Int64),
            "simulated": simulated.cast(pl.Boolean),
            "best_step": pl.Series([result.best_step] * rows.height, dtype=pl.Int64),
        }
    ).select(PREDICTION_COLUMNS)


def write_parquet_atomic(table: pl.DataFrame, path: str | Path) -> Path:
    """Write `table` to `path` via a temporary file and os.replace."""
    return atomic_write_with(Path(path), table.write_parquet)


def with_diagnostics(table: pl.DataFrame, diagnostics: dict[str, float]) -> pl.DataFrame:
    """`table` with one constant Float64 column "diag_<name>" per diagnostic."""
    return table.with_columns([pl.lit(float(v), dtype=pl.Float64).alias(f"diag_{k}") for k, v in diagnostics.items()])


def record_from_result(result: TrainResult) -> RunRecord:
    """The RunRecord of a finished training result (predictions, history, diagnostics); writes
    `config.output` / `config.checkpoint` when set."""
    config = result.config
    with cpu_threads(config.num_threads):
        diagnostics = run_diagnostics(result)
        table = with_diagnostics(prediction_table(result, include_task=config.predict_task), diagnostics)
    if config.output is not None:
        write_parquet_atomic(table, config.output)
    if config.checkpoint is not None:
        save_checkpoint(config.checkpoint, result.model, config, {"best_step": result.best_step})
    return RunRecord(table, result.history, diagnostics)


def run_record(config: TrainConfig, bags: Bags | None = None) -> RunRecord:
    """Train `config`; its predictions (PREDICTION_COLUMNS + diag_*), history and diagnostics.

    `bags` (all cohorts of `config.fm`) skips reading the store, for callers running many
    experiments on the same data. Writes the table to `config.output` and the model to
    `config.checkpoint` when those are set.
    """
    if bags is None:
        bags = load_experiment_bags(config)
    with cpu_threads(config.num_threads):
        result = train(config, bags)
    return record_from_result(result)


def run_experiment(config: TrainConfig, bags: Bags | None = None) -> pl.DataFrame:
    """Train `config` and return its predictions table (`run_record(config, bags).predictions`)."""
    return run_record(config, bags).predictions
