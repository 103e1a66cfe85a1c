"""The source notebooks (`notebooks/NN_name.ipynb`) are edited where they are read; this keeps them clean.

A source notebook carries no outputs, no execution counts and no per-run cell metadata (what
JupyterLab or papermill add while running), so that diffs show only what a person changed and the
pipeline's cache key (`cache.notebook_source_sha256`) does not move when a notebook is merely run.
`python -m scangen.pipeline strip` applies `strip_notebook` to every source notebook.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from scangen.atomic import atomic_write_text

KEPT_CELL_METADATA = ("tags", "editable", "deletable", "jupyter")
"""Cell metadata a person sets on purpose (tags carry `parameters`); everything else is run state."""


def stripped(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `nb` without outputs, execution counts or run metadata (cell ids are kept)."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEPT_CELL_METADATA}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    if "language_info" in nb.metadata:
        nb.metadata["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """The canonical on-disk text of a notebook (nbformat's layout plus a final newline)."""
    return nbformat.writes(nb) + "\n"


def strip_notebook(path: Path) -> bool:
    """Rewrite `path` stripped (atomically) if it is not already; return whether it changed."""
    path = Path(path)
    before = path.read_text(encoding="utf-8")
    after = notebook_text(stripped(nbformat.reads(before, as_version=4)))
    if after == before:
        return False
    atomic_write_text(path, after)
    return True
