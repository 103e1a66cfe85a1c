"""Bring your own cohort: unseen scanners, aliases, any magnification and task, plismbench folders,
patch labels, registered tiles, all-or-nothing imports and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest

from scangen.store import (
    StoreValidationError,
    load_bags,
    load_registered,
    read_meta,
    read_slides,
    read_task_column,
    store_vocabulary,
)
from scangen.store.cli import main
from scangen.store.importers import import_features, plism_manifest

DIM = 4
QUIET = pytest.mark.filterwarnings("ignore:.*column .(specimen_id|scanner).:UserWarning")


def _cohort(scanners: list[tuple[str, int]], n_specimens: int = 4, task: str = "msi") -> pl.DataFrame:
    """One slide per specimen and (scanner, magnification), label alternating by specimen."""
    rows = []
    for s in range(n_specimens):
        for k, (scanner, mag) in enumerate(scanners):
            rows.append({"slide_id": f"S{s}-{k}", "specimen_id": f"P{s}", "scanner": scanner,
                         "magnification": f"{mag}x", task: "yes" if s % 2 else "no"})
    return pl.DataFrame(rows)


def _trident(folder: Path, manifest: pl.DataFrame, seed: int = 0, n: int = 5, nan_in: str | None = None,
             coords: bool = True, labels: str | None = None) -> None:
    """Feature files for every manifest slide; patches at the same grid positions in every scan."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for sid in manifest["slide_id"].to_list():
        feats = rng.standard_normal((n, DIM)).astype(np.float32)
        if sid == nan_in:
            feats[1, 2] = np.nan
        with h5py.File(folder / f"{sid}.h5", "w") as f:
            f["features"] = feats
            if coords:
                f["coords"] = np.stack([np.arange(n) * 256, np.arange(n) * 512], axis=1)
            if labels == "region":  # text labels, as h5py variable-length strings
                f.create_dataset(labels, data=np.array(["tumour", "stroma", "fat"] * n)[:n].astype(object),
                                 dtype=h5py.string_dtype())
            elif labels:
                f[labels] = np.arange(n) % 3


def _no_leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if ".partial-" in p.name or ".replaced-" in p.name]


@QUIET
def test_unseen_scanners_alias_map_and_non_egfr_task(tmp_path: Path) -> None:
    manifest = _cohort([(" Aperio CS2 ", 25), ("NanoZoomer S210", 25), ("Philips UFS B300", 25), ("scanner x", 25)])
    _trident(tmp_path / "feats", manifest)
    store = import_features(tmp_path / "feats", manifest, tmp_path / "store", "my-fm", task="msi",
                            scanner_aliases={"Scanner-X": "SX"})
    slides = read_slides(store)
    assert slides["scanner"].unique(maintain_order=True).to_list() == ["Aperio CS2", "NanoZoomer S210", "B300", "SX"]
    assert slides["egfr"].to_list() == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4  # in memory: the label column
    on_disk = pl.read_parquet(store / "slides.parquet")
    assert "msi" in on_disk.columns and "egfr" not in on_disk.columns
    meta = read_meta(store)
    assert meta["task"] == {"label_column": "msi"} and read_task_column(store) == "msi"
    voc = store_vocabulary(store)
    assert voc.scanners == ("Aperio CS2", "NanoZoomer S210", "B300", "SX") == voc.primary_scanners
    assert voc.magnifications == (25,) and voc.primary_magnification == 25
    assert voc.two_magnification_scanners == () and voc.task == "msi" and voc.models == ("my-fm",)
    assert meta["vocabulary"]["scanners"] == list(voc.scanners)
    assert load_bags(store, "my-fm").task_label == "msi"


@QUIET
def test_two_and_three_scanner_cohorts_and_magnification_pairs(tmp_path: Path) -> None:
    two = _cohort([("CS2", 40), ("S210", 40)], task="kras")
    _trident(tmp_path / "two", two)
    voc2 = store_vocabulary(import_features(tmp_path / "two", two, tmp_path / "s2", "fm", task="kras"))
    assert voc2.primary_scanners == ("CS2", "S210") and voc2.magnification_pairs == ()
    three = _cohort([("CS2", 40), ("S210", 40), ("Pannoramic 1000", 40), ("S210", 20)])
    _trident(tmp_path / "three", three)
    voc3 = store_vocabulary(import_features(tmp_path / "three", three, tmp_path / "s3", "fm", task="msi"))
    assert voc3.primary_scanners == ("CS2", "S210", "P1000") and voc3.magnifications == (40, 20)
    assert voc3.two_magnification_scanners == ("S210",)
    pair = voc3.magnification_pairs[0]
    assert (pair.scanner, pair.high, pair.low, pair.n_specimens, pair.n_unpaired) == ("S210", 40, 20, 4, 0)


