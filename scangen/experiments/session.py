"""One experiment session: a store, a run cache, shared training settings and preloaded bags.

The compendium trains ~100 short runs. A session loads each FM's bags once (keeping the most recent
`keep_fms` in memory, since experiments loop FM by FM), builds every `TrainConfig` from one set of
shared settings (the notebook's quick/smoke parameters), and sends every run through the on-disk
`RunCache`, so a rerun reuses finished training. `summarize` turns a run's predictions into one flat
row of test-split metrics (scangen.metrics.summarize_predictions).
"""

from __future__ import annotations

import math

from collections import OrderedDict
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import polars as pl

from scangen import metrics as M
from scangen.constants import SCANNERS_40X
from scangen.metrics.scanner_variance import scanner_variance
from scangen.experiments.cache import RunCache, config_dict, store_fingerprint
from scangen.metrics import summarize_predictions
from scangen.store import Bags, load_bags, read_meta
from scangen.train import TrainConfig, run_experiment
from scangen.train.config import NON_RESULT_FIELDS, config_hash
from scangen.train.device import resolve_device

VARIANCE_COLUMNS: tuple[str, ...] = ("scanner_share", "offset_sd", "residual_sd", "between_sd", "median_abs_mean")
"""Test-logit decomposition fields (`scangen.metrics.scanner_variance`) kept in every run row."""
KEY_EXCLUDED = NON_RESULT_FIELDS | {"store"}
"""Config fields left out of the cache key: outputs/progress, and the store path (the store's
content fingerprint is part of the key instead, so a moved store is still recognised)."""


def _check_fields(overrides: Mapping[str, Any], where: str) -> None:
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{where}: unknown TrainConfig fields {unknown}; expected some of {sorted(names)}")


def train_settings(steps: int | None, device: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """TrainConfig fields shared by a notebook's runs: max_steps, device, plus `overrides` (checked)."""
    out: dict[str, Any] = {"device": device}
    if steps is not None:
        out["max_steps"] = int(steps)
    extra = dict(overrides or {})
    _check_fields(extra, "train")
    clash = sorted(set(extra) & set(out))
    if clash:
        raise ValueError(f"train: {clash} are set by the notebook's own parameters (steps, device); remove them")
    return {**out, **extra}


class ExperimentSession:
    """Runs training configs on one store with caching; see the module docstring."""

    def __init__(self, store: Path, cache_dir: Path, train: Mapping[str, Any] | None = None, *,
                 keep_fms: int = 1, n_boot: int = 1000) -> None:
        self.store = Path(store)
        if not (self.store / "slides.parquet").is_file():
            raise FileNotFoundError(f"store {self.store}: no slides.parquet; run notebook 01 (data) first")
        self.meta = read_meta(self.store)
        self.simulated = bool(self.meta.get("simulated", False))
        train = dict(train or {})
        _check_fields(train, "train settings")
        train.setdefault("progress", False)
        self.base = TrainConfig(store=str(self.store), **train)
        self.cache = RunCache(Path(cache_dir))
        self.keep_fms = max(1, int(keep_fms))
        self.n_boot = n_boot
        self._bags: OrderedDict[str, Bags] = OrderedDict()

    @property
    def models(self) -> list[str]:
        """FM names available in the store."""
        return list(self.meta.get("models", {}))

    def config(self, **changes: Any) -> TrainConfig:
        """The shared settings with `changes` applied. Baselines keep the default scanner subset, so a
        baseline run is the same cached run whichever experiment asks for it."""
        _check_fields(changes, "config changes")
        if changes.get("fm") is not None and changes["fm"] not in self.models:
            raise ValueError(f"fm: {changes['fm']!r} is not in store {self.store} (models {self.models})")
        if not changes.get("use_scangen", self.base.use_scangen):
            changes.setdefault("scanner_subset", SCANNERS_40X)
        return self.base.replace(**changes)

    def bags(self, fm: str) -> Bags:
        """All bags of `fm`, loaded once and kept while fewer than `keep_fms` other FMs are newer."""
        if fm not in self._bags:
            while len(self._bags) >= self.keep_fms:
                self._bags.popitem(last=False)
            self._bags[fm] = load_bags(self.store, fm, mmap=True)
        self._bags.move_to_end(fm)
        return self._bags[fm]

    def key_config(self, config: TrainConfig) -> dict[str, Any]:
        """The config fields that define a cached run; the device is resolved ("auto" -> "cpu" or
        "cuda"), since CPU and GPU runs of one config give slightly different numbers."""
        out = {k: v for k, v in config_dict(config).items() if k not in KEY_EXCLUDED}
        out["device"] = resolve_device(config.device).type
        return out

    def run(self, config: TrainConfig) -> tuple[pl.DataFrame, bool]:
        """(predictions, cached) of one run: the cached result, or a fresh training run stored in the cache."""
        fp = store_fingerprint(self.store, config.fm)
        return self.cache.get_or_run(self.key_config(config), fp, lambda: run_experiment(config, bags=self.bags(config.fm)))

    def summarize(self, predictions: pl.DataFrame, config: TrainConfig, cached: bool = False) -> dict[str, Any]:
        """One flat row: run identity, then the test-split metrics (per-scanner AUC as auc_<scanner>)."""
        s = summarize_predictions(predictions, n_boot=self.n_boot, seed=config.seed)
        # too few test specimens for a bootstrap (tiny cohorts): the CI bounds are NaN, every other metric stays
        s["ci_note"] = "" if math.isfinite(s["auc_ci_low"]) else f"no bootstrap CI: {s['n_boot_skipped']} resamples lacked a class"
        row: dict[str, Any] = {
            "fm": config.fm, "head": config.head, "use_scangen": config.use_scangen, "seed": config.seed,
            "scanner_subset": list(config.scanner_subset), "n_scanners": len(config.scanner_subset),
            "config_hash": config_hash(config), "cached": cached, "code_fingerprint": self.cache.code_fp,
        }
        for k in ("auc", "auc_ci_low", "auc_ci_high", "scanner_cov", "mag_cov", "flip_rate", "threshold",
                  "n_near_zero", "n_near_zero_mag", "n_specimens", "n_slides", "ci_note"):
            row[k] = s[k]
        test = M.evaluation_rows(predictions, "test")
        row["scanner_cov_prob"] = M.scanner_cov(test["logit"].to_numpy(), test["specimen_id"].to_numpy(), on="prob")
        variance = scanner_variance(test["logit"].to_numpy(), test["specimen_id"].to_numpy(), test["scanner"].to_numpy())
        row.update({k: variance.as_row()[k] for k in VARIANCE_COLUMNS})
        for scanner in SCANNERS_40X:
            row[f"auc_{scanner}"] = s["per_scanner_auc"].get(scanner, float("nan"))
        return row

    def run_table(self, configs: Iterable[TrainConfig]) -> pl.DataFrame:
        """Run (or reuse) every config in order and return one summary row per run."""
        rows = []
        for config in configs:
            pred, cached = self.run(config)
            rows.append(self.summarize(pred, config, cached))
        if not rows:
            raise ValueError("configs: expected at least one run, got none")
        return pl.DataFrame(rows)
