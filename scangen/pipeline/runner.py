"""Execute a parameter set's notebooks in order with papermill, reusing cached runs, atomically.

For each notebook of the set (or those picked by `only`): compute its cache key; if the manifest
says the last run is still valid, skip it; otherwise execute the source into `build/tmp/`, and only
on success move the copy to `build/runs/<set>/` and record it in the manifest (both by
`os.replace`). A failure moves the partial copy to `build/failed/<set>/`, leaves the previous
executed copy and manifest entry untouched, and raises `NotebookFailed` naming notebook and cell.
After a successful run the set's executed copies are published to `build/notebooks/`, the stable
paths the paper embeds, together with `active-set.json` naming the set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from scangen.atomic import atomic_write_with
from scangen.pipeline import cache
from scangen.pipeline.layout import ACTIVE_SET_FILE, Layout
from scangen.pipeline.params import ParamSet, load_param_set

DEFAULT_KERNEL = "python3"


class NotebookFailed(RuntimeError):
    """A notebook raised while executing; the message names the notebook, cell and error."""

    def __init__(self, notebook: str, detail: str, failed_copy: Path):
        self.notebook, self.detail, self.failed_copy = notebook, detail, failed_copy
        super().__init__(f"notebook {notebook} failed: {detail}\n  executed copy kept for inspection: "
                         f"{failed_copy}")


@dataclass
class NotebookState:
    """Where one notebook stands: `fresh` (cached run valid) or the reasons it must run."""

    name: str
    reasons: list[str]
    key: cache.CacheKey
    parameters: dict[str, Any]

    @property
    def fresh(self) -> bool:
        return not self.reasons


@dataclass
class RunReport:
    """What `run` did, per notebook: `cached` or `executed` with the seconds it took."""

    param_set: str
    actions: dict[str, str]
    seconds: dict[str, float]


def _upstream(pset: ParamSet, name: str) -> list[str]:
    names = pset.names()
    return names[: names.index(name)]


def notebook_state(pset: ParamSet, name: str, layout: Layout, manifest: cache.Manifest,
                   package: str) -> NotebookState:
    """Compute a notebook's cache key now and compare it with its manifest entry."""
    parameters = pset.parameters_for(name, layout)
    results_dir = layout.results_dir(pset.name)
    key = cache.CacheKey(
        source=cache.notebook_source_sha256(pset.notebook(name).path),
        parameters=cache.json_sha256(parameters),
        package=package,
        upstream=cache.json_sha256(manifest.outputs_of(_upstream(pset, name))),
        data=cache.data_digest(parameters, layout.root),
    )
    executed = layout.runs(pset.name) / f"{name}.ipynb"
    reasons = cache.staleness(manifest.entries.get(name), key, executed, results_dir)
    return NotebookState(name, reasons, key, parameters)


def plan(param_set: str | Path, layout: Layout | None = None) -> tuple[ParamSet, list[NotebookState]]:
    """The state of every notebook of a set, assuming upstream notebooks keep their recorded outputs."""
    layout = layout or Layout.default()
    pset = load_param_set(param_set, layout)
    manifest = cache.Manifest.load(layout.manifest(pset.name), pset.name)
    package = cache.package_sha256()
    return pset, [notebook_state(pset, n, layout, manifest, package) for n in pset.names()]


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _describe_failure(exc: BaseException) -> str:
    source = getattr(exc, "source", None)
    if source is None:
        return f"{type(exc).__name__}: {exc}"
    label = next((line.split(":", 1)[1].strip() for line in source.splitlines()
                  if line.startswith("#| label:")), None)
    first = next((line for line in source.splitlines() if line.strip() and not line.startswith("#|")), "")
    where = f"cell {label!r}" if label else f"cell [{getattr(exc, 'exec_count', '?')}] starting {first.strip()!r}"
    return f"{where} raised {getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"


def execute_notebook(source: Path, parameters: dict[str, Any], layout: Layout, param_set: str,
                     name: str, kernel: str = DEFAULT_KERNEL, log_output: bool = False) -> Path:
    """Run one notebook into `build/tmp/`; return the temporary copy, or raise `NotebookFailed`."""
    import papermill

    layout.scratch.mkdir(parents=True, exist_ok=True)
    tmp = layout.scratch / f"{param_set}--{name}.{os.getpid()}.ipynb"
    try:
        with _environment(SCANGEN_ROOT=str(layout.root), PYTHONHASHSEED="0"):
            papermill.execute_notebook(str(source), str(tmp), parameters=parameters, kernel_name=kernel,
                                       cwd=str(layout.root), progress_bar=False, log_output=log_output)
    except BaseException as exc:
        failed = layout.failed(param_set) / f"{name}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            os.replace(tmp, failed)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise NotebookFailed(name, _describe_failure(exc), failed) from exc
    _record_relative_paths(tmp, f"notebooks/{Path(source).name}",
                           (layout.runs(param_set) / f"{name}.ipynb").relative_to(layout.root).as_posix())
    return tmp


