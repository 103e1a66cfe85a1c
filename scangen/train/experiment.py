"""`run_experiment`: train one configuration and return predictions for every evaluation WSI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from scangen.store import Bags, load_bags, read_meta
from scangen.atomic import atomic_write_with
from scangen.train.checkpoint import save_checkpoint
from scangen.train.config import TrainConfig, config_hash
from scangen.train.device import cpu_threads
from scangen.train.predict import predict_logits
from scangen.train.trainer import TrainResult, train

PREDICTION_COLUMNS = (
    "slide_id", "specimen_id", "scanner", "magnification", "cohort", "split", "egfr", "logit", "prob",
    "fm", "head", "aggregator", "use_scangen", "config_hash", "seed", "simulated", "best_step",
)
"""Columns of the predictions table (`aggregator` repeats `head`, the name DESIGN.md uses)."""


def load_experiment_bags(config: TrainConfig) -> Bags:
    """Bags of `config.fm` from `config.store` (every slide of every cohort)."""
    if config.store is None:
        raise ValueError("TrainConfig.store: expected the store folder when no bags are passed in")
    store = Path(config.store)
    read_meta(store)
    return load_bags(store, config.fm, mmap=True)


def prediction_table(result: TrainResult, include_task: bool = False) -> pl.DataFrame:
    """Predictions (all patches) for every multiscanner WSI of val/test (and task WSIs if asked)."""
    slides = result.slides.with_row_index("_pos")
    sel = (pl.col("cohort") == "multiscanner") & pl.col("split").is_in(["val", "test"])
    if include_task:
        sel = sel | (pl.col("cohort") == "task")
    rows = slides.filter(sel)
    pos = rows["_pos"].to_numpy().astype(np.int64)
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


def run_experiment(config: TrainConfig, bags: Bags | None = None) -> pl.DataFrame:
    """Train `config` and return its predictions table (see PREDICTION_COLUMNS).

    `bags` (all cohorts of `config.fm`) skips reading the store, for callers running many
    experiments on the same data. Writes the table to `config.output` and the model to
    `config.checkpoint` when those are set.
    """
    if bags is None:
        bags = load_experiment_bags(config)
    with cpu_threads(config.num_threads):
        result = train(config, bags)
        table = prediction_table(result, include_task=config.predict_task)
    if config.output is not None:
        write_parquet_atomic(table, config.output)
    if config.checkpoint is not None:
        save_checkpoint(config.checkpoint, result.model, config, {"best_step": result.best_step})
    return table
