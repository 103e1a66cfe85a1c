"""One experiment session: a store, a run cache, shared training settings and preloaded bags.

The compendium trains a grid of short runs. A session loads each FM's bags once (keeping the most recent
`keep_fms` in memory, since experiments loop FM by FM), builds every `TrainConfig` from one set of
shared settings (the notebook's quick/smoke parameters), and sends every run through the on-disk
`RunCache`, so a rerun reuses finished training. `records` / `run_table` take a whole grid: cached
configs are served from the cache, the others are grouped into ensembles (`scangen.experiments.grid`)
and trained here or, with `scheduler`, on a Dask cluster (`scangen.experiments.dask_grid`); the
session writes each finished group to the cache as it arrives. One progress bar (tqdm.auto: a widget
in notebooks, text elsewhere) counts runs, the cached ones separately. `summarize` turns a run's
predictions into one flat row of test-split metrics (scangen.metrics.summarize_predictions) plus its
diagnostics (`diag_*`). Rows never record whether they came from the cache (a result file must not
depend on what was cached); `session.cache.hits` / `.misses` count that instead.

Test tracing (`TrainConfig.trace_test`) adds test metrics (and the evaluations before
select_min_step, which can never be selected) to the history for display and changes no training
step, selection or weight: a traced run alone is bit-identical to the untraced one
(tests/test_train_record.py). A traced run is cached under its config's key plus TRACED_SUFFIX. An
untraced request takes its own entry, else the traced one (the extra columns and rows dropped); a
traced request needs a traced entry. Entries are never replaced, so a notebook rerun reads the very
numbers it read before (runs trained in different ensembles may differ in rounding).

Scheduler: `scheduler=None` runs locally unless the environment variable SCANGEN_DASK_SCHEDULER names
a scheduler address (so a whole pipeline run can go to a cluster without changing its notebooks);
`scheduler="local"` always runs locally. SCANGEN_MAX_ENSEMBLE likewise sets `max_ensemble`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections import OrderedDict
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import polars as pl
import torch

from scangen import metrics as M
from scangen.metrics.scanner_variance import scanner_variance
from scangen.experiments.cache import RunCache, config_dict, store_fingerprint
from scangen.metrics import summarize_predictions
from scangen.scan_labels import primary_scanners
from scangen.store import Bags, Vocabulary, load_bags, read_meta, store_vocabulary
from scangen.experiments.grid import GroupResult, GroupTask, LocalExecutor, plan_groups
from scangen.train import TrainConfig
from scangen.train.config import NON_RESULT_FIELDS, config_hash
from scangen.train.device import resolve_amp_cpu
from scangen.train.evaluation import TEST_TRACE_COLUMNS

if TYPE_CHECKING:
    from scangen.train.experiment import RunRecord

VARIANCE_COLUMNS: tuple[str, ...] = ("scanner_share", "offset_sd", "residual_sd", "between_sd", "median_abs_mean")
"""Test-logit decomposition fields (`scangen.metrics.scanner_variance`) kept in every run row."""
KEY_EXCLUDED = NON_RESULT_FIELDS | {"store"}
"""Config fields left out of the cache key: the NON_RESULT_FIELDS (outputs, progress, thread count,
test tracing: see the module docstring) and the store path (the store's content fingerprint is part of
the key instead, so a moved store is still recognised). A CPU run's effective thread count is keyed
(`ExperimentSession.key_config`)."""
TRACED_SUFFIX = "-traced"
"""Appended to the cache key of a config with trace_test (module docstring)."""
SCHEDULER_ENV = "SCANGEN_DASK_SCHEDULER"
MAX_ENSEMBLE_ENV = "SCANGEN_MAX_ENSEMBLE"


def is_traced(record: RunRecord) -> bool:
    """Whether a run's history holds the test trace (`TrainConfig.trace_test`)."""
    return all(c in record.history.columns for c in TEST_TRACE_COLUMNS)


def as_requested(record: RunRecord, config: TrainConfig) -> RunRecord:
    """`record` as `config` asked for it. An untraced request may be served by a traced entry of the
    same key: it gets the history an untraced run records, without the test-trace columns and
    without the evaluations before select_min_step (made only for traced runs' display)."""
    drop = [c for c in TEST_TRACE_COLUMNS if c in record.history.columns]
    if config.trace_test or not drop:
        return record
    history = record.history.drop(drop).filter(pl.col("step") >= config.select_min_step)
    return dataclasses.replace(record, history=history)