def _record_relative_paths(executed: Path, input_path: str, output_path: str) -> None:
    """Replace papermill's absolute `input_path`/`output_path` (this machine's folders) in the
    executed copy's metadata with root-relative ones, so the copy is the same on every checkout."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    record = nb.metadata.get("papermill")
    if record is None:
        return
    record["input_path"], record["output_path"] = input_path, output_path
    nbformat.write(nb, executed)


def run(param_set: str | Path, layout: Layout | None = None, *, only: list[str] | None = None,
        force: bool = False, kernel: str = DEFAULT_KERNEL, log: Callable[[str], None] = print,
        log_output: bool = False) -> RunReport:
    """Bring a set's notebooks up to date (all, or `only`), then publish them for the paper."""
    layout = layout or Layout.default()
    pset = load_param_set(param_set, layout)
    selected = pset.select(only)
    layout.root.mkdir(parents=True, exist_ok=True)
    results_dir = layout.results_dir(pset.name)
    manifest_path = layout.manifest(pset.name)
    manifest = cache.Manifest.load(manifest_path, pset.name)
    package = cache.package_sha256()
    report = RunReport(pset.name, {}, {})
    for name in selected:
        state = notebook_state(pset, name, layout, manifest, package)
        if only:
            _warn_stale_upstream(pset, name, layout, manifest, package, log)
        if state.fresh and not force:
            log(f"[{pset.name}] {name}: up to date (cached)")
            report.actions[name] = "cached"
            continue
        why = "forced" if force and state.fresh else "; ".join(state.reasons)
        log(f"[{pset.name}] {name}: executing ({why})")
        started = time.perf_counter()
        before = cache.snapshot(results_dir, exclude=(manifest_path,))
        tmp = execute_notebook(pset.notebook(name).path, state.parameters, layout, pset.name, name,
                               kernel=kernel, log_output=log_output)
        outputs = cache.written_since(before, results_dir, exclude=(manifest_path,))
        target = layout.runs(pset.name) / f"{name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        (layout.failed(pset.name) / f"{name}.ipynb").unlink(missing_ok=True)
        state.key.data = cache.data_digest(state.parameters, layout.root)
        seconds = time.perf_counter() - started
        manifest.entries[name] = {
            "key": state.key.to_json(),
            "parameters": state.parameters,
            "executed_sha256": cache.file_sha256(target),
            "outputs": outputs,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2),
        }
        manifest.save()
        report.actions[name], report.seconds[name] = "executed", seconds
        log(f"[{pset.name}] {name}: done in {seconds:.1f} s, wrote {len(outputs)} result file(s)")
    publish(pset, layout, manifest)
    return report


def _warn_stale_upstream(pset: ParamSet, name: str, layout: Layout, manifest: cache.Manifest,
                         package: str, log: Callable[[str], None]) -> None:
    for up in _upstream(pset, name):
        if up not in manifest.entries:
            log(f"[{pset.name}] warning: {name} runs before its upstream notebook {up} was ever run")
        elif not notebook_state(pset, up, layout, manifest, package).fresh:
            log(f"[{pset.name}] warning: upstream notebook {up} is out of date; {name} uses its old outputs")


def publish(pset: ParamSet, layout: Layout, manifest: cache.Manifest) -> list[Path]:
    """Copy the set's executed notebooks to `build/notebooks/` (atomically) and record the set."""
    layout.executed.mkdir(parents=True, exist_ok=True)
    published = []
    for name in pset.names():
        source = layout.runs(pset.name) / f"{name}.ipynb"
        if name not in manifest.entries or not source.is_file():
            continue
        target = layout.executed / f"{name}.ipynb"
        atomic_write_with(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
        published.append(target)
    # a notebook of another set must never sit beside this set's results
    stale = [p for p in layout.executed.glob("*.ipynb") if p not in published]
    for path in stale:
        path.unlink()
    record = {"param_set": pset.name,
              "results_dir": layout.results_dir(pset.name).relative_to(layout.root).as_posix(),
              "notebooks": {p.stem: cache.file_sha256(p) for p in published}}
    cache.atomic_write_text(layout.executed / ACTIVE_SET_FILE, json.dumps(record, indent=2) + "\n")
    return published


def active_set(layout: Layout | None = None) -> dict[str, Any] | None:
    """The record of the set whose notebooks are published in `build/notebooks/` (None if none)."""
    layout = layout or Layout.default()
    path = layout.executed / ACTIVE_SET_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
