"""Specimen-level, label-stratified splits of the multiscanner cohort.

Every WSI of a specimen lands in the same split (no leakage across scanners or magnifications).
Within each class of the task label (in-memory column `egfr`, whatever the task's name), specimens
are shuffled with `seed` and cut by `fractions` using largest-remainder rounding, so every split's
class balance is within one specimen of the cohort's; validation and test must hold both classes
(else AUC and thresholds are undefined: an error names the split and the class counts). An
embedding-only store (label all null) is split without stratification. Task-cohort WSIs form the
training pool and get the split `TASK_SPLIT`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

SPLIT_NAMES: tuple[str, str, str] = ("scangen_train", "val", "test")
TASK_SPLIT = "task_train"
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.5, 0.2, 0.3)
_REQUIRED = ("slide_id", "specimen_id", "cohort", "egfr")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    """Fractions as an array; three positive numbers summing to 1."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f <= 0) or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"fractions: expected three positive numbers summing to 1 "
            f"for {SPLIT_NAMES}, got {tuple(fractions)}"
        )
    return f


def _allocate(n: int, f: np.ndarray) -> np.ndarray:
    """Counts per split summing to `n` (largest remainder), each split non-empty when n >= 3."""
    raw = f * n
    counts = np.floor(raw).astype(np.int64)
    rest = n - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:rest]] += 1
    if n >= len(f):
        while np.any(counts == 0):
            counts[int(np.argmax(counts))] -= 1
            counts[int(np.argmin(counts))] += 1
    return counts


def specimen_table(slides: pl.DataFrame) -> pl.DataFrame:
    """One row per specimen (`specimen_id`, `cohort`, `egfr`); errors on inconsistent labels."""
    missing = [c for c in _REQUIRED if c not in slides.columns]
    if missing:
        raise ValueError(f"slides: missing columns {missing}")
    per = slides.group_by("specimen_id").agg(
        pl.col("egfr").n_unique().alias("n_egfr"),
        pl.col("cohort").n_unique().alias("n_cohort"),
        pl.col("egfr").first(),
        pl.col("cohort").first(),
    )
    bad = per.filter((pl.col("n_egfr") > 1) | (pl.col("n_cohort") > 1))["specimen_id"].to_list()
    if bad:
        raise ValueError(f"slides: specimens with more than one egfr label or cohort: {sorted(bad)[:10]}")
    missing = per.filter(pl.col("egfr").is_null())["specimen_id"].to_list()
    if missing and len(missing) < per.height:
        raise ValueError(
            f"slides: column 'egfr' (the task label) has missing labels for specimens {sorted(missing)[:10]} "
            f"({len(missing)} in all)"
        )
    return per.select("specimen_id", "cohort", "egfr").sort("specimen_id")


EVALUATION_SPLITS: tuple[str, str] = ("val", "test")


def check_split_classes(specimens: pl.DataFrame, split_of: dict[str, str]) -> None:
    """Validation and test must each hold both label classes (AUC, thresholds); else a clear error."""
    table = specimens.with_columns(pl.col("specimen_id").replace_strict(split_of).alias("_split"))
    counts = {(r["_split"], r["egfr"]): r["len"] for r in table.group_by("_split", "egfr").len().iter_rows(named=True)}
    classes = sorted(set(specimens["egfr"].to_list()))
    for split in EVALUATION_SPLITS:
        absent = [c for c in (0, 1) if counts.get((split, c), 0) == 0]
        if absent:
            per_class = {c: int((specimens["egfr"] == c).sum()) for c in classes}
            raise ValueError(
                f"slides: split {split!r} has no specimen of class {absent} of column 'egfr' (the task label); the "
                f"multiscanner cohort has specimens per class {per_class}: validation and test need both classes "
                f"(at least 3 specimens of each class)"
            )


def specimen_splits(
    slides: pl.DataFrame, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> pl.DataFrame:
    """`slides` with its `split` column set: multiscanner specimens into scangen_train/val/test.

    Stratified by EGFR at the specimen level; task-cohort rows get "task_train"; rows of any other
    cohort raise. Row order and all other columns are kept. Deterministic for a given `seed`.
    """
    f = _check_fractions(fractions)
    spec = specimen_table(slides)
    unknown = sorted(set(spec["cohort"].to_list()) - {"task", "multiscanner"})
    if unknown:
        raise ValueError(f"slides: column 'cohort' has unknown values {unknown}; expected 'task' or 'multiscanner'")
    multi = spec.filter(pl.col("cohort") == "multiscanner")
    if multi.height == 0:
        raise ValueError("slides: no multiscanner specimens to split")
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    names: list[str] = []
    labelled = multi["egfr"].null_count() == 0
    for label in sorted(set(multi["egfr"].to_list())) if labelled else [None]:
        chosen = multi.filter(pl.col("egfr") == label) if labelled else multi
        members = np.asarray(chosen["specimen_id"].to_list())
        members = members[rng.permutation(members.size)]
        counts = _allocate(members.size, f)
        ids.extend(members.tolist())
        for name, c in zip(SPLIT_NAMES, counts):
            names.extend([name] * int(c))
    if labelled:
        check_split_classes(multi, dict(zip(ids, names)))
    assign = pl.DataFrame({"specimen_id": ids, "_split": names}, schema={"specimen_id": slides.schema["specimen_id"], "_split": pl.String})
    out = slides.drop("split", strict=False).join(assign, on="specimen_id", how="left", maintain_order="left")
    out = out.with_columns(
        pl.when(pl.col("cohort") == "task").then(pl.lit(TASK_SPLIT)).otherwise(pl.col("_split")).alias("split")
    ).drop("_split")
    cols = slides.columns if "split" in slides.columns else slides.columns + ["split"]
    return out.select(cols)
