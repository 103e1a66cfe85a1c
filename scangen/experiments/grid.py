"""The experiment grid: runs grouped into ensembles, one group per unit of work, trained here or on Dask.

A grid is the list of training configs an experiment asks for. Configs that `ensemble_group_key`
says may train together (same FM, head and step budget, ...) form a group, trained in one call of
`scangen.train.ensemble.run_ensemble` (a lone config goes through `run_record`); `max_size` caps a
group's members (memory, and enough units of work to keep every Dask worker busy). A group is the
unit of work: `train_group` runs on the local process (`LocalExecutor`) or on a Dask worker
(`scangen.experiments.dask_grid.DaskExecutor`), and the finished records come back to the caller,
which alone writes the run cache and the result tables (no shared file system needed).

`train_group` refuses to run when the worker would not produce what the caller's cache keys promise:
another device type than the one keyed, or other code (its code fingerprint is returned and checked
by the caller), so a result can never be cached under the wrong key. It also fixes torch's CPU thread
count to the keyed one, since the thread count changes the rounding of CPU runs (measured: 1 vs 2
threads move tiny-cohort logits by 1.2e-7), and the local and Dask runs must give identical numbers.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from scangen.experiments.code_fingerprint import process_code_fingerprint

if TYPE_CHECKING:
    from scangen.store import Bags
    from scangen.train import TrainConfig
    from scangen.train.experiment import RunRecord


@dataclass(frozen=True)
class GroupTask:
    """One unit of work: configs of one FM trained together, with the cache keys they will be stored under.

    `device` is the device type ("cpu", "cuda", ...) the keys were computed for; `threads` the torch
    CPU thread count keyed for CPU runs (None on accelerators: left as the worker has it)."""

    fm: str
    configs: tuple["TrainConfig", ...]
    keys: tuple[str, ...]
    device: str
    threads: int | None

    def __post_init__(self) -> None:
        if not self.configs or len(self.configs) != len(self.keys):
            raise ValueError(f"GroupTask: expected one key per config and at least one config, got "
                             f"{len(self.configs)} configs and {len(self.keys)} keys")


@dataclass
class GroupResult:
    """What a unit of work sends back: the records (task order), wall seconds, and where/how they ran."""

    records: list["RunRecord"]
    seconds: float
    code_fp: str
    device: str
    worker: str


def plan_groups(configs: Sequence["TrainConfig"], max_size: int | None = None, *,
                ensemble: bool = True) -> list[list[int]]:
    """Positions of `configs` grouped by `ensemble_group_key` (groups in first-appearance order, members
    in input order), split into chunks of at most `max_size`; `ensemble=False` gives one group per config."""
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size: expected None or a positive integer, got {max_size!r}")
    if not ensemble:
        return [[i] for i in range(len(configs))]
    from scangen.train.ensemble import ensemble_group_key

    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(ensemble_group_key(config), []).append(i)
    size = max_size or max(1, len(configs))
    return [members[j:j + size] for members in groups.values() for j in range(0, len(members), size)]


def where() -> str:
    """host:pid of this process (names the worker in results and errors)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def train_group(task: GroupTask, bags: "Bags", expected_code_fp: str | None = None) -> GroupResult:
    """Train `task.configs` on `bags` (run_ensemble for several, run_record for one) and time it.

    Raises RuntimeError, before training, when this process would use another device type than
    `task.device` or runs code whose fingerprint differs from `expected_code_fp`."""
    from scangen.train.device import cpu_threads, resolve_device
    from scangen.train.ensemble import run_ensemble
    from scangen.train.experiment import run_record

    devices = {resolve_device(c.device).type for c in task.configs}
    if devices != {task.device}:
        raise RuntimeError(f"worker {where()}: configs resolve to device {sorted(devices)}, but the grid keyed "
                           f"them for {task.device!r}; give every worker the same kind of device")
    code_fp = process_code_fingerprint()
    if expected_code_fp is not None and code_fp != expected_code_fp:
        raise RuntimeError(f"worker {where()}: scangen code fingerprint {code_fp} differs from the client's "
                           f"{expected_code_fp}; install the same scangen source on every worker")
    start = time.perf_counter()
    with cpu_threads(task.threads):
        configs = list(task.configs)
        records = run_ensemble(configs, bags) if len(configs) > 1 else [run_record(configs[0], bags)]
    seconds = time.perf_counter() - start
    if len(records) != len(configs):
        raise RuntimeError(f"run_ensemble returned {len(records)} records for {len(configs)} configs")
    return GroupResult(records=list(records), seconds=seconds, code_fp=code_fp, device=task.device, worker=where())


Outcome = tuple[GroupTask, "GroupResult | BaseException"]
"""A finished unit of work: its task and either its result or the error that ended it."""


class LocalExecutor:
    """Runs the grid's groups one after another in this process (no Dask needed); errors propagate."""

    def __init__(self, bags_of: Callable[[str], "Bags"]) -> None:
        self.bags_of = bags_of

    def device_type(self, device: str) -> str:
        """The device type runs asking for `device` get here ("auto" -> "cuda" / "mps" / "cpu")."""
        from scangen.train.device import resolve_device

        return resolve_device(device).type

    def run(self, tasks: Iterable[GroupTask], expected_code_fp: str | None = None) -> Iterator[Outcome]:
        """Yield (task, result) per group as each finishes (tasks of one FM consecutively)."""
        tasks = list(tasks)
        for task in sorted(tasks, key=_fm_order(tasks)):
            yield task, train_group(task, self.bags_of(task.fm), expected_code_fp)

    def close(self) -> None:
        """Nothing to release locally."""


def _fm_order(tasks: Iterable[GroupTask]) -> Callable[[GroupTask], int]:
    """Sort key keeping tasks of one FM together in first-appearance order (bags load once per FM)."""
    first: dict[str, int] = {}
    for task in tasks:
        first.setdefault(task.fm, len(first))
    return lambda task: first[task.fm]
