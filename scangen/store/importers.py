"""Import real patch features (TRIDENT or CLAM folders) plus a slide manifest into a store.

TRIDENT: `<features_dir>/<slide_id>.h5` with datasets `features` (N, D) and `coords` (N, 2).
CLAM:    `<features_dir>/pt_files/<slide_id>.pt` holding an (N, D) tensor, coordinates from
         `<features_dir>/h5_files/<slide_id>.h5` (`coords`); or features from h5_files/ when there is no
         pt_files/. Without h5 coordinates the coordinates are zeros and the import says so (a warning
         and meta.json["imports"][fm]["coords"] = "missing").
The manifest (CSV or Parquet, or a polars DataFrame) needs slide_id, specimen_id, scanner,
magnification, egfr, and may hold cohort (default "task"), site, split; the accepted column-name
synonyms are MANIFEST_SYNONYMS. Imported stores are real: simulated = false everywhere.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from scangen.constants import SCANNER_NAMES

from .schema import StoreValidationError, format_ids, meta_path, slides_path
from .validate import validate_meta, validate_slides
from .writer import write_embeddings, write_meta, write_slides

MANIFEST_SYNONYMS: dict[str, tuple[str, ...]] = {
    "slide_id": ("slide", "slide_name", "wsi", "wsi_id", "filename"),
    "specimen_id": ("specimen", "case_id", "block_id"),
    "scanner": ("scanner_id", "scanner_name"),
    "magnification": ("mag", "objective_power"),
    "egfr": ("egfr_status", "egfr_mutation", "label"),
    "cohort": (),
    "site": ("center", "tss"),
    "split": ("fold",),
}
"""Canonical manifest column -> other names accepted for it (case-insensitive)."""
FORMATS = ("auto", "trident", "clam")


def _read_manifest(manifest: Path | pl.DataFrame) -> tuple[pl.DataFrame, str]:
    if isinstance(manifest, pl.DataFrame):
        return manifest, "manifest DataFrame"
    path = Path(manifest)
    if not path.is_file():
        raise StoreValidationError(f"{path}: manifest file not found")
    if path.suffix.lower() == ".csv":
        return pl.read_csv(path, infer_schema=False), str(path)  # all text: ids keep leading zeros
    if path.suffix.lower() in (".parquet", ".pq"):
        return pl.read_parquet(path), str(path)
    raise StoreValidationError(f"{path}: manifest must be a .csv or .parquet file")


def _canonical_names(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Rename synonym columns to canonical names; two columns for one name is an error."""
    lower = {c.lower(): c for c in df.columns}
    renames: dict[str, str] = {}
    for canon, synonyms in MANIFEST_SYNONYMS.items():
        found = [lower[n] for n in (canon, *synonyms) if n in lower]
        if len(found) > 1:
            raise StoreValidationError(f"{source}: columns {found} all mean {canon!r}; keep one")
        if found and found[0] != canon:
            renames[found[0]] = canon
    return df.rename(renames)


def _scanner_codes(col: pl.Series, source: str) -> pl.Series:
    """Scanner codes (AT2, GT450, ...) from codes or full names, case-insensitive."""
    lookup = {code.lower(): code for code in SCANNER_NAMES}
    lookup.update({name.lower(): code for code, name in SCANNER_NAMES.items()})
    if col.dtype != pl.String:
        raise StoreValidationError(f"{source}: column 'scanner' must hold text, got {col.dtype}")
    return col.map_elements(lambda v: lookup.get(v.strip().lower(), v), return_dtype=pl.String)


def _magnification(col: pl.Series, source: str) -> pl.Series:
    """Integer magnification from integers or text such as '40x'."""
    if col.dtype.is_integer():
        return col
    if col.dtype == pl.String:
        digits = col.str.strip_chars().str.to_lowercase().str.strip_suffix("x")
        parsed = digits.cast(pl.Int64, strict=False)
        bad = parsed.is_null() & col.is_not_null()
        if bad.any():
            values = col.filter(bad).unique().to_list()
            raise StoreValidationError(f"{source}: column 'magnification' has unreadable values {values}")
        return parsed
    raise StoreValidationError(
        f"{source}: column 'magnification' must be an integer (or text like '40x'), got {col.dtype}"
    )


