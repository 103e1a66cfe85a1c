"""Import real patch features (TRIDENT, CLAM or plismbench folders) plus a slide manifest into a store.

    import_features(features_dir, manifest, store, fm, fmt="auto", *, task="auto", scanner_aliases=None,
                    patch_label="tissue_class", patch_labels=None, registered=None, overwrite=False)

Feature layouts: `scangen.store.formats`; the manifest: `scangen.store.manifest` (any scanners,
magnifications and task); per-patch labels: `scangen.store.patch_labels`. Registered tiles (the same
tissue position in every scan of a specimen) come from plismbench's tile keys, or with
`registered=True` from equal coordinates across the scans of a specimen, and feed the cross-scanner
tile retrieval. The import is all or nothing (`scangen.store.staging`): every file is read and
checked first, the store is built in a temporary folder and moved into place at the end. Imported
stores are real (simulated = false everywhere). Command line: `python -m scangen.store import ...`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .cohort_checks import MIN_SPECIMENS_PER_SCANNER, check_cohort, warn_cohort
from .formats import FORMATS, SlideFeatures, feature_files, read_slide
from .manifest import DEFAULT_COHORT, MANIFEST_SYNONYMS, ManifestInput, manifest_source, manifest_to_slides
from .patch_labels import encode, labels_from_table, read_side_table
from .reader import read_meta, read_slides
from .schema import SLIDE_COLUMNS, StoreValidationError, format_ids
from .staging import check_target, copy_store_header, is_store, publish_model, publish_new, staging_folder
from .vocabulary import slides_vocabulary, task_of_meta
from .writer import write_embeddings, write_meta, write_registered, write_slides

__all__ = ["FORMATS", "MANIFEST_SYNONYMS", "import_features", "import_is_current", "manifest_to_slides", "plism_manifest"]


@dataclass
class _Patches:
    """Every imported patch, slides in manifest order: features (N, D), offsets (n + 1,), coords (N, 2)
    (zeros for the slides listed in no_coords), plismbench registration keys (N, 3) or None."""

    features: np.ndarray
    offsets: np.ndarray
    coords: np.ndarray
    no_coords: list[str]
    tile_key: np.ndarray | None


def plism_manifest(features_dir: Path | str, magnification: int) -> pl.DataFrame:
    """A manifest for a plismbench feature folder from its slide names '<staining>_<scanner>_to_...':
    specimen = staining (one glass slide scanned on every scanner), cohort multiscanner, no task."""
    folder = Path(features_dir)
    names = sorted(p.parent.name for p in folder.glob("*/features.npy"))
    if not names:
        raise StoreValidationError(f"{folder}: no plismbench <slide>/features.npy files")
    odd = [n for n in names if n.count("_") < 1]
    if odd:
        raise StoreValidationError(f"{folder}: slide folder names {format_ids(odd)} are not '<staining>_<scanner>_...'")
    parts = [n.split("_") for n in names]
    return pl.DataFrame({"slide_id": names, "specimen_id": [p[0] for p in parts], "scanner": [p[1] for p in parts],
                         "magnification": [int(magnification)] * len(names), "staining": [p[0] for p in parts]})


def _match_files(ids: list[str], files: dict[str, Path], fmt: str, dirs: list[Path]) -> None:
    no_file = [s for s in ids if s not in files]
    if no_file:
        raise StoreValidationError(f"{[str(d) for d in dirs]}: no {fmt} feature file for manifest slide ids {format_ids(no_file)}")
    extra = sorted(set(files) - set(ids))
    if extra:
        raise StoreValidationError(f"{[str(d) for d in dirs]}: feature files without a manifest row for slide ids {format_ids(extra)}")


def _read_patches(ids: list[str], files: dict[str, Path], fmt: str, patch_label: str | None,
                  dtype: str | None = None) -> tuple[_Patches, list[np.ndarray | None]]:
    slides: list[SlideFeatures] = [read_slide(files[s], fmt, patch_label) for s in ids]
    dims = {s: a.features.shape[1] for s, a in zip(ids, slides)}
    if len(set(dims.values())) > 1:
        common = max(set(dims.values()), key=list(dims.values()).count)
        raise StoreValidationError(
            f"feature files: features of mixed dimension; slide ids differing from D = {common}: "
            f"{format_ids([s for s, d in dims.items() if d != common])}"
        )
    if dtype is None:
        dtype = np.float16 if all(a.features.dtype == np.float16 for a in slides) else np.float32
    elif dtype not in ("float16", "float32"):
        raise StoreValidationError(f"dtype: expected 'float16', 'float32' or None (keep), got {dtype!r}")
    features = np.concatenate([a.features.astype(dtype, copy=False) for a in slides])
    offsets = np.concatenate([[0], np.cumsum([len(a.features) for a in slides])]).astype(np.int64)
    no_coords = [s for s, a in zip(ids, slides) if a.coords is None]
    coords = np.concatenate([a.coords if a.coords is not None else np.zeros((len(a.features), 2), np.int64)
                             for a in slides])
    keys = np.concatenate([a.tile_key for a in slides]) if all(a.tile_key is not None for a in slides) else None
    return _Patches(features, offsets, coords, no_coords, keys), [a.patch_label for a in slides]


def _check_coords(patches: _Patches, fmt: str, dirs: list[Path], registered: bool, fm: str) -> None:
    if not patches.no_coords:
        return
    where = f"{[str(d) for d in dirs]}: dataset 'coords'"
    if fmt == "trident" or registered:
        why = "registered tiles are matched by coordinates" if registered else "TRIDENT files carry coords"
        raise StoreValidationError(f"{where} is missing for slide ids {format_ids(patches.no_coords)} ({why})")
    warnings.warn(
        f"{where} (CLAM h5_files/) is missing for {len(patches.no_coords)} slide(s) {format_ids(patches.no_coords)}; "
        f"their coords are stored as zeros (recorded in meta.json imports[{fm!r}])",
        UserWarning, stacklevel=3,
    )


def _patch_labels(patches: _Patches, from_files: list[np.ndarray | None], ids: list[str], patch_label: str | None,
                  side_table: Path | str | pl.DataFrame | None) -> tuple[np.ndarray | None, dict | None]:
    """Encoded per-patch labels and their meta.json record (None, None when there are none)."""
    lengths = np.diff(patches.offsets)
    slide_of_row = np.repeat(np.arange(len(ids)), lengths)
    if side_table is not None:
        if patch_label is None:
            raise StoreValidationError("patch_labels: a side table needs patch_label, the name of its label column")
        table, source = read_side_table(side_table, patch_label)
        raw = labels_from_table(table, source, patch_label, ids, patches.offsets,
                                None if patches.no_coords else patches.coords)
    else:
        have = [s for s, v in zip(ids, from_files) if v is not None]
        if not have:
            return None, None
        if len(have) < len(ids):
            lacking = [s for s, v in zip(ids, from_files) if v is None]
            raise StoreValidationError(
                f"feature files: dataset {patch_label!r} (patch labels) is present for some slides but missing for "
                f"slide ids {format_ids(lacking)}"
            )
        raw, source = np.concatenate(from_files), "feature files"
    codes, classes = encode(raw, str(patch_label), source, slide_of_row, ids)
    return codes, {"name": patch_label, "source": source, "classes": classes}


def _tile_ids(patches: _Patches, slides: pl.DataFrame, registered: bool) -> np.ndarray | None:
    """tile_id per patch (-1: no twin in another scan of its specimen), or None without registration."""
    if not registered:
        return None
    lengths = np.diff(patches.offsets)
    specimen = np.repeat(slides["specimen_id"].to_numpy().astype(str), lengths)
    slide = np.repeat(np.arange(slides.height), lengths)
    key = patches.tile_key if patches.tile_key is not None else patches.coords
    table = pl.DataFrame({"sp": specimen, "slide": slide, **{f"k{j}": key[:, j] for j in range(key.shape[1])}})
    kcols = [f"k{j}" for j in range(key.shape[1])]
    repeats = table.filter(pl.struct("slide", *kcols).is_duplicated())
    if repeats.height:
        bad = sorted({slides["slide_id"][int(i)] for i in repeats["slide"].to_list()})
        raise StoreValidationError(f"registered tiles: a tile position repeats within slide ids {format_ids(bad)}")
    n_scans = table.group_by("sp", *kcols).agg(pl.len().alias("n"))
    positions = table.select(kcols).unique().sort(kcols).with_row_index("tile")
    table = table.join(n_scans, on=["sp", *kcols], how="left", maintain_order="left")
    table = table.join(positions, on=kcols, how="left", maintain_order="left")
    return np.where(table["n"].to_numpy() >= 2, table["tile"].to_numpy().astype(np.int64), -1)


def _same_slides(old: pl.DataFrame, new: pl.DataFrame) -> list[str]:
    """Canonical columns whose values differ between a store's slides and a manifest's."""
    cols = [c for c in SLIDE_COLUMNS if c != "simulated"]
    if old.height != new.height or old["slide_id"].to_list() != new["slide_id"].to_list():
        return ["slide_id"]
    return [c for c in cols if not old[c].equals(new[c])]


def _existing_mode(store: Path, slides: pl.DataFrame, task: str | None, fm: str, overwrite: bool) -> str:
    """"add" (a new model into an existing store with these slides) or "new" (build the store whole)."""
    check_target(store)
    if not is_store(store):
        return "new"
    meta = read_meta(store)
    if meta["simulated"]:
        raise StoreValidationError(f"{store / 'meta.json'}: store is simulated; import real features into a new store")
    differ = _same_slides(read_slides(store), slides) + (["task"] if task_of_meta(meta) != task else [])
    if differ:
        if not overwrite:
            raise StoreValidationError(
                f"{store}: store holds other slides than the manifest (columns {differ} differ); pass overwrite=True "
                f"(command line: --overwrite) to replace the whole store"
            )
        return "new"
    if fm in meta["models"] and not overwrite:
        raise StoreValidationError(
            f"{store}: model {fm!r} is already imported; pass overwrite=True (command line: --overwrite) to replace it"
        )
    return "add"


def import_is_current(features_dir: Path | str | Sequence[Path | str], manifest: ManifestInput, store: Path | str,
                      fm: str, *, task: str | None = "auto", scanner_aliases: Mapping[str, str] | None = None,
                      default_cohort: str = DEFAULT_COHORT) -> bool:
    """True when `store` already holds model `fm` imported from these folders with this manifest's slides
    and task (a pipeline rerun then reuses the store instead of importing again)."""
    store = Path(store)
    if not is_store(store):
        return False
    meta = read_meta(store)
    dirs = [Path(features_dir)] if isinstance(features_dir, (str, Path)) else [Path(d) for d in features_dir]
    record = meta.get("imports", {}).get(fm)
    if meta["simulated"] or fm not in meta["models"] or not record or record.get("sources") != [str(d) for d in dirs]:
        return False
    slides, task_name = manifest_to_slides(manifest, task, scanner_aliases, default_cohort)
    return task_of_meta(meta) == task_name and not _same_slides(read_slides(store), slides)


def import_features(
    features_dir: Path | str | Sequence[Path | str],
    manifest: ManifestInput,
    store: Path | str,
    fm: str,
    fmt: str = "auto",
    *,
    task: str | None = "auto",
    scanner_aliases: Mapping[str, str] | None = None,
    patch_label: str | None = "tissue_class",
    patch_labels: Path | str | pl.DataFrame | None = None,
    registered: bool | None = None,
    overwrite: bool = False,
    default_cohort: str = DEFAULT_COHORT,
    min_specimens_per_scanner: int = MIN_SPECIMENS_PER_SCANNER,
    dtype: str | None = None,
) -> Path:
    """Import one model's features for every manifest slide into `store`; returns `store`.

    features_dir: one folder or several (slide ids unique across them); manifest: one file/DataFrame or
    several. task: the manifest's label column ("auto": an EGFR column; None: embedding-only).
    scanner_aliases: your scanner names -> codes. patch_label: name of the per-patch label dataset in
    the feature files or the column of the `patch_labels` side table. registered: write registered
    tiles (None: only for plismbench). overwrite: replace model `fm` in the store, or the whole store
    when its slides differ. dtype: "float16" halves the store (None keeps float16 files as float16,
    else float32). Nothing is written when anything fails.
    """
    dirs = [Path(features_dir)] if isinstance(features_dir, (str, Path)) else [Path(d) for d in features_dir]
    for d in dirs:
        if not d.is_dir():
            raise StoreValidationError(f"{d}: features folder not found")
    store = Path(store)
    slides, task_name = manifest_to_slides(manifest, task, scanner_aliases, default_cohort)
    files, fmt = feature_files(dirs, fmt)
    registered = (fmt == "plismbench") if registered is None else bool(registered)
    ids = slides["slide_id"].to_list()
    _match_files(ids, files, fmt, dirs)
    mode = _existing_mode(store, slides, task_name, fm, overwrite)

    patches, file_labels = _read_patches(ids, files, fmt, patch_label, dtype)
    _check_coords(patches, fmt, dirs, registered, fm)
    tissue, label_record = _patch_labels(patches, file_labels, ids, patch_label, patch_labels)
    tile_id = _tile_ids(patches, slides, registered)
    check = check_cohort(slides, min_specimens_per_scanner)
    warn_cohort(check, manifest_source(manifest))

    record = {"format": fmt, "sources": [str(d) for d in dirs],
              "coords": "missing" if patches.no_coords else "from files", "slides_without_coords": patches.no_coords,
              "patch_label": label_record, "registered": registered,
              "n_registered_tiles": 0 if tile_id is None else int((tile_id >= 0).sum()), "checks": check.to_json()}
    with staging_folder(store) as tmp:
        if mode == "add":
            copy_store_header(store, tmp)
            meta = read_meta(tmp)
        else:
            meta = {"simulated": False, "models": {}, "task": None if task_name is None else {"label_column": task_name}}
        meta["models"] = {**meta["models"], fm: int(patches.features.shape[1])}
        meta["imports"] = {**meta.get("imports", {}), fm: record}
        meta["vocabulary"] = slides_vocabulary(slides, task_name).to_json()
        write_meta(tmp, meta)
        if mode == "new":
            write_slides(tmp, slides, task_name)
        write_embeddings(tmp, fm, ids, patches.offsets, patches.features, patches.coords, tissue)
        if tile_id is not None:
            _write_registered(tmp, fm, ids, patches, tile_id, tissue)
        if mode == "new":
            publish_new(tmp, store)
        else:
            publish_model(tmp, store, fm)
    return store


def _write_registered(tmp: Path, fm: str, ids: list[str], patches: _Patches, tile_id: np.ndarray,
                      tissue: np.ndarray | None) -> None:
    """registered/<fm>.parquet from the patches that have a twin (slides without any are left out)."""
    keep = tile_id >= 0
    if not keep.any():
        raise StoreValidationError(
            "registered tiles: no tile position is shared by two scans of a specimen (check the coordinates, or "
            "import with registered=False)"
        )
    slide_of_row = np.repeat(np.arange(len(ids)), np.diff(patches.offsets))
    counts = np.bincount(slide_of_row[keep], minlength=len(ids))
    present = np.flatnonzero(counts > 0)
    offsets = np.concatenate([[0], np.cumsum(counts[present])]).astype(np.int64)
    write_registered(tmp, fm, [ids[i] for i in present], offsets, patches.features[keep],
                     tile_id[keep].astype(np.int32), None if tissue is None else tissue[keep])
