"""Every schema violation raises StoreValidationError naming the file, the column and the ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scangen.atomic import atomic_write_text
from scangen.store import (
    StoreValidationError,
    load_bags,
    read_meta,
    read_slides,
    write_embeddings,
    write_meta,
    write_slides,
)
from test_store_common import DIM, FM, make_store, toy_slides

EMB = f"embeddings/{FM}.parquet"


def _raw_embeddings(store: Path, d: dict, ids_per_row=None, patch_index=None, embedding=None, drop=None):
    """Overwrite the embedding table with a hand-built (possibly broken) one."""
    off = d["offsets"]
    lengths = np.diff(off)
    if ids_per_row is None:
        ids_per_row = np.repeat(np.array(d["ids"]), lengths).tolist()
    if patch_index is None:
        patch_index = (np.arange(off[-1]) - np.repeat(off[:-1], lengths)).astype(np.int32)
    if embedding is None:
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(d["features"].reshape(-1)), DIM)
    cols = {"slide_id": pa.array(ids_per_row, pa.string()), "patch_index": pa.array(patch_index),
            "x": pa.array(d["coords"][:, 0]), "y": pa.array(d["coords"][:, 1]), "embedding": embedding}
    for name in drop or ():
        cols.pop(name)
    pq.write_table(pa.table(cols), store / EMB)


def _raw_slides(store: Path, df: pl.DataFrame) -> None:
    df.write_parquet(store / "slides.parquet")


def _set(slides: pl.DataFrame, slide_id: str, column: str, value) -> pl.DataFrame:
    """`slides` with `column` set to `value` on the row of `slide_id`."""
    new = pl.when(pl.col("slide_id") == slide_id).then(value).otherwise(pl.col(column))
    return slides.with_columns(new.alias(column))


def test_missing_and_mistyped_slide_columns(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    _raw_slides(store, d["slides"].drop("scanner"))
    with pytest.raises(StoreValidationError, match=r"slides\.parquet.*missing required column.*'scanner'"):
        read_slides(store)
    _raw_slides(store, d["slides"].with_columns(pl.col("egfr").cast(pl.String)))
    with pytest.raises(StoreValidationError, match=r"slides\.parquet.*'egfr' must be an integer"):
        load_bags(store, FM)
    _raw_slides(store, d["slides"].with_columns(pl.col("simulated").cast(pl.Int8)))
    with pytest.raises(StoreValidationError, match="'simulated' must be boolean"):
        read_slides(store)


def test_nulls_duplicates_conflicts_and_vocabulary(tmp_path: Path) -> None:
    slides = toy_slides()
    dup = pl.concat([slides, slides[:1]])
    with pytest.raises(StoreValidationError, match=r"duplicate ids \['sp0-AT2'\]"):
        write_slides(tmp_path, dup)
    conflict = _set(slides, "sp1-GT450", "egfr", 0)
    with pytest.raises(StoreValidationError, match=r"'egfr'.*conflicting.*\['sp1'\]"):
        write_slides(tmp_path, conflict)
    scanner = _set(slides, "sp2-AT2", "scanner", pl.lit("XYZ@20x"))
    with pytest.raises(StoreValidationError, match=r"'scanner' has names \['XYZ@20x'\].*'@'.*sp2-AT2"):
        write_slides(tmp_path, scanner)
    blank = _set(slides, "sp2-AT2", "scanner", pl.lit("  "))
    with pytest.raises(StoreValidationError, match=r"'scanner' has names.*empty.*sp2-AT2"):
        write_slides(tmp_path, blank)
    mag = _set(slides, "sp0-GT450", "magnification", 0)
    with pytest.raises(StoreValidationError, match=r"'magnification' must hold positive integers, got \[0\].*sp0-GT450"):
        write_slides(tmp_path, mag)
    nulls = _set(slides, "sp0-AT2", "specimen_id", None)
    with pytest.raises(StoreValidationError, match=r"'specimen_id' has nulls.*sp0-AT2"):
        write_slides(tmp_path, nulls)
    assert not (tmp_path / "slides.parquet").exists()
    # the same checks run on load for a file written behind the store's back
    store, _ = make_store(tmp_path / "s")
    _raw_slides(store, dup)
    with pytest.raises(StoreValidationError, match=r"slides\.parquet: column 'slide_id' has duplicate ids"):
        load_bags(store, FM)


def test_missing_and_mistyped_embedding_columns(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    _raw_embeddings(store, d, drop=["x"])
    with pytest.raises(StoreValidationError, match=rf"{FM}\.parquet: missing required column.*'x'"):
        load_bags(store, FM)
    ints = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(d["features"].size, np.int32)), DIM)
    _raw_embeddings(store, d, embedding=ints)
    with pytest.raises(StoreValidationError, match="'embedding' must be a FixedSizeList of float16 or float32"):
        load_bags(store, FM)
    _raw_embeddings(store, d, patch_index=np.zeros(d["offsets"][-1], np.float64))
    with pytest.raises(StoreValidationError, match="'patch_index' must be an integer"):
        load_bags(store, FM)


def test_dimension_against_meta_and_mixed(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    write_meta(store, {"simulated": True, "models": {FM: DIM + 2}})
    says = rf"dimension {DIM} but .*meta\.json says models\['{FM}'\] = {DIM + 2}"
    with pytest.raises(StoreValidationError, match=says):
        load_bags(store, FM)
    with pytest.raises(StoreValidationError, match="differs from"):
        write_embeddings(store, FM, d["ids"], d["offsets"], d["features"], d["coords"])
    write_meta(store, {"simulated": True, "models": {}})
    with pytest.raises(StoreValidationError, match=f"no entry for model '{FM}'"):
        load_bags(store, FM)
    write_meta(store, {"simulated": True, "models": {FM: DIM}})
    rows = [list(r) for r in d["features"]]
    rows[d["offsets"][3]] = rows[d["offsets"][3]][:-1]  # one patch of slide 3 is one value short
    _raw_embeddings(store, d, embedding=pa.array(rows, pa.list_(pa.float32())))
    with pytest.raises(StoreValidationError, match=rf"mixed dimensions \[{DIM - 1}, {DIM}\].*'{d['ids'][3]}'"):
        load_bags(store, FM)
    _raw_embeddings(store, d, embedding=pa.array([list(r) for r in d["features"]], pa.list_(pa.float32())))
    np.testing.assert_array_equal(load_bags(store, FM).features, d["features"])  # variable lists, one D: fine


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", r"meta\.json: not valid JSON .*expected an object like"),
        ("[1, 2]", r"meta\.json: expected a JSON object at the top level, got list"),
        ('{"simulated": true, "models": [5]}', r"meta\.json: 'models' must be an object \{fm: D\}, got list"),
    ],
)
def test_malformed_meta_is_named_when_writing_embeddings(tmp_path: Path, text: str, says: str) -> None:
    store, d = make_store(tmp_path)
    atomic_write_text(store / "meta.json", text)
    with pytest.raises(StoreValidationError, match=says):
        write_embeddings(store, FM, d["ids"], d["offsets"], d["features"], d["coords"])


def test_nonfinite_values(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    bad = d["features"].copy()
    bad[d["offsets"][2], 1] = np.nan
    bad[d["offsets"][5], 0] = np.inf
    with pytest.raises(StoreValidationError, match=r"NaN or inf.*'sp1-AT2', 'sp2-GT450'"):
        write_embeddings(store, FM, d["ids"], d["offsets"], bad, d["coords"])
    _raw_embeddings(store, d, embedding=pa.FixedSizeListArray.from_arrays(pa.array(bad.reshape(-1)), DIM))
    with pytest.raises(StoreValidationError, match=rf"{FM}\.parquet: column 'embedding' has NaN or inf"):
        load_bags(store, FM)
    ok = load_bags(store, FM, [d["ids"][0]])  # a subset without the bad slides loads
    assert ok.slide_ids == [d["ids"][0]]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_float16(tmp_path: Path, value: float) -> None:
    store, d = make_store(tmp_path, dtype=np.float16)
    bad = d["features"].copy()
    bad[d["offsets"][-1] - 1, DIM - 1] = value
    with pytest.raises(StoreValidationError, match=rf"NaN or inf values \(1 patch rows\).*\['{d['ids'][-1]}'\]"):
        write_embeddings(store, FM, d["ids"], d["offsets"], bad, d["coords"])
    big = np.full_like(bad, 60000.0)  # large but finite float16 values are fine
    write_embeddings(store, FM, d["ids"], d["offsets"], big, d["coords"])
    np.testing.assert_array_equal(load_bags(store, FM, dtype=None).features, big)


def test_null_embeddings(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    values = pa.array(d["features"].reshape(-1), mask=np.arange(d["features"].size) == d["offsets"][4] * DIM)
    _raw_embeddings(store, d, embedding=pa.FixedSizeListArray.from_arrays(values, DIM))
    with pytest.raises(StoreValidationError, match=rf"'embedding' has null values in slide ids \['{d['ids'][4]}'\]"):
        load_bags(store, FM)


def test_slides_without_embeddings_and_embeddings_without_slides(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    extra = toy_slides(n_specimens=4)  # two more slides than have embeddings
    write_slides(store, extra)
    with pytest.raises(StoreValidationError, match=r"no embeddings for slide ids \['sp3-AT2', 'sp3-GT450'\]"):
        load_bags(store, FM)
    assert load_bags(store, FM, d["ids"][:2]).slide_ids == d["ids"][:2]  # a subset only needs its slides
    write_slides(store, toy_slides(n_specimens=2))
    orphans = r"embeddings for slide ids missing from .*slides\.parquet \['sp2-AT2', 'sp2-GT450'\]"
    with pytest.raises(StoreValidationError, match=orphans):
        load_bags(store, FM, ["sp0-AT2"])
    with pytest.raises(StoreValidationError, match=r"lacks requested slide ids \['ghost'\]"):
        load_bags(store, FM, ["ghost"])


def test_noncontiguous_and_unordered_rows(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    per_row = np.repeat(np.array(d["ids"]), np.diff(d["offsets"])).tolist()
    per_row[0], per_row[-1] = per_row[-1], per_row[0]
    _raw_embeddings(store, d, ids_per_row=per_row)
    with pytest.raises(StoreValidationError, match=r"not contiguous for slide ids \[.*'sp0-AT2'"):
        load_bags(store, FM)
    pidx = (np.arange(d["offsets"][-1]) - np.repeat(d["offsets"][:-1], np.diff(d["offsets"]))).astype(np.int32)
    a = d["offsets"][1]
    assert d["offsets"][2] - a >= 2, "toy bag 1 needs two patches for this test"
    pidx[[a, a + 1]] = pidx[[a + 1, a]]
    _raw_embeddings(store, d, patch_index=pidx)
    with pytest.raises(StoreValidationError, match=rf"'patch_index' is not 0..n-1.*\['{d['ids'][1]}'\]"):
        load_bags(store, FM)


def test_writer_argument_errors(tmp_path: Path) -> None:
    _, d = make_store(tmp_path)
    ids, off, f, c = d["ids"], d["offsets"], d["features"], d["coords"]
    with pytest.raises(StoreValidationError, match="float16 or float32"):
        write_embeddings(tmp_path, FM, ids, off, f.astype(np.float64), c)
    with pytest.raises(StoreValidationError, match="offsets has"):
        write_embeddings(tmp_path, FM, ids, off[:-1], f, c)
    with pytest.raises(StoreValidationError, match="duplicate ids"):
        write_embeddings(tmp_path, FM, [ids[0]] * len(ids), off, f, c)
    empty = off.copy()
    empty[1] = 0
    with pytest.raises(StoreValidationError, match=rf"empty bags\) \['{ids[0]}'\]"):
        write_embeddings(tmp_path, FM, ids, empty, f, c)
    with pytest.raises(StoreValidationError, match="coords must be an integer array"):
        write_embeddings(tmp_path, FM, ids, off, f, c[:, :1])
    with pytest.raises(StoreValidationError, match="model name"):
        write_embeddings(tmp_path, "../evil", ids, off, f, c)
    with pytest.raises(StoreValidationError, match="'simulated' must be true or false"):
        write_meta(tmp_path, {"models": {}})
    with pytest.raises(StoreValidationError, match="positive integer D"):
        write_meta(tmp_path, {"simulated": True, "models": {FM: "768"}})


def test_missing_files(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    (store / "meta.json").unlink()
    with pytest.raises(StoreValidationError, match=r"meta\.json is missing"):
        read_meta(store)
    (store / "meta.json").write_text("{not json")
    with pytest.raises(StoreValidationError, match="not valid JSON"):
        read_meta(store)
    (store / "meta.json").write_text(json.dumps({"simulated": True, "models": {FM: DIM}}))
    with pytest.raises(StoreValidationError, match=r"meta\.json: key 'models' has no entry for model 'other-sim'"):
        load_bags(store, "other-sim")
    (store / "meta.json").write_text(json.dumps({"simulated": True, "models": {FM: DIM, "other-sim": DIM}}))
    with pytest.raises(StoreValidationError, match=r"other-sim\.parquet: file is missing"):
        load_bags(store, "other-sim")
