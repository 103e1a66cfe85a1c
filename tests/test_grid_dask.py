"""The grid on Dask: a LocalCluster of 2 worker processes on loopback gives exactly the local tables,
and killing a worker mid-grid loses no finished run while a rerun trains only the rest."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from scangen.experiments.session import ExperimentSession, GridError, train_settings

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

SETTINGS = train_settings(6, "cpu", {"eval_every": 3, "patience": 2, "max_patches_train": 16, "num_threads": 1})


@pytest.fixture(scope="module")
def client():
    """2 worker processes x 1 thread on 127.0.0.1; a task on a dead worker fails at once (no retry),
    so the failure test sees the loss instead of Dask silently recomputing it."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None, worker_dashboard_address=None)
        with distributed.Client(cluster) as c:
            c.wait_for_workers(2, timeout=120)
            yield c
        cluster.close()


def _session(store: Path, cache: Path, scheduler=None, max_ensemble: int = 2) -> ExperimentSession:
    return ExperimentSession(store, cache, SETTINGS, n_boot=50, progress=False, max_ensemble=max_ensemble,
                             scheduler=scheduler or "local")


def _grid(session: ExperimentSession):
    return [session.config(fm=fm, use_scangen=sg, seed=s)
            for fm in ("phikon-sim", "uni-sim") for sg in (False, True) for s in (0, 1)]


_LOCAL: dict[int, tuple] = {}


def _local(store: Path, root: Path, max_ensemble: int):
    """(table, cache folder) of the grid trained locally in groups of at most `max_ensemble`, once per module."""
    if max_ensemble not in _LOCAL:
        cache = root / f"local_{max_ensemble}"
        session = _session(store, cache, max_ensemble=max_ensemble)
        _LOCAL[max_ensemble] = (session.run_table(_grid(session)), cache)
    return _LOCAL[max_ensemble]


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local")


def _entries(cache: Path) -> set[str]:
    return {p.parent.name for p in cache.glob("*/predictions.parquet")}


def test_cluster_gives_the_local_tables(tiny_store: Path, tmp_path: Path, client, local_root):
    """Groups of 2 (ensembles) on the workers: bit-identical to the same groups trained locally."""
    table, local_cache = _local(tiny_store, local_root, 2)
    session = _session(tiny_store, tmp_path, scheduler=client)
    remote = session.run_table(_grid(session))
    assert_frame_equal(remote, table, check_exact=True)
    assert _entries(tmp_path) == _entries(local_cache)  # the same keys: local and cluster runs share a cache
    assert (session.cache.hits, session.cache.misses) == (0, 8)
    session.close()
    assert client.status == "running"  # a Client passed in stays open


def test_killed_worker_loses_no_finished_run(tiny_store: Path, tmp_path: Path, client, local_root):
    """One config per unit of work (8 units, so both workers are busy when one dies, and a run's numbers do
    not depend on which configs the rerun groups it with: members of different ensembles agree only
    within float tolerance, scangen.train.ensemble)."""
    reference, _ = _local(tiny_store, local_root, 1)
    session = _session(tiny_store, tmp_path, scheduler=client, max_ensemble=1)
    put = session.cache.put_record
    killed: list[str] = []

    def put_then_kill(key, record, info):
        put(key, record, info)
        if not killed:
            busy = [w for w, keys in client.processing().items() if keys]
            assert busy, "no worker busy after the first finished run"
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(busy[0])

    session.cache.put_record = put_then_kill
    with pytest.raises(GridError, match="rerun to train the rest"):
        session.run_table(_grid(session))
    finished = _entries(tmp_path)
    assert 1 <= len(finished) < 8
    for key in finished:  # every run that came back is complete in the cache
        assert session.cache.get_record(key) is not None
    rerun = _session(tiny_store, tmp_path, scheduler=client.scheduler.address, max_ensemble=1)  # own Client
    table = rerun.run_table(_grid(rerun))
    assert (rerun.cache.hits, rerun.cache.misses) == (len(finished), 8 - len(finished))
    assert_frame_equal(table, reference, check_exact=True)
    rerun.close()
