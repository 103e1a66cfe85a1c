"""Where the pipeline reads and writes, derived from `scangen.paths` and relocatable under another root.

`scangen.paths` is the only module that names folders; a `Layout` keeps that relative structure but
lets tests (and `--root`) move the build and result trees into another directory while reading the
notebooks and parameter sets from the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from scangen import paths

PARAMS_ENV = "SCANGEN_PARAMS"
"""Environment variable naming the parameter set when none is given (Quarto's pre-render uses it)."""
DEFAULT_PARAM_SET = "quick"
ACTIVE_SET_FILE = "active-set.json"
"""Written beside the published notebooks: which parameter set produced them."""
MANIFEST_FILE = "manifest.json"
"""One per parameter set, inside its results folder: what each notebook ran with and wrote."""


@dataclass(frozen=True)
class Layout:
    """The folders of one pipeline: sources (`notebooks`, `params`) and products (`build`, `results`).

    `root` is the kernels' working directory, their `SCANGEN_ROOT`, and the base of relative
    `*_dir` parameters. Products below `build`: `notebooks/` the published executed copies of the
    active set (what the paper embeds), `runs/<set>/` every set's executed copies (the cache),
    `failed/<set>/` copies of failed runs, `tmp/` files awaiting an atomic `os.replace`.
    """

    root: Path
    notebooks: Path
    params: Path
    build: Path
    results: Path

    @classmethod
    def default(cls) -> "Layout":
        """The repository's own folders (honours `SCANGEN_ROOT` through `scangen.paths`)."""
        return cls(paths.ROOT, paths.NOTEBOOKS, paths.PARAMS, paths.BUILD, paths.RESULTS)

    @classmethod
    def under(cls, root: Path | str, *, sources_from: "Layout | None" = None) -> "Layout":
        """The same structure below `root`; notebooks and params come from `sources_from` if given."""
        root = Path(root).resolve()
        base = cls.default()

        def moved(path: Path) -> Path:
            return root / path.relative_to(base.root)

        layout = cls(root, moved(base.notebooks), moved(base.params), moved(base.build),
                     moved(base.results))
        if sources_from is not None:
            layout = replace(layout, notebooks=sources_from.notebooks, params=sources_from.params)
        return layout

    def _build_sub(self, path: Path) -> Path:
        return self.build / path.relative_to(paths.BUILD)

    @property
    def executed(self) -> Path:
        """Published executed notebooks of the active set: the copies the paper embeds."""
        return self._build_sub(paths.EXECUTED_NOTEBOOKS)

    def runs(self, param_set: str) -> Path:
        """Executed copies of one parameter set (kept per set so switching sets reuses them)."""
        return self._build_sub(paths.NOTEBOOK_RUNS) / param_set

    def failed(self, param_set: str) -> Path:
        """Executed copies of notebooks that failed, kept for inspection."""
        return self._build_sub(paths.FAILED_NOTEBOOKS) / param_set

    @property
    def scratch(self) -> Path:
        """Temporary files written before an atomic `os.replace` (same file system as targets)."""
        return self._build_sub(paths.BUILD_TMP)

    def results_dir(self, param_set: str) -> Path:
        """Result tables and figures of one parameter set."""
        return self.results / paths.results_dir(param_set).relative_to(paths.RESULTS)

    def manifest(self, param_set: str) -> Path:
        """The cache manifest of one parameter set."""
        return self.results_dir(param_set) / MANIFEST_FILE


def param_set_from_env(explicit: str | None = None) -> str:
    """The set to run: `explicit`, else `$SCANGEN_PARAMS`, else `quick`."""
    return explicit or os.environ.get(PARAMS_ENV) or DEFAULT_PARAM_SET
