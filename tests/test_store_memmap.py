"""Memory-mapped float16 cache: equal numbers, rebuilt when the Parquet table changes, never half-built."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import scangen.store.memmap as mm
import scangen.store.writer as writer
from scangen.store import StoreValidationError, load_bags, write_embeddings, write_meta, write_slides
from scangen.store.schema import embeddings_path
from scangen.train import TrainConfig, run_experiment
from scangen.train.batching import BagTensors, collate
from scangen.train.predict import predict_logits
from test_store_common import toy_slides

FM = "phikon-sim"
FAST = dict(fm=FM, max_steps=12, eval_every=4, task_batch_size=8, max_patches_train=16, progress=False,
            num_threads=1, device="cpu")
HALF_EPS, HALF_TINY = 2.0**-11, 2.0**-25
"""float16 rounding (round to nearest): relative error <= 2**-11 (11 significant bits) for normal
values, absolute error <= 2**-25 (half the subnormal spacing) below 2**-14."""


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny simulated store (float16 embeddings, as every simulated store) of one FM."""
    from scangen.simulate import simulate_cohort

    return simulate_cohort(tmp_path_factory.mktemp("mm_tiny"), size="tiny", seed=0, models=[FM],
                           registered_tiles=False)


def _cache_dirs(store: Path, fm: str) -> list[Path]:
    root = store / mm.CACHE_DIR
    return sorted(root.glob(f"{fm}-*")) if root.is_dir() else []


def _toy_store(root: Path, dtype, n_specimens: int = 20, max_len: int = 400, seed: int = 0, scale: float = 1.0):
    """Store of 2 * n_specimens slides with 1..max_len patches each, written in 1024-row row groups
    (so slides straddle row groups); returns (store, features written)."""
    slides = toy_slides(n_specimens)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len, slides.height)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    feats = (scale * rng.standard_normal((offsets[-1], 6))).astype(dtype)
    coords = rng.integers(0, 50_000, (offsets[-1], 2)).astype(np.int32)
    write_slides(root, slides)
    write_meta(root, {"simulated": True, "models": {"toy-sim": 6}})
    write_embeddings(root, "toy-sim", slides["slide_id"].to_list(), offsets, feats, coords,
                     rng.integers(0, 4, offsets[-1]).astype(np.int8))
    return root, feats


def test_mapped_bags_equal_in_memory_bags(sim_store: Path) -> None:
    ref = load_bags(sim_store, FM)
    bags = load_bags(sim_store, FM, mmap=True)
    assert isinstance(bags.features, np.memmap) and bags.features.dtype == np.float16
    assert not bags.features.flags.writeable
    assert bags.slides.equals(ref.slides)
    np.testing.assert_array_equal(bags.offsets, ref.offsets)
    np.testing.assert_array_equal(bags.features.astype(np.float32), ref.features)  # stored float16: exact
    np.testing.assert_array_equal(bags.coords, ref.coords)
    np.testing.assert_array_equal(bags.tissue_class, ref.tissue_class)
    np.testing.assert_array_equal(bags.mean_embeddings(), ref.mean_embeddings())  # from the cache, bit-equal
    assert len(_cache_dirs(sim_store, FM)) == 1