def _plism(folder: Path, stainings=("GMH", "HR"), scanners=("AT2", "S210", "SQ"), n: int = 6, seed: int = 0) -> None:
    """plismbench layout: <slide>/features.npy = (N, 3 + D), tile key columns then features, sorted by x, y."""
    rng = np.random.default_rng(seed)
    keys = np.stack([np.zeros(n), np.arange(n) * 224, np.arange(n)[::-1] * 224], axis=1)
    order = np.lexsort((keys[:, 2], keys[:, 1]))
    for st in stainings:
        for sc in scanners:
            d = folder / f"{st}_{sc}_to_GMH_S60.tif"
            d.mkdir(parents=True)
            np.save(d / "features.npy", np.concatenate([keys[order], rng.standard_normal((n, DIM))], axis=1).astype(np.float32))


def test_plismbench_folder_embedding_only_with_registered_tiles(tmp_path: Path) -> None:
    _plism(tmp_path / "plism")
    manifest = plism_manifest(tmp_path / "plism", magnification=20)
    store = import_features(tmp_path / "plism", manifest, tmp_path / "store", "h0-mini", task=None,
                            min_specimens_per_scanner=2)
    meta = read_meta(store)
    assert meta["task"] is None and meta["imports"]["h0-mini"]["format"] == "plismbench"
    slides = read_slides(store)
    assert slides["egfr"].null_count() == slides.height == 6 and "staining" in slides.columns
    voc = store_vocabulary(store)
    assert voc.task is None and not voc.has_task and voc.primary_scanners == ("AT2", "S210", "SQ")
    bags = load_bags(store, "h0-mini")
    assert bags.task_label is None and bags.dim == DIM
    raw = np.load(tmp_path / "plism" / "GMH_AT2_to_GMH_S60.tif" / "features.npy")
    i = bags.slide_ids.index("GMH_AT2_to_GMH_S60.tif")
    np.testing.assert_array_equal(bags.bag(i), raw[:, 3:])
    np.testing.assert_array_equal(bags.coords[bags.offsets[i]:bags.offsets[i + 1]], raw[:, 1:3])
    reg = load_registered(store, "h0-mini")
    assert len(reg) == 6 and sorted(set(reg.tile_id.tolist())) == list(range(6))
    from scangen.metrics.robustness import cross_scanner_retrieval_bags

    result = cross_scanner_retrieval_bags(reg, magnification=20)
    assert result.pairs.height == 3  # scanner pairs of 3 scanners
    from scangen.experiments.scanner_bias import MISSING_PATCH_LABELS, embedding_metrics

    row = embedding_metrics(store, "h0-mini", bags, top_k=(1, 3))
    assert np.isnan(row["robustness_index"]) and row["ri_missing"] == MISSING_PATCH_LABELS
    assert row["tile_missing"] is None and 0 <= row["tile_top1"] <= 1 and 0 <= row["wsi_top1"] <= 1


@QUIET
def test_patch_labels_from_files_and_side_table(tmp_path: Path) -> None:
    manifest = _cohort([("CS2", 40), ("S210", 40)])
    _trident(tmp_path / "f", manifest, labels="tissue_class")
    store = import_features(tmp_path / "f", manifest, tmp_path / "a", "fm", task="msi")
    assert load_bags(store, "fm").tissue_class.tolist()[:5] == [0, 1, 2, 0, 1]
    _trident(tmp_path / "h", manifest, labels="region")
    store = import_features(tmp_path / "h", manifest, tmp_path / "h-store", "fm", task="msi", patch_label="region")
    assert read_meta(store)["imports"]["fm"]["patch_label"]["classes"] == ["fat", "stroma", "tumour"]
    assert load_bags(store, "fm").tissue_class.tolist()[:5] == [2, 1, 0, 2, 1]
    _trident(tmp_path / "g", manifest)
    names = np.array(["tumour", "stroma", "fat", "tumour", "stroma"])
    side = pl.DataFrame({"slide_id": np.repeat(manifest["slide_id"].to_numpy(), 5),
                         "x": np.tile(np.arange(5) * 256, manifest.height), "y": np.tile(np.arange(5) * 512, manifest.height),
                         "region": np.tile(names, manifest.height)})
    store = import_features(tmp_path / "g", manifest, tmp_path / "b", "fm", task="msi", patch_label="region",
                            patch_labels=side)
    record = read_meta(store)["imports"]["fm"]["patch_label"]
    assert record["name"] == "region" and record["classes"] == ["fat", "stroma", "tumour"]
    assert load_bags(store, "fm").tissue_class.tolist()[:5] == [2, 1, 0, 2, 1]
    with pytest.raises(StoreValidationError, match=r"column 'region' has no label for 1 patches in slide ids \['S0-0'\]"):
        import_features(tmp_path / "g", manifest, tmp_path / "c", "fm", task="msi", patch_label="region",
                        patch_labels=side.filter(~((pl.col("slide_id") == "S0-0") & (pl.col("x") == 0))))
    assert not (tmp_path / "c").exists() and _no_leftovers(tmp_path) == []


