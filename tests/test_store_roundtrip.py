"""Writing then loading gives back the same numbers, in the requested order, with the fast layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import scangen.store.writer as writer
from scangen.store import (
    list_models,
    load_bags,
    load_registered,
    read_meta,
    read_slides,
    write_registered,
    write_store,
)
from scangen.store.schema import embeddings_path
from test_store_common import DIM, FM, make_store, toy_bags, toy_slides


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_roundtrip_exact(tmp_path: Path, dtype) -> None:
    store, d = make_store(tmp_path, dtype=dtype)
    bags = load_bags(store, FM, dtype=None)
    assert bags.features.dtype == dtype
    np.testing.assert_array_equal(bags.features, d["features"])
    np.testing.assert_array_equal(bags.offsets, d["offsets"])
    np.testing.assert_array_equal(bags.coords, d["coords"])
    np.testing.assert_array_equal(bags.tissue_class, d["tissue"])
    assert bags.coords.dtype == np.int32 and bags.tissue_class.dtype == np.int8
    assert bags.slide_ids == d["ids"]
    as32 = load_bags(store, FM)
    assert as32.features.dtype == np.float32
    np.testing.assert_array_equal(as32.features, d["features"].astype(np.float32))


def test_slides_types_and_extra_columns_kept(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    slides = read_slides(store)
    assert slides["magnification"].dtype.__class__.__name__ == "Int16"
    assert slides["egfr"].dtype.__class__.__name__ == "Int8"
    assert slides["note"].to_list() == d["slides"]["note"].to_list()
    assert slides.columns[:9] == ["slide_id", "specimen_id", "cohort", "scanner", "magnification",
                                  "egfr", "site", "split", "simulated"]
    assert read_meta(store) == {"simulated": True, "models": {FM: DIM}}
    assert list_models(store) == [FM]


def test_subset_in_requested_order(tmp_path: Path) -> None:
    store, d = make_store(tmp_path)
    ids = d["ids"]
    sub = load_bags(store, FM, [ids[4], ids[1]])
    assert sub.slide_ids == [ids[4], ids[1]]
    assert sub.slides["slide_id"].to_list() == [ids[4], ids[1]]
    off = d["offsets"]
    np.testing.assert_array_equal(sub.bag(0), d["features"][off[4] : off[5]])
    np.testing.assert_array_equal(sub.bag(1), d["features"][off[1] : off[2]])


def test_parquet_layout_is_fast_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 1)  # force the minimum of 1024 rows per group
    slides = toy_slides(n_specimens=200)
    rng = np.random.default_rng(1)
    offsets = np.arange(slides.height + 1, dtype=np.int64) * 7
    feats = rng.standard_normal((offsets[-1], 4)).astype(np.float16)
    coords = np.zeros((offsets[-1], 2), np.int32)
    write_store(tmp_path, slides, {}, {"simulated": True, "models": {}})
    writer.write_embeddings(tmp_path, "m", slides["slide_id"].to_list(), offsets, feats, coords)
    writer.write_meta(tmp_path, {"simulated": True, "models": {"m": 4}})
    meta = pq.ParquetFile(embeddings_path(tmp_path, "m")).metadata
    assert meta.num_row_groups == 3  # 2800 rows in groups of 1024
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    col = meta.row_group(0).column(names.index("embedding.list.element"))
    assert "BYTE_STREAM_SPLIT" in col.encodings and not col.has_dictionary_page
    assert pq.ParquetFile(embeddings_path(tmp_path, "m")).schema_arrow.field("embedding").type.list_size == 4
    # a subset spanning row groups, in reverse order, reads only what it needs and stays exact
    ids = slides["slide_id"].to_list()
    want = [ids[399], ids[150], ids[0]]
    sub = load_bags(tmp_path, "m", want, dtype=None)
    for j, i in enumerate((399, 150, 0)):
        np.testing.assert_array_equal(sub.bag(j), feats[offsets[i] : offsets[i + 1]])


def test_write_store_and_registered(tmp_path: Path) -> None:
    src, d = make_store(tmp_path / "a")
    bags = load_bags(src, FM)
    out = write_store(tmp_path / "b", d["slides"], {FM: bags, "other": bags}, {"simulated": True})
    assert list_models(out) == ["other", FM]
    assert read_meta(out)["models"] == {FM: DIM, "other": DIM}
    ids = d["ids"][:2]
    off, feats, _, tissue = toy_bags(2, seed=9)
    write_registered(out, FM, ids, off, feats, np.arange(off[-1]) % 3, tissue)
    reg = load_registered(out, FM)
    assert reg.slide_ids == ids
    np.testing.assert_array_equal(reg.features, feats)
    np.testing.assert_array_equal(reg.tile_id, np.arange(off[-1]) % 3)
    assert reg.tile_id.dtype == np.int32
    np.testing.assert_array_equal(reg.tissue_class, tissue)
    assert reg.select([1]).slide_ids == [ids[1]]


def test_writes_are_deterministic(tmp_path: Path) -> None:
    make_store(tmp_path / "a", seed=4)
    make_store(tmp_path / "b", seed=4)
    for rel in ("slides.parquet", f"embeddings/{FM}.parquet", "meta.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_thread_count_does_not_change_result(tmp_path: Path, monkeypatch) -> None:
    import scangen.store.columns as columns

    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 1)
    slides = toy_slides(n_specimens=300)
    offsets, feats, coords, tissue = toy_bags(slides.height, dim=3, seed=2, dtype=np.float16)
    write_store(tmp_path, slides, {}, {"simulated": True, "models": {}})
    writer.write_embeddings(tmp_path, "m", slides["slide_id"].to_list(), offsets, feats, coords, tissue)
    writer.write_meta(tmp_path, {"simulated": True, "models": {"m": 3}})
    assert pq.ParquetFile(embeddings_path(tmp_path, "m")).metadata.num_row_groups >= 2
    monkeypatch.setattr(columns, "READ_WORKERS", 1)
    one = load_bags(tmp_path, "m", dtype=None)
    monkeypatch.setattr(columns, "READ_WORKERS", 3)
    many = load_bags(tmp_path, "m", dtype=None)
    np.testing.assert_array_equal(one.features, many.features)
    np.testing.assert_array_equal(many.features, feats)
    np.testing.assert_array_equal(many.tissue_class, tissue)


def test_subset_arguments(tmp_path: Path) -> None:
    from scangen.store import StoreValidationError

    store, d = make_store(tmp_path)
    empty = load_bags(store, FM, [])
    assert len(empty) == 0 and empty.features.shape == (0, DIM) and empty.offsets.tolist() == [0]
    with pytest.raises(StoreValidationError, match="more than once"):
        load_bags(store, FM, [d["ids"][0], d["ids"][0]])
    with pytest.raises(StoreValidationError, match="got the string"):
        load_bags(store, FM, d["ids"][0])
    with pytest.raises(StoreValidationError, match="float type"):
        load_bags(store, FM, dtype=np.int32)
    off, feats, _, _ = toy_bags(3, seed=1)
    write_registered(store, FM, d["ids"][:3], off, feats, np.zeros(off[-1], np.int32))
    reg = load_registered(store, FM, [d["ids"][2], d["ids"][0]])
    np.testing.assert_array_equal(reg.bag(0), feats[off[2] : off[3]])
    assert reg.tissue_class is None
    with pytest.raises(StoreValidationError, match=r"no registered tiles for slide ids \['sp2-AT2'\]"):
        load_registered(store, FM, [d["ids"][4]])


def test_write_store_replaces_a_model_of_another_dimension(tmp_path: Path) -> None:
    """write_store rewrites meta.json first, so a model's new D is accepted, not half-written."""
    from scangen.store import Bags, write_store

    store, _ = make_store(tmp_path / "s")
    slides = read_slides(store)
    offsets, features, coords, tissue = toy_bags(slides.height, dim=2 * DIM, seed=3)
    bags = Bags(slides=slides, features=features, offsets=offsets, coords=coords, tissue_class=tissue)
    write_store(store, slides, {FM: bags}, {"simulated": True})
    loaded = load_bags(store, FM)
    assert loaded.dim == 2 * DIM and np.array_equal(loaded.features, features)
