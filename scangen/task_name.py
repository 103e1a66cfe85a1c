"""The name of the slide task that tables, figures and notebooks show ("EGFR", "MSI", "KRAS", ...).

In memory the task's label column is always `egfr` (scangen.store.schema.LABEL_COLUMN; the on-disk
column carries the task's own name, recorded in meta.json). What a reader sees must be the task's
name instead: "MSI AUC" on an msi store, never "EGFR AUC". Each notebook runs in its own kernel on
one store, so the shown name is a per-process setting: `scangen.experiments.data.resolve_store` and
`prepare_store` call `use_store_task(store)`; table and figure code reads `task_label()`.

    display_name("msi") -> "MSI"; display_name("tumour_grade") -> "Tumour grade"
    use_task("msi"); task_label() -> "MSI"        (default "EGFR": the simulated cohort's task)
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_LABEL = "EGFR"
_current: list[str] = [DEFAULT_LABEL]


def display_name(task: str | None) -> str:
    """A reader's name for a task column: short single words (gene/marker names such as egfr, msi,
    kras, her2) in capitals, longer names as a sentence-case phrase; None (embedding-only) -> "task"."""
    if not task:
        return "task"
    words = [w for w in str(task).split("_") if w]
    if len(words) == 1 and len(words[0]) <= 5:
        return words[0].upper()
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def use_task(task: str | None) -> str:
    """Show `task` (a column name) from now on in this process; returns its display name."""
    _current[0] = display_name(task) if task else DEFAULT_LABEL
    return _current[0]


def use_store_task(store: Path) -> str:
    """Show the task of `store` (meta.json's task column); an embedding-only store shows "task"."""
    from scangen.store import read_task_column

    task = read_task_column(Path(store))
    _current[0] = display_name(task)
    return _current[0]


def task_label() -> str:
    """The task name tables and figures show now ("EGFR" unless a store said otherwise)."""
    return _current[0]
