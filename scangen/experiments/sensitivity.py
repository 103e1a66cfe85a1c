"""Method choices the paper leaves open (shared/spec/method.md), shown rather than hidden.

On one FM, ScanGen is retrained while one setting at a time moves away from the defaults:
- the ScanGen item level: "slide" (mean patch embedding per WSI, default) vs "patch" (random patches,
  each labelled with its WSI's specimen and scanner) vs "bag" (masked mean of phi over a WSI's patches,
  the representation GAP classifies);
- lambda (weight of the ScanGen loss), alpha (attraction vs repulsion) and the margin m.
Each run reports validation AUC and validation scanner CoV (what a choice on validation would look at)
beside the test metrics, plus the CoV on sigmoid probabilities instead of logits. `val_choice` names
the setting a validation rule (highest val AUC minus `cov_weight` x val CoV) would pick.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import polars as pl

from scangen import metrics as M
from scangen.experiments.session import ExperimentSession
from scangen.train import TrainConfig

DEFAULT_GRID: dict[str, list[Any]] = {
    "scangen_level": ["slide", "patch", "bag"],
    "lam": [0.3, 1.0, 3.0],
    "alpha": [0.25, 0.5, 0.75],
    "margin": [0.5, 0.75, 1.0],
}


def sweep_configs(session: ExperimentSession, fm: str, grid: dict[str, Sequence[Any]],
                  seeds: Sequence[int]) -> list[tuple[str, Any, TrainConfig]]:
    """(parameter, value, config) for the default ScanGen run and each one-at-a-time change, per seed.

    Values equal to the default give the default run itself (listed once, as parameter "default").
    """
    base = session.config(fm=fm, use_scangen=True)
    out: list[tuple[str, Any, TrainConfig]] = []
    for s in seeds:
        default = base.replace(seed=int(s))
        out.append(("default", "default", default))
        for name, values in grid.items():
            if not hasattr(base, name):
                raise ValueError(f"grid: {name!r} is not a TrainConfig field")
            for v in values:
                if v != getattr(base, name):
                    out.append((name, v, default.replace(**{name: v})))
    return out


def _val_metrics(pred: pl.DataFrame) -> dict[str, float]:
    """Validation AUC and scanner CoV (40x multiscanner WSIs of the val split)."""
    val = M.evaluation_rows(pred, "val")
    logit = val["logit"].to_numpy().astype(np.float64)
    spec = val["specimen_id"].to_numpy()
    return {"val_auc": M.roc_auc(val["egfr"].to_numpy(), logit), "val_scanner_cov": M.scanner_cov(logit, spec)}


def run_sensitivity(session: ExperimentSession, fm: str, grid: dict[str, Sequence[Any]] | None = None,
                    seeds: Sequence[int] = (0,), cov_weight: float = 0.1) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(runs: one row per run, table: seed means per (parameter, value), val_choice summary)."""
    grid = DEFAULT_GRID if grid is None else grid
    rows = []
    base_runs = session.run_table([session.config(fm=fm, use_scangen=False, seed=int(s)) for s in seeds])
    for name, value, config in sweep_configs(session, fm, grid, seeds):
        pred, cached = session.run(config)
        row = session.summarize(pred, config, cached)
        row.update(_val_metrics(pred), parameter=name, value=str(value))
        rows.append(row)
    runs = pl.DataFrame(rows)
    table = (
        runs.group_by("parameter", "value", maintain_order=True)
        .agg(pl.len().alias("n_seeds"), *[pl.col(c).mean() for c in
             ("val_auc", "val_scanner_cov", "auc", "scanner_cov", "scanner_cov_prob", "mag_cov")])
        .with_columns((pl.col("val_auc") - cov_weight * pl.col("val_scanner_cov")).alias("val_score"))
    )
    best = table.sort(["val_score", "parameter", "value"], descending=[True, False, False]).row(0, named=True)
    base = {"auc": float(base_runs["auc"].mean()), "scanner_cov": float(base_runs["scanner_cov"].mean()),
            "scanner_cov_prob": float(base_runs["scanner_cov_prob"].mean())}
    default = table.filter(pl.col("parameter") == "default").row(0, named=True)
    summary = {"fm": fm, "seeds": list(seeds), "cov_weight": cov_weight, "baseline": base,
               "default": {"auc": default["auc"], "scanner_cov": default["scanner_cov"]},
               "scanner_cov_range": [float(table["scanner_cov"].min()), float(table["scanner_cov"].max())],
               "n_settings": table.filter(pl.col("parameter") != "default").height,
               "val_choice": {"parameter": best["parameter"], "value": best["value"], "val_score": best["val_score"]},
               "grid": {k: [str(v) for v in vs] for k, vs in grid.items()}}
    return runs, table, summary