class GridError(RuntimeError):
    """Some groups of a grid failed; every finished run is in the cache, so a rerun trains only the rest."""



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
    if "amp_cpu" in extra:  # "auto" -> whether this CPU has native bf16 (the resolved bool is keyed)
        extra["amp_cpu"] = resolve_amp_cpu(extra["amp_cpu"])
    clash = sorted(set(extra) & set(out))
    if clash:
        raise ValueError(f"train: {clash} are set by the notebook's own parameters (steps, device); remove them")
    return {**out, **extra}


class ExperimentSession:
    """Runs training configs on one store with caching, grouped into ensembles, here or on Dask;
    see the module docstring. Call `close()` (or use `with`) to release a Dask client it opened."""

    def __init__(self, store: Path, cache_dir: Path, train: Mapping[str, Any] | None = None, *,
                 keep_fms: int = 1, n_boot: int = 1000, scheduler: Any = None, ensemble: bool = True,
                 max_ensemble: int | None = None, progress: bool = True) -> None:
        self.store = Path(store)
        if not (self.store / "slides.parquet").is_file():
            raise FileNotFoundError(f"store {self.store}: no slides.parquet; run notebook 01 (data) first")
        self.meta = read_meta(self.store)
        self.simulated = bool(self.meta.get("simulated", False))
        if "task" in self.meta and self.meta["task"] is None:
            raise ValueError(f"store {self.store}: no slide task label (an embedding-only store: meta.json \"task\" "
                             f"is null); training needs a binary task column: import with task=<column>")
        train = dict(train or {})
        _check_fields(train, "train settings")
        train.setdefault("progress", False)
        self.base = TrainConfig(store=str(self.store), **train)
        self.cache = RunCache(Path(cache_dir))
        self.keep_fms = max(1, int(keep_fms))
        self.n_boot = n_boot
        self.ensemble = bool(ensemble)
        if max_ensemble is None and os.environ.get(MAX_ENSEMBLE_ENV):
            max_ensemble = int(os.environ[MAX_ENSEMBLE_ENV])
        if max_ensemble is not None and max_ensemble < 1:
            raise ValueError(f"max_ensemble: expected None or a positive integer, got {max_ensemble!r}")
        self.max_ensemble = max_ensemble
        self.progress = progress
        if scheduler is None:
            scheduler = os.environ.get(SCHEDULER_ENV) or None
        self.scheduler = None if scheduler == "local" else scheduler
        self._executor: Any = None
        self._device_types: dict[str, str] = {}
        self._bags: OrderedDict[str, Bags] = OrderedDict()

    def __enter__(self) -> "ExperimentSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the Dask client this session opened (a Client passed in is left open)."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    @property
    def executor(self) -> Any:
        """Where groups train: LocalExecutor, or DaskExecutor when a scheduler is set (connected on first use)."""
        if self._executor is None:
            if self.scheduler is None:
                self._executor = LocalExecutor(self.bags)
            else:
                from scangen.experiments.dask_grid import DaskExecutor

                self._executor = DaskExecutor(self.scheduler, self.bags)
        return self._executor

    @property
    def models(self) -> list[str]:
        """FM names available in the store."""
        return list(self.meta.get("models", {}))

    def config(self, **changes: Any) -> TrainConfig:
        """The shared settings with `changes` applied. Baselines keep the default scanner subset (None: all
        primary scanners), so a baseline run is the same cached run whichever experiment asks for it."""
        _check_fields(changes, "config changes")
        if changes.get("fm") is not None and changes["fm"] not in self.models:
            raise ValueError(f"fm: {changes['fm']!r} is not in store {self.store} (models {self.models})")
        if not changes.get("use_scangen", self.base.use_scangen):
            changes.setdefault("scanner_subset", None)
        return self.base.replace(**changes)

    @functools.cached_property
    def primary_scanners(self) -> tuple[str, ...]:
        """The store's primary-magnification scanners (ScanGen's default subset, the auc_<scanner> columns)."""
        slides = pl.read_parquet(self.store / "slides.parquet", columns=["scanner", "magnification", "cohort"])
        return primary_scanners(slides)

    @functools.cached_property
    def vocabulary(self) -> Vocabulary:
        """The store's vocabulary (scanners, magnifications, task), read from its data."""
        return store_vocabulary(self.store)

    def bags(self, fm: str) -> Bags:
        """All bags of `fm`, loaded once and kept while fewer than `keep_fms` other FMs are newer."""
        if fm not in self._bags:
            while len(self._bags) >= self.keep_fms:
                self._bags.popitem(last=False)
            self._bags[fm] = load_bags(self.store, fm, mmap=True)
        self._bags.move_to_end(fm)
        return self._bags[fm]

    def device_type(self, config: TrainConfig) -> str:
        """Device type `config` trains on where this session trains ("auto" resolved here or on the workers)."""
        if config.device not in self._device_types:
            self._device_types[config.device] = self.executor.device_type(config.device)
        return self._device_types[config.device]

    def run_threads(self, config: TrainConfig) -> int | None:
        """Torch CPU threads of a CPU run (its num_threads, else this process's count); None off the CPU."""
        if self.device_type(config) != "cpu":
            return None
        return int(config.num_threads or torch.get_num_threads())

    def key_config(self, config: TrainConfig) -> dict[str, Any]:
        """The config fields that define a cached run; the device is resolved ("auto" -> "cpu" or
        "cuda"), since CPU and GPU runs of one config give slightly different numbers, and a CPU run's
        torch thread count is added, since it changes the rounding too."""
        out = {k: v for k, v in config_dict(config).items() if k not in KEY_EXCLUDED}
        out["device"] = self.device_type(config)
        if out["device"] == "cpu":
            out["cpu_threads"] = self.run_threads(config)
        return out

    def cache_key(self, config: TrainConfig) -> str:
        """The run cache key of `config` on this session's store; a traced config's entry is kept apart
        (TRACED_SUFFIX), see the module docstring."""
        key = self.cache.key(self.key_config(config), store_fingerprint(self.store, config.fm))
        return key + TRACED_SUFFIX if config.trace_test else key

    def records(self, configs: Iterable[TrainConfig]) -> list[RunRecord]:
        """RunRecords of `configs` (input order): cached ones read back, the rest trained as grouped
        ensembles (here or on Dask) and cached group by group as they finish.

        Counts one cache hit per config found in the cache (or repeated in `configs`) and one miss per
        config trained. Raises GridError after the other groups finished if some group failed on Dask."""
        from tqdm.auto import tqdm

        configs = list(configs)
        keys = [self.cache_key(c) for c in configs]
        found: dict[str, RunRecord] = {}
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found and key not in todo:
                record = self.cache.get_record(key)
                if record is None and not configs[i].trace_test:  # a traced run of the same config serves
                    record = self.cache.get_record(key + TRACED_SUFFIX)
                if record is None:
                    todo[key] = i
                    continue
                found[key] = record
        n_train = len(todo)
        self.cache.misses += n_train
        self.cache.hits += len(configs) - n_train
        tasks = self._tasks([configs[i] for i in todo.values()], list(todo))
        bar = tqdm(total=len(configs), initial=len(configs) - n_train, unit="run", desc="runs",
                   disable=not self.progress or n_train == 0 or len(configs) < 2)
        bar.set_postfix(cached=len(configs) - n_train, trained=0)
        failed: list[tuple[GroupTask, BaseException]] = []
        done = 0
        try:
            for task, result in self.executor.run(tasks, self.cache.code_fp):
                if isinstance(result, BaseException):
                    failed.append((task, result))
                    continue
                self._store(task, result, found)
                done += len(task.keys)
                bar.update(len(task.keys))
                bar.set_postfix(cached=len(configs) - n_train, trained=done)
        finally:
            bar.close()
        if failed:
            n_failed = sum(len(t.keys) for t, _ in failed)
            raise GridError(f"{n_failed} of {n_train} runs to train failed in {len(failed)} groups ({done} finished "
                            f"and cached; rerun to train the rest). First error: {failed[0][1]!r}") from failed[0][1]
        return [as_requested(found[k], c) for k, c in zip(keys, configs)]

    def _tasks(self, configs: list[TrainConfig], keys: list[str]) -> list[GroupTask]:
        """Group the configs to train into GroupTasks, each with the device type and CPU threads it is keyed for."""
        tasks = []
        for members in plan_groups(configs, self.max_ensemble, ensemble=self.ensemble):
            first = configs[members[0]]
            tasks.append(GroupTask(fm=first.fm, configs=tuple(configs[i] for i in members),
                                   keys=tuple(keys[i] for i in members), device=self.device_type(first),
                                   threads=self.run_threads(first)))
        return tasks

    def _store(self, task: GroupTask, result: GroupResult, found: dict[str, RunRecord]) -> None:
        """Check a finished group came from this session's code and write its runs to the cache."""
        if result.code_fp != self.cache.code_fp:
            raise RuntimeError(f"worker {result.worker} ran scangen code {result.code_fp}, not the client's "
                               f"{self.cache.code_fp}; its results are not cached")
        for config, key, record in zip(task.configs, task.keys, result.records):
            info = {"config": self.key_config(config), "store_fingerprint": store_fingerprint(self.store, config.fm),
                    "train_seconds": result.seconds / len(task.keys), "group_size": len(task.keys),
                    "group_seconds": result.seconds, "device": result.device, "worker": result.worker,
                    "trace_test": config.trace_test}
            self.cache.put_record(key, record, info)
            found[key] = record

    def run(self, config: TrainConfig) -> tuple[pl.DataFrame, bool]:
        """(predictions, cached) of one run: the cached result, or a fresh training run stored in the cache."""
        hits = self.cache.hits
        record = self.records([config])[0]
        return record.predictions, self.cache.hits > hits

    def summarize(self, predictions: pl.DataFrame, config: TrainConfig, cached: bool | None = None) -> dict[str, Any]:
        """One flat row: run identity, the test-split metrics (per-scanner AUC as auc_<scanner>) and every
        diagnostic column of the predictions (`diag_<name>`). `cached` is accepted from older callers and
        ignored: rows never record cache use."""
        del cached
        subset = self.primary_scanners if config.scanner_subset is None else config.scanner_subset
        s = summarize_predictions(predictions, n_boot=self.n_boot, seed=config.seed)
        # too few test specimens for a bootstrap (tiny cohorts): the CI bounds are NaN, every other metric stays
        s["ci_note"] = "" if math.isfinite(s["auc_ci_low"]) else f"no bootstrap CI: {s['n_boot_skipped']} resamples lacked a class"
        row: dict[str, Any] = {
            "fm": config.fm, "head": config.head, "use_scangen": config.use_scangen, "seed": config.seed,
            "scanner_subset": list(subset), "n_scanners": len(subset),
            "config_hash": config_hash(config), "code_fingerprint": self.cache.code_fp,
        }
        for k in ("auc", "auc_ci_low", "auc_ci_high", "scanner_cov", "mag_cov", "flip_rate", "threshold",
                  "n_near_zero", "n_near_zero_mag", "n_specimens", "n_slides", "ci_note"):
            row[k] = s[k]
        test = M.evaluation_rows(predictions, "test")
        row["scanner_cov_prob"] = M.scanner_cov(test["logit"].to_numpy(), test["specimen_id"].to_numpy(), on="prob")
        variance = scanner_variance(test["logit"].to_numpy(), test["specimen_id"].to_numpy(), test["scanner"].to_numpy())
        row.update({k: variance.as_row()[k] for k in VARIANCE_COLUMNS})
        for scanner in self.primary_scanners:
            row[f"auc_{scanner}"] = s["per_scanner_auc"].get(scanner, float("nan"))
        for column in predictions.columns:
            if column.startswith("diag_"):
                row[column] = float(predictions[column][0]) if predictions.height else float("nan")
        return row

    def run_table(self, configs: Iterable[TrainConfig]) -> pl.DataFrame:
        """One summary row per config (input order); runs come from `records` (cache, ensembles, Dask)."""
        configs = list(configs)
        if not configs:
            raise ValueError("configs: expected at least one run, got none")
        rows = [self.summarize(r.predictions, c) for c, r in zip(configs, self.records(configs))]
        return pl.DataFrame(rows)