def test_second_load_reuses_the_cache(sim_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_bags(sim_store, FM, mmap=True)
    monkeypatch.setattr(mm, "build_cache", lambda *a: pytest.fail("cache rebuilt although the table is unchanged"))
    load_bags(sim_store, FM, mmap=True)


@pytest.mark.parametrize("use_scangen,level", [(False, "slide"), (True, "slide"), (True, "bag")])
def test_training_on_the_map_gives_identical_predictions(sim_store: Path, use_scangen: bool, level: str) -> None:
    cfg = TrainConfig(**FAST, use_scangen=use_scangen, scangen_level=level)
    ref = run_experiment(cfg, bags=load_bags(sim_store, FM))
    got = run_experiment(cfg, bags=load_bags(sim_store, FM, mmap=True))
    assert got.equals(ref)


def test_bag_tensors_keep_the_map_on_the_host_and_release_pages(sim_store: Path, monkeypatch) -> None:
    import scangen.train.batching as batching

    monkeypatch.setattr(batching, "BOUNDED_MEMORY_BYTES", 0)  # the bounded-memory mode, whatever the size
    bags = load_bags(sim_store, FM, mmap=True)
    bt = BagTensors.from_bags(bags, torch.device("cpu"))
    ref = BagTensors.from_bags(load_bags(sim_store, FM), torch.device("cpu"))
    assert bt.features.dtype == torch.float16 and bt.pages is not None and ref.pages is None
    assert bt.features.data_ptr() == bags.features.ctypes.data  # the map itself, no copy
    x, mask = collate(bt, [3, 0, 5])
    x_ref, mask_ref = collate(ref, [3, 0, 5])
    assert x.dtype == torch.float32 and torch.equal(x, x_ref) and torch.equal(mask, mask_ref)
    assert bt.pages.touched > 0
    model = torch.nn.Module()
    model.p = torch.nn.Parameter(torch.zeros(1))
    model.forward = lambda x, mask: type("O", (), {"logits": x[:, :, 0].sum(1)})()
    out = predict_logits(model, bt, np.arange(4))
    np.testing.assert_array_equal(out, predict_logits(model, ref, np.arange(4)))
    assert bt.pages.touched == 0  # evaluation hands its pages back


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bag_tensors_do_not_upload_a_mapped_cohort(sim_store: Path) -> None:
    bt = BagTensors.from_bags(load_bags(sim_store, FM, mmap=True), torch.device("cuda"))
    assert bt.storage.type == "cpu" and not bt.features.is_pinned()
    x, _ = collate(bt, [0, 1], 8, torch.Generator().manual_seed(0))
    assert x.device.type == "cuda" and x.dtype == torch.float32


def test_slide_means_are_bit_equal_across_row_groups(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 1)  # 1024-row groups
    store, feats = _toy_store(tmp_path, np.float16)
    ref = load_bags(store, "toy-sim")
    bags = load_bags(store, "toy-sim", mmap=True)
    np.testing.assert_array_equal(bags.features, feats)
    np.testing.assert_array_equal(bags.mean_embeddings(), ref.mean_embeddings())
    np.testing.assert_array_equal(bags.tissue_class, ref.tissue_class)


def test_float32_store_differs_only_by_float16_rounding(tmp_path: Path) -> None:
    store, feats = _toy_store(tmp_path, np.float32)
    ref = load_bags(store, "toy-sim")
    got = load_bags(store, "toy-sim", mmap=True).features.astype(np.float32)
    np.testing.assert_array_equal(got, feats.astype(np.float16).astype(np.float32))
    assert np.all(np.abs(got - ref.features) <= np.maximum(HALF_EPS * np.abs(ref.features), HALF_TINY))


def test_values_beyond_float16_range_are_refused(tmp_path: Path) -> None:
    store, _ = _toy_store(tmp_path, np.float32, scale=1e5)
    with pytest.raises(StoreValidationError, match="float16 range.*sp0-AT2"):
        load_bags(store, "toy-sim", mmap=True)
    assert _cache_dirs(store, "toy-sim") == []
    assert list((store / mm.CACHE_DIR).iterdir()) == []  # the failed build's folder is gone


def test_non_finite_values_name_the_slide(tmp_path: Path) -> None:
    store, _ = _toy_store(tmp_path, np.float16, n_specimens=2, max_len=5)
    bags = load_bags(store, "toy-sim")
    path = embeddings_path(store, "toy-sim")
    table = pq.read_table(path)  # the writer refuses NaN, so poison the file behind its back
    emb = table.column("embedding").combine_chunks()
    flat = emb.values.to_numpy(zero_copy_only=False).copy()
    flat[bags.offsets[2] * bags.dim] = np.nan
    poisoned = pa.FixedSizeListArray.from_arrays(pa.array(flat), type=emb.type)
    pq.write_table(table.set_column(table.column_names.index("embedding"), "embedding", poisoned), path)
    with pytest.raises(StoreValidationError, match=f"NaN or inf.*{bags.slide_ids[2]}"):
        load_bags(store, "toy-sim", mmap=True)


def test_changed_parquet_table_rebuilds_the_cache(tmp_path: Path) -> None:
    store, feats = _toy_store(tmp_path, np.float16, n_specimens=3, max_len=20)
    first = load_bags(store, "toy-sim", mmap=True)
    old_dir = _cache_dirs(store, "toy-sim")
    np.testing.assert_array_equal(first.features, feats)
    ids = first.slide_ids
    write_embeddings(store, "toy-sim", ids, first.offsets, -feats, np.asarray(first.coords))
    second = load_bags(store, "toy-sim", mmap=True)
    np.testing.assert_array_equal(second.features, -feats)
    new_dir = _cache_dirs(store, "toy-sim")
    assert len(new_dir) == 1 and new_dir != old_dir  # rebuilt under a new key, the stale one removed


_KILL_DURING_BUILD = textwrap.dedent("""
    import os, signal, sys
    import scangen.store.memmap_build as mb
    from scangen.store import load_bags
    real = mb._NpyWriter.append
    def append(self, rows):
        real(self, rows)
        os.kill(os.getpid(), signal.SIGKILL)  # die with the features half written
    mb._NpyWriter.append = append
    load_bags(sys.argv[1], sys.argv[2], mmap=True)
""")


def test_killed_build_leaves_no_half_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 1)
    store, feats = _toy_store(tmp_path, np.float16)
    env = {**os.environ, "PYTHONPATH": str(Path(mm.__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", _KILL_DURING_BUILD, str(store), "toy-sim"], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert _cache_dirs(store, "toy-sim") == []  # no cache folder appeared
    leftovers = list((store / mm.CACHE_DIR).glob(".toy-sim-build-*"))
    assert len(leftovers) == 1  # only the dead build's private folder
    bags = load_bags(store, "toy-sim", mmap=True)  # the next use builds a whole cache and cleans up
    np.testing.assert_array_equal(bags.features, feats)
    assert not leftovers[0].exists()


def test_failed_build_removes_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = _toy_store(tmp_path, np.float16, n_specimens=2, max_len=5)

    def boom(*_a):
        raise KeyboardInterrupt

    monkeypatch.setattr(mm, "build_cache", boom)
    with pytest.raises(KeyboardInterrupt):
        load_bags(store, "toy-sim", mmap=True)
    assert list((store / mm.CACHE_DIR).iterdir()) == []


def test_slides_out_of_table_order_are_gathered_with_a_warning(tmp_path: Path) -> None:
    store, _ = _toy_store(tmp_path, np.float16, n_specimens=3, max_len=20)
    ids = toy_slides(3)["slide_id"].to_list()
    wanted = [ids[4], ids[1]]
    ref = load_bags(store, "toy-sim", slide_ids=wanted)
    with pytest.warns(UserWarning, match="gathering"):
        got = load_bags(store, "toy-sim", slide_ids=wanted, mmap=True)
    np.testing.assert_array_equal(got.features.astype(np.float32), ref.features)
    np.testing.assert_array_equal(got.mean_embeddings(), ref.mean_embeddings())
    sub = load_bags(store, "toy-sim", slide_ids=ids[1:4], mmap=True)  # a consecutive run: still a map
    assert mm.mapped_buffer(sub.features) is not None
    with pytest.raises(StoreValidationError, match="lacks requested slide ids"):
        load_bags(store, "toy-sim", slide_ids=["nope"], mmap=True)
