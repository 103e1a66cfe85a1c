"""The task label: its column is named in meta.json (any task, or none) and read as `egfr` in memory."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from scangen.store import (
    Bags,
    StoreValidationError,
    load_bags,
    read_slides,
    read_task_column,
    store_vocabulary,
    write_store,
)
from test_store_common import toy_bags, toy_slides


def _bags(slides: pl.DataFrame) -> Bags:
    offsets, features, coords, tissue = toy_bags(slides.height)
    return Bags(slides, features, offsets, coords, tissue)


def test_named_task_is_written_under_its_name_and_read_as_egfr(tmp_path: Path) -> None:
    slides = toy_slides().with_columns(pl.lit(False).alias("simulated"))
    store = write_store(tmp_path / "s", slides, {"fm": _bags(slides)}, {"simulated": False, "task": {"label_column": "kras"}})
    disk = pl.read_parquet(store / "slides.parquet")
    assert disk["kras"].to_list() == slides["egfr"].to_list() and "egfr" not in disk.columns
    assert read_slides(store)["egfr"].to_list() == slides["egfr"].to_list()
    assert read_task_column(store) == "kras" and load_bags(store, "fm").task_label == "kras"
    meta = json.loads((store / "meta.json").read_text())
    assert meta["vocabulary"]["scanners"] == ["AT2", "GT450"] and meta["vocabulary"]["magnifications"] == [40]
    # a conflicting label names the task's own column
    disk.with_columns(pl.when(pl.col("slide_id") == "sp1-GT450").then(0).otherwise(pl.col("kras")).alias("kras")) \
        .write_parquet(store / "slides.parquet")
    with pytest.raises(StoreValidationError, match=r"slides\.parquet: column 'kras' \(the task label\) gives conflicting.*\['sp1'\]"):
        read_slides(store)
    disk.with_columns(pl.lit(1).alias("egfr")).write_parquet(store / "slides.parquet")
    with pytest.raises(StoreValidationError, match="'egfr' is reserved for the task label"):
        read_slides(store)
    disk.drop("kras").write_parquet(store / "slides.parquet")
    with pytest.raises(StoreValidationError, match="missing the task label column 'kras'"):
        read_slides(store)


def test_embedding_only_store(tmp_path: Path) -> None:
    slides = toy_slides()
    with pytest.raises(StoreValidationError, match=r"no task.*holds labels for slide ids"):
        write_store(tmp_path / "a", slides, {"fm": _bags(slides)}, {"simulated": True, "task": None})
    unlabelled = slides.drop("egfr")
    store = write_store(tmp_path / "b", unlabelled, {"fm": _bags(unlabelled)}, {"simulated": True, "task": None})
    assert "egfr" not in pl.read_parquet(store / "slides.parquet").columns
    assert read_slides(store)["egfr"].null_count() == 6 and read_task_column(store) is None
    voc = store_vocabulary(store)
    assert not voc.has_task and voc.primary_scanners == ("AT2", "GT450") and voc.models == ("fm",)


@pytest.mark.parametrize("task", ["site", "2x", "", {"name": "x"}])
def test_bad_task_names_are_refused(tmp_path: Path, task) -> None:
    slides = toy_slides()
    meta = {"simulated": True, "task": task if isinstance(task, dict) else {"label_column": task}}
    with pytest.raises(StoreValidationError, match="task"):
        write_store(tmp_path / "s", slides, {"fm": _bags(slides)}, meta)
    assert not (tmp_path / "s").exists()