@QUIET
def test_registered_tiles_from_coordinates(tmp_path: Path) -> None:
    manifest = _cohort([("CS2", 40), ("S210", 40)], n_specimens=2)
    _trident(tmp_path / "f", manifest)
    store = import_features(tmp_path / "f", manifest, tmp_path / "s", "fm", task="msi", registered=True)
    reg = load_registered(store, "fm")
    assert len(reg) == 4 and reg.tile_id.tolist()[:5] == [0, 1, 2, 3, 4]


@QUIET
def test_failed_import_writes_nothing_and_overwrite_is_explicit(tmp_path: Path) -> None:
    manifest = _cohort([("CS2", 40), ("S210", 40)])
    _trident(tmp_path / "bad", manifest, nan_in="S1-1")
    with pytest.raises(StoreValidationError, match=r"NaN or inf.*\['S1-1'\]"):
        import_features(tmp_path / "bad", manifest, tmp_path / "store", "fm", task="msi")
    assert not (tmp_path / "store").exists() and _no_leftovers(tmp_path) == []
    _trident(tmp_path / "good", manifest)
    store = import_features(tmp_path / "good", manifest, tmp_path / "store", "fm", task="msi")
    before = load_bags(store, "fm").features.copy()
    with pytest.raises(StoreValidationError, match="model 'fm' is already imported; pass overwrite=True"):
        import_features(tmp_path / "good", manifest, store, "fm", task="msi")
    with pytest.raises(StoreValidationError, match=r"NaN or inf"):  # a failed overwrite keeps the old model
        import_features(tmp_path / "bad", manifest, store, "fm", task="msi", overwrite=True)
    np.testing.assert_array_equal(load_bags(store, "fm").features, before)
    import_features(tmp_path / "good", manifest, store, "fm2", task="msi")  # a second model is added
    assert read_meta(store)["models"] == {"fm": DIM, "fm2": DIM}
    other = manifest.with_columns(pl.col("msi").reverse())
    with pytest.raises(StoreValidationError, match=r"columns \['egfr'\] differ.*overwrite=True"):
        import_features(tmp_path / "good", other, store, "fm", task="msi")
    import_features(tmp_path / "good", other, store, "fm", task="msi", overwrite=True)
    assert read_meta(store)["models"] == {"fm": DIM} and _no_leftovers(tmp_path) == []
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(StoreValidationError, match="not a store"):
        import_features(tmp_path / "good", manifest, tmp_path / "busy", "fm", task="msi", overwrite=True)


def test_bad_real_data_inputs_name_file_column_and_ids(tmp_path: Path) -> None:
    manifest = _cohort([("CS2", 40), ("S210", 40)])
    _trident(tmp_path / "f", manifest)
    conflict = manifest.with_columns(pl.when(pl.col("slide_id") == "S1-1").then(pl.lit("no")).otherwise(pl.col("msi")).alias("msi"))
    with pytest.raises(StoreValidationError, match=r"column 'msi' \(the task label\) gives conflicting labels.*\['P1'\]"):
        import_features(tmp_path / "f", conflict, tmp_path / "s", "fm", task="msi")
    with pytest.raises(StoreValidationError, match=r"no column 'kras' for the task label"):
        import_features(tmp_path / "f", manifest, tmp_path / "s", "fm", task="kras")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    manifest[:5].write_csv(a)
    manifest[4:].write_csv(b)
    with pytest.raises(StoreValidationError, match=r"a\.csv.*b\.csv.*same slide in several files.*\['S2-0'\]"):
        import_features(tmp_path / "f", [a, b], tmp_path / "s", "fm", task="msi")
    _trident(tmp_path / "f2", manifest[:1])
    with pytest.raises(StoreValidationError, match=r"more than one folder \['S0-0'\]"):
        import_features([tmp_path / "f", tmp_path / "f2"], manifest, tmp_path / "s", "fm", task="msi")
    _trident(tmp_path / "nocoords", manifest, coords=False)
    with pytest.raises(StoreValidationError, match=r"dataset 'coords' is missing for slide ids \['S0-0', 'S0-1'"):
        import_features(tmp_path / "nocoords", manifest, tmp_path / "s", "fm", task="msi")
    with pytest.raises(StoreValidationError, match=r"'scanner' has names \['CS2@20x'\]"):
        import_features(tmp_path / "f", manifest.with_columns(pl.lit("CS2@20x").alias("scanner")), tmp_path / "s", "fm",
                        task="msi")
    with pytest.raises(StoreValidationError, match=r"'magnification' has unreadable values \['high'\]"):
        import_features(tmp_path / "f", manifest.with_columns(pl.lit("high").alias("magnification")), tmp_path / "s",
                        "fm", task="msi")
    with pytest.raises(StoreValidationError, match=r"reserved for the task label"):
        import_features(tmp_path / "f", manifest.with_columns(pl.lit(1).alias("egfr")), tmp_path / "s", "fm", task="msi")
    assert not (tmp_path / "s").exists() and _no_leftovers(tmp_path) == []


