"""Specimen splits: no leakage, class balance, determinism, task rows, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.constants import SCANNERS_40X
from scangen.splits import SPLIT_NAMES, TASK_SPLIT, specimen_splits


def _slides(n_spec: int = 60, n_task: int = 10, pos_rate: float = 0.35, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_spec):
        y = int(rng.random() < pos_rate)
        for scanner in SCANNERS_40X:
            rows.append({"slide_id": f"m{i}-{scanner}", "specimen_id": f"m{i}", "cohort": "multiscanner",
                         "scanner": scanner, "egfr": y})
    for i in range(n_task):
        rows.append({"slide_id": f"t{i}", "specimen_id": f"t{i}", "cohort": "task", "scanner": "AT2", "egfr": i % 2})
    return pl.DataFrame(rows)


def test_no_specimen_crosses_splits_and_task_rows_marked() -> None:
    slides = _slides()
    out = specimen_splits(slides, seed=0)
    assert out.height == slides.height and out["slide_id"].to_list() == slides["slide_id"].to_list()
    assert out.group_by("specimen_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert set(out.filter(pl.col("cohort") == "task")["split"]) == {TASK_SPLIT}
    assert set(out.filter(pl.col("cohort") == "multiscanner")["split"]) == set(SPLIT_NAMES)
    assert out["split"].null_count() == 0


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_splits_are_class_balanced_with_requested_sizes(seed: int) -> None:
    slides = _slides(seed=seed)
    fractions = (0.5, 0.2, 0.3)
    out = specimen_splits(slides, seed=seed, fractions=fractions)
    spec = out.filter(pl.col("cohort") == "multiscanner").unique("specimen_id")
    for label in (0, 1):
        n_label = spec.filter(pl.col("egfr") == label).height
        for name, frac in zip(SPLIT_NAMES, fractions):
            n = spec.filter((pl.col("egfr") == label) & (pl.col("split") == name)).height
            assert abs(n - frac * n_label) < 1.0 + 1e-9, (label, name, n, n_label)


def test_splits_deterministic_and_seed_dependent() -> None:
    slides = _slides()
    a = specimen_splits(slides, seed=3)
    assert a.equals(specimen_splits(slides, seed=3))
    assert not a.equals(specimen_splits(slides, seed=4))


def test_split_errors() -> None:
    slides = _slides()
    with pytest.raises(ValueError, match="fractions"):
        specimen_splits(slides, seed=0, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="missing columns"):
        specimen_splits(slides.drop("egfr"), seed=0)
    bad = slides.with_columns(
        pl.when(pl.col("slide_id") == "m0-AT2").then(1 - pl.col("egfr")).otherwise(pl.col("egfr")).alias("egfr")
    )
    with pytest.raises(ValueError, match="more than one egfr label.*m0"):
        specimen_splits(bad, seed=0)


def test_evaluation_splits_need_both_classes() -> None:
    slides = _slides(n_spec=12, n_task=0)
    rare = slides.with_columns(pl.when(pl.col("specimen_id").is_in(["m0", "m1"])).then(1).otherwise(0).alias("egfr"))
    with pytest.raises(ValueError, match=r"split '(val|test)' has no specimen of class \[1\].*\{0: 10, 1: 2\}"):
        specimen_splits(rare, seed=0)


def test_embedding_only_cohort_is_split_without_labels() -> None:
    slides = _slides(n_spec=10, n_task=0).with_columns(pl.lit(None, dtype=pl.Int8).alias("egfr"))
    out = specimen_splits(slides, seed=3)
    per = out.group_by("split").agg(pl.col("specimen_id").n_unique()).sort("split")
    assert dict(per.iter_rows()) == {"scangen_train": 5, "test": 3, "val": 2}
    partial = _slides(n_spec=10, n_task=0).with_columns(
        pl.when(pl.col("specimen_id") == "m3").then(None).otherwise(pl.col("egfr")).alias("egfr"))
    with pytest.raises(ValueError, match=r"missing labels for specimens \['m3'\]"):
        specimen_splits(partial, seed=0)
