"""Run the grid's units of work on a Dask distributed cluster (optional: `pip install scangen[cluster]`).

Workers receive the bags, they do not read the store: the client loads each FM's bags once and
scatters them to every worker (broadcast: scattered data is not recomputable, so a copy on a single
worker would be lost with it and fail every later group of that FM; a restarted or added worker
fetches it from a peer), and frees them when the FM's last group is done. Workers need scangen and
its dependencies but no access to the store or the run cache. Each group
(`scangen.experiments.grid.train_group`) comes back to the client as soon as it finishes, and the
caller writes it to the run cache at once, so a worker lost later loses no finished run. A group whose
worker died (after Dask's `distributed.scheduler.allowed-failures` retries) or that raised is
reported as an error outcome, the others go on; the session then raises, and a rerun trains only
what is not cached.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from scangen.experiments.grid import GroupTask, Outcome, train_group

if TYPE_CHECKING:
    from distributed import Client

    from scangen.store import Bags


def connect(scheduler: "str | Client") -> tuple["Client", bool]:
    """(client, owned): a Client for a scheduler address, or the given Client (not owned: not closed here)."""
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"scheduler={scheduler!r}: running the grid on Dask needs the `distributed` package "
                          "(pip install 'scangen[cluster]'); leave scheduler unset to run locally") from err
    if isinstance(scheduler, Client):
        return scheduler, False
    if not isinstance(scheduler, str) or not scheduler:
        raise TypeError(f"scheduler: expected a Dask scheduler address such as 'tcp://host:8786' or a "
                        f"distributed.Client, got {scheduler!r}")
    return Client(scheduler), True


def _device_type(device: str) -> str:
    from scangen.train.device import resolve_device

    return resolve_device(device).type


class DaskExecutor:
    """Dispatches GroupTasks to a Dask cluster; see the module docstring."""

    def __init__(self, scheduler: "str | Client", bags_of: Callable[[str], "Bags"]) -> None:
        self.client, self._owned = connect(scheduler)
        self.bags_of = bags_of

    def device_type(self, device: str) -> str:
        """The device type the cluster's workers resolve `device` to; all workers must agree."""
        if not self.client.scheduler_info().get("workers"):
            self.client.wait_for_workers(1, timeout=600)
        types = self.client.run(_device_type, device)
        kinds = sorted(set(types.values()))
        if len(kinds) != 1:
            raise RuntimeError(f"Dask workers resolve device {device!r} to different types {types}; a grid needs "
                               "one device type (CPU and GPU runs round differently); set TrainConfig.device")
        return kinds[0]

    def run(self, tasks: Iterable[GroupTask], expected_code_fp: str | None = None) -> Iterator[Outcome]:
        """Submit every task and yield (task, result or exception) in completion order."""
        from distributed import as_completed

        tasks = list(tasks)
        left = Counter(task.fm for task in tasks)
        bags: dict[str, Any] = {}
        futures = {}
        for task in tasks:
            if task.fm not in bags:
                # a copy on every worker: scattered data that lived on one dead worker could not be recomputed
                bags[task.fm] = self.client.scatter(self.bags_of(task.fm), hash=False, broadcast=True)
            future = self.client.submit(train_group, task, bags[task.fm], expected_code_fp,
                                        key=f"train_group-{task.fm}-{uuid.uuid4().hex[:12]}")
            futures[future] = task
        try:
            for future in as_completed(futures):
                task = futures[future]
                outcome = future.result() if future.status == "finished" else future.exception()
                future.release()
                left[task.fm] -= 1
                if not left[task.fm]:
                    bags.pop(task.fm).release()  # the FM's last group is done: free its bags on the workers
                yield task, outcome
        finally:
            for future in futures:
                future.release()
            for future in bags.values():
                future.release()

    def close(self) -> None:
        """Close the client if this executor opened it."""
        if self._owned:
            self.client.close()
