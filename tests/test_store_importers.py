"""Importing TRIDENT and CLAM feature folders plus a manifest gives a validated, real store.

(The new vocabulary, plismbench, patch labels, atomicity and the command line: test_store_import_byo.py.)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import torch

from scangen.store import StoreValidationError, load_bags, read_meta, read_slides
from scangen.store.importers import import_features
from scangen.store.manifest import manifest_to_slides

pytestmark = pytest.mark.filterwarnings("ignore:.*column .(specimen_id|scanner).:UserWarning")
IDS = ["TCGA-A", "TCGA-B", "CPTAC-C"]


def _manifest() -> pl.DataFrame:
    return pl.DataFrame({
        "slide_id": IDS,
        "specimen_id": ["A", "B", "C"],
        "scanner": ["AT2", "Leica Aperio GT450", "gt450"],
        "magnification": [40, 40, 20],
        "egfr": [1, 0, 1],
        "site": ["TCGA", "TCGA", "CPTAC"],
    })


def _arrays(seed: int = 0, dim: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, sid in enumerate(IDS):
        n = 3 + i
        out[sid] = (rng.standard_normal((n, dim)).astype(np.float32), rng.integers(0, 9999, (n, 2)).astype(np.int64))
    return out


def _h5(path: Path, features: np.ndarray | None, coords: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if features is not None:
            f["features"] = features
        if coords is not None:
            f["coords"] = coords


def _check_store(store: Path, fm: str, arrays: dict, coords: bool = True) -> None:
    bags = load_bags(store, fm)
    assert bags.slide_ids == IDS
    for i, sid in enumerate(IDS):
        np.testing.assert_array_equal(bags.bag(i), arrays[sid][0])
        got = bags.coords[bags.offsets[i] : bags.offsets[i + 1]]
        np.testing.assert_array_equal(got, arrays[sid][1] if coords else np.zeros_like(arrays[sid][1]))
    slides = read_slides(store)
    assert not slides["simulated"].any()
    assert slides["scanner"].to_list() == ["AT2", "GT450", "GT450"]
    assert slides["cohort"].to_list() == ["multiscanner"] * 3
    assert read_meta(store)["simulated"] is False


def test_trident_folder(tmp_path: Path) -> None:
    arrays = _arrays()
    for sid, (f, c) in arrays.items():
        _h5(tmp_path / "feats" / f"{sid}.h5", f, c)
    store = import_features(tmp_path / "feats", _manifest(), tmp_path / "store", "uni")
    _check_store(store, "uni", arrays)
    meta = read_meta(store)
    assert meta["models"] == {"uni": 5} and meta["imports"]["uni"]["format"] == "trident"


def test_clam_pt_with_h5_coords_and_csv_synonyms(tmp_path: Path) -> None:
    arrays = _arrays(seed=1)
    for sid, (f, c) in arrays.items():
        (tmp_path / "clam" / "pt_files").mkdir(parents=True, exist_ok=True)
        torch.save(torch.from_numpy(f), tmp_path / "clam" / "pt_files" / f"{sid}.pt")
        _h5(tmp_path / "clam" / "h5_files" / f"{sid}.h5", f, c)
    csv = tmp_path / "manifest.csv"
    _manifest().rename({"slide_id": "slide", "specimen_id": "case_id", "magnification": "mag"}).with_columns(
        pl.col("mag").cast(pl.String) + "x"
    ).write_csv(csv)
    store = import_features(tmp_path / "clam", csv, tmp_path / "store", "phikon")
    _check_store(store, "phikon", arrays)
    assert read_slides(store)["magnification"].to_list() == [40, 40, 20]
    assert read_slides(store)["egfr"].to_list() == [1, 0, 1]
    # a second model into the same store keeps the first one
    for sid, (f, _) in arrays.items():
        torch.save(torch.from_numpy(f[:, :3].copy()), tmp_path / "clam" / "pt_files" / f"{sid}.pt")
    import_features(tmp_path / "clam", csv, store, "other", fmt="clam")
    assert read_meta(store)["models"] == {"phikon": 5, "other": 3}
    assert load_bags(store, "other").dim == 3


def test_clam_without_coords_warns_and_uses_zeros(tmp_path: Path) -> None:
    arrays = _arrays(seed=2)
    for sid, (f, _) in arrays.items():
        (tmp_path / "clam" / "pt_files").mkdir(parents=True, exist_ok=True)
        torch.save(torch.from_numpy(f), tmp_path / "clam" / "pt_files" / f"{sid}.pt")
    pq_manifest = tmp_path / "m.parquet"
    _manifest().write_parquet(pq_manifest)
    with pytest.warns(UserWarning, match=r"dataset 'coords' \(CLAM h5_files/\) is missing for 3 slide"):
        store = import_features(tmp_path / "clam", pq_manifest, tmp_path / "store", "uni")
    _check_store(store, "uni", arrays, coords=False)
    assert read_meta(store)["imports"]["uni"]["coords"] == "missing"


def test_missing_and_extra_feature_files(tmp_path: Path) -> None:
    arrays = _arrays()
    for sid, (f, c) in list(arrays.items())[:2]:
        _h5(tmp_path / "feats" / f"{sid}.h5", f, c)
    with pytest.raises(StoreValidationError, match=r"no trident feature file for manifest slide ids \['CPTAC-C'\]"):
        import_features(tmp_path / "feats", _manifest(), tmp_path / "store", "uni")
    _h5(tmp_path / "feats" / "CPTAC-C.h5", *arrays["CPTAC-C"])
    _h5(tmp_path / "feats" / "stray.h5", *arrays["CPTAC-C"])
    with pytest.raises(StoreValidationError, match=r"without a manifest row for slide ids \['stray'\]"):
        import_features(tmp_path / "feats", _manifest(), tmp_path / "store", "uni")
    assert not (tmp_path / "store").exists()


def test_bad_inputs(tmp_path: Path) -> None:
    arrays = _arrays()
    for sid, (f, c) in arrays.items():
        _h5(tmp_path / "feats" / f"{sid}.h5", f if sid != "TCGA-B" else f[:, :4], c)
    with pytest.raises(StoreValidationError, match=r"mixed dimension.*\['TCGA-B'\]"):
        import_features(tmp_path / "feats", _manifest(), tmp_path / "store", "uni")
    _h5(tmp_path / "feats" / "TCGA-B.h5", arrays["TCGA-B"][0], arrays["TCGA-B"][1][:1])
    with pytest.raises(StoreValidationError, match=r"TCGA-B\.h5: coords has shape \(1, 2\)"):
        import_features(tmp_path / "feats", _manifest(), tmp_path / "store", "uni")
    with pytest.raises(StoreValidationError, match=r"no task label column.*task=None for an embedding-only"):
        manifest_to_slides(_manifest().drop("egfr"))
    with pytest.raises(StoreValidationError, match=r"missing manifest column\(s\) \['scanner'\]"):
        manifest_to_slides(_manifest().drop("scanner"))
    with pytest.raises(StoreValidationError, match="all mean 'egfr'"):
        manifest_to_slides(_manifest().with_columns(pl.col("egfr").alias("label")))
    with pytest.raises(StoreValidationError, match=r"'egfr' has values \['maybe'\]"):
        manifest_to_slides(_manifest().with_columns(pl.lit("maybe").alias("egfr")))
    text_ids, task = manifest_to_slides(_manifest().with_columns(pl.Series("slide_id", ["007", "008", "009"]),
                                                                 pl.Series("egfr", ["True", "false", "1"])))
    assert task == "egfr"
    assert text_ids["slide_id"].to_list() == ["007", "008", "009"] and text_ids["egfr"].to_list() == [1, 0, 1]
    with pytest.raises(StoreValidationError, match="fmt must be one of"):
        import_features(tmp_path / "feats", _manifest(), tmp_path / "store", "uni", fmt="hdf")


def test_refuses_to_mix_into_simulated_store(tmp_path: Path) -> None:
    from test_store_common import make_store

    sim, _ = make_store(tmp_path / "sim")
    arrays = _arrays()
    for sid, (f, c) in arrays.items():
        _h5(tmp_path / "feats" / f"{sid}.h5", f, c)
    with pytest.raises(StoreValidationError, match="store is simulated"):
        import_features(tmp_path / "feats", _manifest(), sim, "uni")
