"""What a notebook needs from the store before it can run, and the note written when it cannot.

A notebook whose `parameters` cell carries the tag `needs-task` trains a classifier of the slide task
(03 tuning, 04 Table 1, 05 ablation, 06 MIL heads). On an embedding-only store (meta.json `"task":
null`) the pipeline does not execute it: it writes the executed copy as the source notebook with a
first cell saying why it was skipped, records it in the manifest as `skipped` (so `status` shows it up
to date and a rerun does not retry it until the store or notebook changes), and goes on. The
notebooks that follow, and the pipeline's exit status, are unaffected. The article needs the training
results, so `quarto render` on an embedding-only store stops at its first missing embed; run
`python -m scangen.pipeline run --params <set>` and read the executed notebooks in `build/notebooks/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NEEDS_TASK_TAG = "needs-task"


def needs_task(notebook: Path) -> bool:
    """Whether the notebook's parameters cell carries the `needs-task` tag."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    return any(NEEDS_TASK_TAG in c.get("metadata", {}).get("tags", []) and "parameters" in c["metadata"]["tags"]
               for c in nb.get("cells", []) if c.get("cell_type") == "code")


def store_of(parameters: dict[str, Any], root: Path) -> Path | None:
    """The store a notebook reads: its `store_dir` (root-relative or absolute), else the simulated one."""
    from scangen import paths
    from scangen.pipeline.params import resolve_parameter_path

    if parameters.get("store_dir"):
        return resolve_parameter_path(parameters["store_dir"], root)
    if "size" in parameters and "seed" in parameters:
        return Path(root) / paths.simulated_store(parameters["size"], parameters["seed"]).relative_to(paths.ROOT)
    return None


def skip_reason(notebook: Path, parameters: dict[str, Any], root: Path) -> str | None:
    """Why the pipeline must skip `notebook` with these parameters (None: run it). Only a store that
    exists and says it has no task is a reason; an absent store is notebook 01's business."""
    if not needs_task(notebook):
        return None
    store = store_of(parameters, root)
    if store is None or not (store / "meta.json").is_file():
        return None
    from scangen.store import read_task_column

    if read_task_column(store) is not None:
        return None
    return (f"the store {parameters.get('store_dir') or store.name} has no slide task label (an embedding-only "
            f"store: meta.json \"task\" is null). This notebook trains a classifier of the slide task, so it "
            f"needs one: import the cohort with a binary label column (notebook 01's import_options: "
            f"{{task: <column>}}, or `python -m scangen.store import ... --task <column>`) to run it. The "
            f"embedding-level analysis (notebook 02) runs without a task.")


def write_skipped(source: Path, target: Path, reason: str) -> None:
    """The executed copy of a skipped notebook: the source with a first cell saying why it did not run."""
    import nbformat

    from scangen.atomic import atomic_write_text

    nb = nbformat.read(source, as_version=4)
    note = nbformat.v4.new_markdown_cell(f"**Not run:** {reason}")
    note.id = "skipped-note"
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, note)  # after the title
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, nbformat.writes(nb) + "\n")
