"""The grid, locally: grouping into ensembles, cached and new configs mixed in one call, hit/miss
counting, summary rows (diagnostics, no cache flag), the progress bar, and the worker-side refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scangen.experiments.grid import GroupTask, plan_groups, train_group
from scangen.experiments.session import ExperimentSession, train_settings
from scangen.train import TrainConfig
from scangen.train.config import config_hash
from scangen.train.ensemble import ensemble_group_key

SETTINGS = train_settings(3, "cpu", {"eval_every": 3, "patience": 1, "max_patches_train": 16})


def _session(store: Path, cache: Path, **kw) -> ExperimentSession:
    return ExperimentSession(store, cache, SETTINGS, n_boot=50, progress=False, **kw)


def _grid(session: ExperimentSession, fms=("phikon-sim", "uni-sim"), seeds=(0, 1)) -> list[TrainConfig]:
    return [session.config(fm=fm, use_scangen=sg, seed=s) for fm in fms for sg in (False, True) for s in seeds]


def test_plan_groups_by_key_in_order_and_capped():
    a = TrainConfig(fm="phikon-sim", max_steps=3)
    configs = [a, a.replace(fm="uni-sim"), a.replace(seed=1), a.replace(seed=2), a.replace(fm="uni-sim", seed=1)]
    keys = [ensemble_group_key(c) for c in configs]
    groups = plan_groups(configs)
    assert sorted(i for g in groups for i in g) == list(range(5))
    assert all(len({keys[i] for i in g}) == 1 for g in groups)  # one key per group
    assert groups[0][0] == 0 and all(g == sorted(g) for g in groups)  # first appearance, input order
    assert all(len(g) <= 2 for g in plan_groups(configs, 2))
    assert plan_groups(configs, ensemble=False) == [[i] for i in range(5)]
    with pytest.raises(ValueError, match="max_size"):
        plan_groups(configs, 0)


def test_records_mix_cached_and_new_and_count(tiny_store: Path, tmp_path: Path):
    s1 = _session(tiny_store, tmp_path / "c")
    part = _grid(s1, fms=("phikon-sim",), seeds=(0,))
    first = s1.run_table(part)
    assert (s1.cache.hits, s1.cache.misses) == (0, 2)
    assert "cached" not in first.columns and any(c.startswith("diag_") for c in first.columns)
    s2 = _session(tiny_store, tmp_path / "c", max_ensemble=2)
    grid = _grid(s2, seeds=(0,))
    table = s2.run_table(grid + part[:1])  # a config repeated in one call trains once
    assert table.height == len(grid) + 1 and (s2.cache.hits, s2.cache.misses) == (3, 2)
    assert_frame_equal(table.head(2), first)  # cached rows equal the rows of the run that trained them
    assert_frame_equal(table.tail(1), first.head(1))
    again = _session(tiny_store, tmp_path / "c").run_table(grid)
    assert_frame_equal(again, table.head(len(grid)))
    for config, record in zip(grid, s2.records(grid)):  # each record belongs to its own config
        assert record.predictions["config_hash"].unique().to_list() == [config_hash(config)]
    pred, cached = s2.run(grid[0])
    assert cached and pred.height > 0


def test_rows_copy_diagnostics(tiny_store: Path, tmp_path: Path):
    session = _session(tiny_store, tmp_path)
    config = session.config(fm="phikon-sim", use_scangen=True)
    record = session.records([config])[0]
    row = session.run_table([config]).row(0, named=True)
    for name, value in record.diagnostics.items():
        assert f"diag_{name}" in row
        assert row[f"diag_{name}"] == pytest.approx(value, nan_ok=True)


def test_key_tracks_device_and_cpu_threads(tiny_store: Path, tmp_path: Path):
    session = _session(tiny_store, tmp_path)
    config = session.config(fm="phikon-sim")
    key = session.key_config(config)
    assert key["device"] == "cpu" and key["cpu_threads"] >= 1
    assert session.cache_key(config.replace(num_threads=1)) != session.cache_key(config.replace(num_threads=2))
    assert "progress" not in key and "store" not in key


def test_progress_bar_counts_cached_runs_apart(tiny_store: Path, tmp_path: Path, capsys):
    _session(tiny_store, tmp_path).records([_grid(_session(tiny_store, tmp_path), fms=("phikon-sim",))[0]])
    session = ExperimentSession(tiny_store, tmp_path, SETTINGS, n_boot=50, progress=True)
    session.records(_grid(session, fms=("phikon-sim",), seeds=(0,)))
    err = capsys.readouterr().err
    assert "2/2" in err and "cached=1" in err and "trained=1" in err


def test_worker_refuses_other_device_or_code(tiny_store: Path, tmp_path: Path):
    session = _session(tiny_store, tmp_path)
    config = session.config(fm="phikon-sim")
    bags = session.bags("phikon-sim")
    with pytest.raises(RuntimeError, match="device"):
        train_group(GroupTask("phikon-sim", (config,), ("k",), device="cuda", threads=None), bags)
    with pytest.raises(RuntimeError, match="code fingerprint"):
        train_group(GroupTask("phikon-sim", (config,), ("k",), device="cpu", threads=1), bags, "other-code")
    with pytest.raises(ValueError, match="one key per config"):
        GroupTask("phikon-sim", (config,), (), device="cpu", threads=1)


def test_scheduler_from_environment(tiny_store: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCANGEN_DASK_SCHEDULER", "tcp://127.0.0.1:1")
    monkeypatch.setenv("SCANGEN_MAX_ENSEMBLE", "4")
    session = _session(tiny_store, tmp_path)
    assert session.scheduler == "tcp://127.0.0.1:1" and session.max_ensemble == 4
    assert _session(tiny_store, tmp_path, scheduler="local").scheduler is None


def test_local_grid_never_imports_dask(tiny_store: Path, tmp_path: Path):
    code = ("import sys\nfrom scangen.experiments.session import ExperimentSession\n"
            f"s = ExperimentSession({str(tiny_store)!r}, {str(tmp_path)!r}, {{'device': 'cpu'}})\n"
            "s.key_config(s.config(fm='phikon-sim')); s.executor\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_traced_entries_are_kept_apart_and_serve_untraced_requests(tiny_store: Path, tmp_path: Path):
    """trace_test only adds test metrics (and pre-select_min_step evaluations) to the history: a traced
    request trains its own entry, never replacing the untraced one (a rerun reads the numbers it read
    before); an untraced request without its own entry is served by the traced one, trace dropped."""
    from scangen.experiments.session import TRACED_SUFFIX, is_traced
    from scangen.train.evaluation import TEST_TRACE_COLUMNS

    session = _session(tiny_store, tmp_path / "c")
    plain = session.config(fm="phikon-sim", use_scangen=True, max_steps=4, eval_every=2, select_min_step=4)
    traced = plain.replace(trace_test=True)
    assert not plain.trace_test and session.cache_key(traced) == session.cache_key(plain) + TRACED_SUFFIX
    first = session.records([plain])[0]
    assert not is_traced(first) and (session.cache.hits, session.cache.misses) == (0, 1)
    with_trace = session.records([traced])[0]
    assert is_traced(with_trace) and (session.cache.hits, session.cache.misses) == (0, 2)
    assert with_trace.history["step"].to_list() == [2, 4] and first.history["step"].to_list() == [4]
    assert_frame_equal(with_trace.history.drop(list(TEST_TRACE_COLUMNS)).filter(pl.col("step") >= 4), first.history)
    assert_frame_equal(with_trace.predictions, first.predictions)  # trained alone both times: identical
    again = session.records([plain, traced])
    assert (session.cache.hits, session.cache.misses) == (2, 2) and not is_traced(again[0]) and is_traced(again[1])
    other = _session(tiny_store, tmp_path / "d")
    other.records([traced])
    served = other.records([plain])[0]  # no untraced entry: the traced one serves, trace dropped
    assert (other.cache.hits, other.cache.misses) == (1, 1) and not is_traced(served)
    assert_frame_equal(served.history, first.history)
    assert_frame_equal(served.predictions, first.predictions)