def test_cohort_warnings_count_single_scanner_specimens_and_small_scanners(tmp_path: Path) -> None:
    manifest = pl.concat([_cohort([("CS2", 40), ("S210", 40)]),
                          pl.DataFrame({"slide_id": ["L0"], "specimen_id": ["lonely"], "scanner": ["CS2"],
                                        "magnification": ["40x"], "msi": ["yes"]})])
    _trident(tmp_path / "f", manifest)
    with pytest.warns(UserWarning) as record:
        store = import_features(tmp_path / "f", manifest, tmp_path / "s", "fm", task="msi", min_specimens_per_scanner=5)
    text = [str(w.message) for w in record]
    assert any("1 multiscanner specimen(s) scanned on one scanner only" in t and "'lonely'" in t for t in text)
    assert any("fewer than 5 specimens ('S210': 4)" in t for t in text)
    checks = read_meta(store)["imports"]["fm"]["checks"]
    assert checks["single_scanner_specimens"] == ["lonely"] and checks["small_scanners"] == {"S210": 4}


def test_command_line_import_and_vocabulary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = _cohort([("UFS-B300", 40), ("Zeiss Axioscan", 40)])
    _trident(tmp_path / "f", manifest)
    manifest.write_csv(tmp_path / "m.csv")
    args = ["import", str(tmp_path / "f"), "--manifest", str(tmp_path / "m.csv"), "--store", str(tmp_path / "s"),
            "--fm", "uni", "--task", "msi", "--alias", "Zeiss Axioscan=AXIO", "--min-specimens", "1"]
    assert main(args) == 0
    assert main(args) == 2 and "already imported" in capsys.readouterr().err
    assert main(["vocabulary", str(tmp_path / "s")]) == 0
    voc = json.loads(capsys.readouterr().out)
    assert voc["scanners"] == ["B300", "AXIO"] and voc["task"] == "msi" and voc["two_magnification_scanners"] == []
    bad = args[:]
    bad[bad.index("--store") + 1] = str(tmp_path / "t")
    bad[bad.index("--task") + 1] = "kras"
    assert main(bad) == 2 and not (tmp_path / "t").exists()
    _plism(tmp_path / "plism")
    assert main(["import", str(tmp_path / "plism"), "--store", str(tmp_path / "p"), "--fm", "h0",
                 "--plism-magnification", "20", "--min-specimens", "1", "--dtype", "float16"]) == 0
    assert read_meta(tmp_path / "p")["task"] is None and load_registered(tmp_path / "p", "h0").dim == DIM
    assert load_bags(tmp_path / "p", "h0", dtype=None).features.dtype == np.float16


@QUIET
def test_data_step_imports_once_and_reports_the_vocabulary(tmp_path: Path) -> None:
    from scangen.experiments import data

    manifest = _cohort([("CS2", 25), ("S210", 25), ("S210", 10)])
    _trident(tmp_path / "f", manifest)
    manifest.write_csv(tmp_path / "m.csv")
    kw = dict(import_from=tmp_path / "f", manifest=tmp_path / "m.csv", import_fm="fm", import_options={"task": "msi"})
    assert data.prepare_store(tmp_path / "s", "tiny", 0, **kw) == (tmp_path / "s", "imported")
    assert data.prepare_store(tmp_path / "s", "tiny", 0, **kw) == (tmp_path / "s", "existing")
    doc = data.data_json(data.cohort_tables(tmp_path / "s"), tmp_path / "s", "existing")
    assert doc["vocabulary"]["task"] == "msi" and doc["vocabulary"]["two_magnification_scanners"] == ["S210"]
    assert doc["vocabulary"]["primary_magnification"] == 25 and json.dumps(doc)
