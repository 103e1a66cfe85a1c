"""A store's vocabulary, read from its data: scanners, magnifications, two-magnification scanners, task.

Nothing here is a fixed list: any scanner name (free text, trimmed; known aliases such as
"Philips UFS B300" or "UFS-B300" map to one code, and a user alias map comes first), any positive
integer magnification and any binary task column (its name recorded in meta.json) make a store.

    store_vocabulary(store) -> Vocabulary      the vocabulary of a store on disk
    slides_vocabulary(slides, task) -> ...     the same from a slides table in memory
    read_task_column(store) -> str | None      the task's column name (None: embedding-only store)
    canonical_scanner(name, aliases) -> str    one scanner name after trimming and alias mapping
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from scangen.constants import SCANNER_ALIASES, SCANNER_NAMES
from scangen.scan_labels import MagnificationPair, magnification_pairs_of, primary_scanners

from .schema import StoreValidationError

DEFAULT_TASK = "egfr"
"""Task column of stores whose meta.json has no "task" key (the simulated cohort and older stores)."""
_KEY = re.compile(r"[\s\-_.]+")


def alias_key(name: str) -> str:
    """Matching key of a scanner name: lower case without spaces, '-', '_' or '.'."""
    return _KEY.sub("", str(name).strip().lower())


def known_aliases() -> dict[str, str]:
    """Alias key -> scanner code for the known scanners (codes, full names and `SCANNER_ALIASES`)."""
    table = {alias_key(code): code for code in SCANNER_NAMES}
    table.update({alias_key(name): code for code, name in SCANNER_NAMES.items()})
    table.update({alias_key(name): code for name, code in SCANNER_ALIASES.items()})
    return table


def canonical_scanner(name: str, aliases: Mapping[str, str] | None = None) -> str:
    """`name` trimmed, then mapped by the user's `aliases` (first) or the known aliases; other names
    are kept as written (trimmed). Matching ignores case, spaces, '-', '_' and '.'."""
    text = str(name).strip()
    key = alias_key(text)
    if aliases:
        user = {alias_key(k): str(v).strip() for k, v in aliases.items()}
        if key in user:
            return user[key]
    return known_aliases().get(key, text)


def check_scanner_names(names: pl.Series, ids: pl.Series, source: str) -> None:
    """Scanner names must be non-empty and free of '@' (reserved for scan labels such as 'GT450@20x')."""
    bad = (names.str.strip_chars() == "") | names.str.contains("@", literal=True)
    if bad.any():
        from .schema import format_ids

        values = sorted(set(names.filter(bad).to_list()))
        raise StoreValidationError(
            f"{source}: column 'scanner' has names {values} that are empty or contain '@' (reserved for "
            f"scan labels like 'GT450@20x') for slide ids {format_ids(ids.filter(bad).to_list())}"
        )


_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESERVED_COLUMNS = ("slide_id", "specimen_id", "cohort", "scanner", "magnification", "site", "split", "simulated")


def check_task_name(task: object, source: str) -> str:
    """A task name is a column name: a letter, then letters, digits or '_'; not a reserved column."""
    if not isinstance(task, str) or not _TASK_NAME.match(task) or task in RESERVED_COLUMNS:
        raise StoreValidationError(
            f"{source}: task label column {task!r} must be a name of letters, digits and '_' starting with a "
            f"letter, other than {list(RESERVED_COLUMNS)}"
        )
    return task


def task_of_meta(meta: Mapping) -> str | None:
    """The task column named by meta.json: meta["task"]["label_column"]; no "task" key means the
    default `egfr`; "task": null means an embedding-only store (no slide label)."""
    if "task" not in meta:
        return DEFAULT_TASK
    task = meta["task"]
    if task is None:
        return None
    if not isinstance(task, Mapping) or "label_column" not in task:
        raise StoreValidationError(f"meta.json: key 'task' must be null or {{\"label_column\": name}}, got {task!r}")
    return check_task_name(task["label_column"], "meta.json task")


def read_task_column(store: Path) -> str | None:
    """The task's column name in `store`'s slides.parquet (None: embedding-only store)."""
    from .reader import read_meta

    return task_of_meta(read_meta(store))


@dataclass(frozen=True)
class Vocabulary:
    """What a store holds, read from its data.

    scanners: every scanner name, first-appearance order; primary_scanners: the multiscanner
    cohort's scanners at the store's highest magnification (the ones CoV, ScanGen and the ablation
    range over); magnifications: every magnification, highest first; primary_magnification: the
    highest; magnification_pairs / two_magnification_scanners: scanners that scanned the same
    specimens at two magnifications (empty: the magnification CoV is not available); task: the task
    column's name (None: embedding-only store); models: the FMs with embeddings.
    """

    scanners: tuple[str, ...]
    primary_scanners: tuple[str, ...]
    magnifications: tuple[int, ...]
    primary_magnification: int
    magnification_pairs: tuple[MagnificationPair, ...]
    task: str | None
    models: tuple[str, ...] = ()

    @property
    def two_magnification_scanners(self) -> tuple[str, ...]:
        """Scanners with a magnification pair, in order (empty: no magnification CoV)."""
        return tuple(dict.fromkeys(p.scanner for p in self.magnification_pairs))

    @property
    def has_task(self) -> bool:
        """True when the store has a slide-level task label (training notebooks need one)."""
        return self.task is not None

    def to_json(self) -> dict:
        """The part recorded in meta.json["vocabulary"]."""
        return {"scanners": list(self.scanners), "primary_scanners": list(self.primary_scanners),
                "magnifications": list(self.magnifications),
                "two_magnification_scanners": list(self.two_magnification_scanners)}


def slides_vocabulary(slides: pl.DataFrame, task: str | None = DEFAULT_TASK,
                      models: tuple[str, ...] = ()) -> Vocabulary:
    """The vocabulary of a slides table (multiscanner cohort rows decide the primary scanners and the
    magnification pairs; a store without multiscanner rows uses all rows)."""
    if slides.height == 0:
        raise ValueError("slides: no slide, no vocabulary")
    multi = slides.filter(pl.col("cohort") == "multiscanner") if "cohort" in slides.columns else slides
    cohort = "multiscanner" if multi.height else None
    mags = sorted({int(m) for m in slides["magnification"].to_list()}, reverse=True)
    return Vocabulary(
        scanners=tuple(dict.fromkeys(slides["scanner"].to_list())),
        primary_scanners=primary_scanners(slides, cohort=cohort),
        magnifications=tuple(mags),
        primary_magnification=int((multi if multi.height else slides)["magnification"].max()),
        magnification_pairs=magnification_pairs_of(multi if multi.height else slides),
        task=task,
        models=tuple(models),
    )


def store_vocabulary(store: Path) -> Vocabulary:
    """The vocabulary of the store at `store` (read from slides.parquet and meta.json)."""
    from .reader import list_models, read_meta, read_slides

    meta = read_meta(store)
    return slides_vocabulary(read_slides(store), task_of_meta(meta), tuple(list_models(store)))