def _egfr(col: pl.Series, source: str) -> pl.Series:
    """EGFR labels as integers from integers, booleans or text ('0', '1', 'true', 'false')."""
    if col.dtype.is_integer():
        return col
    if col.dtype == pl.Boolean:
        return col.cast(pl.Int64)
    if col.dtype == pl.String:
        text = col.str.strip_chars().str.to_lowercase()
        parsed = text.replace_strict({"0": 0, "1": 1, "false": 0, "true": 1}, default=None, return_dtype=pl.Int64)
        bad = parsed.is_null() & col.is_not_null()
        if bad.any():
            values = col.filter(bad).unique().to_list()
            raise StoreValidationError(f"{source}: column 'egfr' has values {values}; expected 0/1 or true/false")
        return parsed
    raise StoreValidationError(f"{source}: column 'egfr' must be 0/1 (integer, boolean or text), got {col.dtype}")


def manifest_to_slides(manifest: Path | pl.DataFrame) -> pl.DataFrame:
    """The validated slides table of a manifest (simulated = false, cohort defaults to 'task')."""
    df, source = _read_manifest(manifest)
    df = _canonical_names(df, source)
    required = ["slide_id", "specimen_id", "scanner", "magnification", "egfr"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreValidationError(f"{source}: missing manifest column(s) {missing}; present: {df.columns}")
    df = df.with_columns(
        pl.col("slide_id").cast(pl.String),
        pl.col("specimen_id").cast(pl.String),
        _scanner_codes(df["scanner"], source).alias("scanner"),
        _magnification(df["magnification"], source).alias("magnification"),
        _egfr(df["egfr"], source).alias("egfr"),
    )
    if "cohort" not in df.columns:
        df = df.with_columns(pl.lit("task").alias("cohort"))
    return validate_slides(df.with_columns(pl.lit(False).alias("simulated")), source)


def _detect_format(features_dir: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise StoreValidationError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    if (features_dir / "pt_files").is_dir() or (features_dir / "h5_files").is_dir():
        return "clam"
    if any(features_dir.glob("*.h5")):
        return "trident"
    raise StoreValidationError(f"{features_dir}: no TRIDENT *.h5 files and no CLAM pt_files/ or h5_files/ folder")


def _feature_files(features_dir: Path, fmt: str) -> tuple[dict[str, Path], Path | None]:
    """slide_id -> feature file, and the folder of coordinate h5 files (None if absent)."""
    if fmt == "trident":
        return {p.stem: p for p in sorted(features_dir.glob("*.h5"))}, features_dir
    h5_dir = features_dir / "h5_files"
    pt_dir = features_dir / "pt_files"
    source = pt_dir if pt_dir.is_dir() else h5_dir
    if not source.is_dir():
        raise StoreValidationError(f"{features_dir}: CLAM folder needs pt_files/ or h5_files/")
    pattern = "*.pt" if source == pt_dir else "*.h5"
    return {p.stem: p for p in sorted(source.glob(pattern))}, (h5_dir if h5_dir.is_dir() else None)


def _read_h5(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        if name not in f:
            raise StoreValidationError(f"{path}: dataset {name!r} missing (has {list(f.keys())})")
        arr = np.asarray(f[name][()])
    if arr.ndim == 3 and arr.shape[0] == 1:  # some extractors keep a leading batch axis
        arr = arr[0]
    return arr


def _read_features(path: Path) -> np.ndarray:
    if path.suffix == ".pt":
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, torch.Tensor):
            raise StoreValidationError(f"{path}: expected a tensor of shape (N, D), got {type(obj).__name__}")
        arr = obj.detach().float().numpy() if obj.dtype == torch.bfloat16 else obj.detach().numpy()
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
    else:
        arr = _read_h5(path, "features")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise StoreValidationError(f"{path}: features must be a non-empty (N, D) array, got shape {arr.shape}")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.float16, np.float32):
        raise StoreValidationError(f"{path}: features must be floating point, got {arr.dtype}")
    return arr


def _read_coords(path: Path, n: int) -> np.ndarray:
    coords = _read_h5(path, "coords")
    if coords.shape != (n, 2):
        raise StoreValidationError(f"{path}: coords has shape {coords.shape}, expected ({n}, 2) to match features")
    if coords.dtype.kind == "f":
        if not np.all(np.isfinite(coords)) or np.any(coords != np.round(coords)):
            raise StoreValidationError(f"{path}: coords must be whole level-0 pixel positions")
    return coords.astype(np.int64)


def _check_existing_store(store: Path, slides: pl.DataFrame) -> dict:
    """An existing store must be real and describe the same slides; returns its meta (or a new one)."""
    meta = {"simulated": False, "models": {}}
    if meta_path(store).exists():
        meta = validate_meta(json.loads(meta_path(store).read_text()), str(meta_path(store)))
        if meta["simulated"]:
            raise StoreValidationError(f"{meta_path(store)}: store is simulated; import real features into a new store")
    if slides_path(store).exists():
        old = set(pl.read_parquet(slides_path(store), columns=["slide_id"])["slide_id"].to_list())
        new = set(slides["slide_id"].to_list())
        if old != new:
            raise StoreValidationError(
                f"{slides_path(store)}: store holds other slides than the manifest; differing ids "
                f"{format_ids(sorted(old ^ new))}"
            )
    return meta


def import_features(
    features_dir: Path, manifest: Path | pl.DataFrame, store: Path, fm: str, fmt: str = "auto"
) -> Path:
    """Import one model's features for every manifest slide into `store` (validated); returns `store`."""
    features_dir, store = Path(features_dir), Path(store)
    if not features_dir.is_dir():
        raise StoreValidationError(f"{features_dir}: features folder not found")
    slides = manifest_to_slides(manifest)
    fmt = _detect_format(features_dir, fmt)
    files, coords_dir = _feature_files(features_dir, fmt)
    ids = slides["slide_id"].to_list()
    no_file = [s for s in ids if s not in files]
    if no_file:
        raise StoreValidationError(
            f"{features_dir}: no {fmt} feature file for manifest slide ids {format_ids(no_file)}"
        )
    extra = sorted(set(files) - set(ids))
    if extra:
        raise StoreValidationError(
            f"{features_dir}: feature files without a manifest row for slide ids {format_ids(extra)}"
        )
    meta = _check_existing_store(store, slides)

    feats, coords, missing_coords = [], [], []
    for sid in ids:
        arr = _read_features(files[sid])
        coord_file = coords_dir / f"{sid}.h5" if coords_dir is not None else None
        if coord_file is not None and coord_file.is_file():
            coords.append(_read_coords(coord_file, len(arr)))
        else:
            coords.append(np.zeros((len(arr), 2), dtype=np.int64))
            missing_coords.append(sid)
        feats.append(arr)
    dims = {s: a.shape[1] for s, a in zip(ids, feats)}
    if len(set(dims.values())) > 1:
        common = max(set(dims.values()), key=list(dims.values()).count)
        raise StoreValidationError(
            f"{features_dir}: features of mixed dimension; slide ids differing from D = {common}: "
            f"{format_ids([s for s, d in dims.items() if d != common])}"
        )
    dtype = np.float16 if all(a.dtype == np.float16 for a in feats) else np.float32
    features = np.concatenate([a.astype(dtype, copy=False) for a in feats])
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in feats])]).astype(np.int64)
    if missing_coords:
        warnings.warn(
            f"{features_dir}: no h5 coordinates for {len(missing_coords)} slide(s); their coords are zeros "
            f"(recorded in meta.json imports[{fm!r}])",
            stacklevel=2,
        )
    write_slides(store, slides)
    write_embeddings(store, fm, ids, offsets, features, np.concatenate(coords))
    meta["models"] = {**meta["models"], fm: int(features.shape[1])}
    imports = dict(meta.get("imports", {}))
    imports[fm] = {"format": fmt, "source": str(features_dir), "coords": "missing" if missing_coords else "from h5",
                   "slides_without_coords": missing_coords}
    meta["imports"] = imports
    write_meta(store, meta)
    return store
