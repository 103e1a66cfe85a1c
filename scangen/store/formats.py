"""Readers of per-slide patch-feature files written by feature extractors: TRIDENT, CLAM, plismbench.

TRIDENT:    `<dir>/<slide_id>.h5`, datasets `features` (N, D) and `coords` (N, 2) level-0 (x, y).
CLAM:       `<dir>/pt_files/<slide_id>.pt` holding an (N, D) tensor, coordinates from
            `<dir>/h5_files/<slide_id>.h5` (`coords`); or features and coordinates from h5_files/
            when there is no pt_files/.
plismbench: `<dir>/<slide_id>/features.npy`, one float array (N, 3 + D) per slide: three integer
            columns parsed from the tile id (the 2nd and 3rd are the tile's x and y), then the
            features; rows sorted by (x, y) and the same tile positions in every slide (the PLISM
            tiles are registered across scans), as owkin/plism-benchmark's extraction writes them.

A leading batch axis of size 1 ((1, N, D)) is dropped; float64 becomes float32, float16 stays.
An h5 file may also hold a per-patch label dataset (named by the caller, e.g. `tissue_class`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .schema import StoreValidationError, format_ids

FORMATS = ("auto", "trident", "clam", "plismbench")
PLISM_FILE = "features.npy"
PLISM_KEY_COLUMNS = 3


@dataclass
class SlideFeatures:
    """One slide's patches: features (N, D), coords (N, 2) int64 or None when the files have none,
    patch_label (N,) raw values or None, tile_key (N, 3) int64 registration key or None."""

    features: np.ndarray
    coords: np.ndarray | None
    patch_label: np.ndarray | None = None
    tile_key: np.ndarray | None = None


def detect_format(features_dir: Path, fmt: str) -> str:
    """`fmt`, or the layout found in `features_dir` (plismbench, then CLAM, then TRIDENT)."""
    if fmt not in FORMATS:
        raise StoreValidationError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    if any(features_dir.glob(f"*/{PLISM_FILE}")):
        return "plismbench"
    if (features_dir / "pt_files").is_dir() or (features_dir / "h5_files").is_dir():
        return "clam"
    if any(features_dir.glob("*.h5")):
        return "trident"
    raise StoreValidationError(
        f"{features_dir}: no TRIDENT *.h5 files, no CLAM pt_files/ or h5_files/ folder and no plismbench "
        f"<slide>/{PLISM_FILE}"
    )


def _files_in(features_dir: Path, fmt: str) -> dict[str, Path]:
    if fmt == "trident":
        return {p.stem: p for p in sorted(features_dir.glob("*.h5"))}
    if fmt == "plismbench":
        return {p.parent.name: p for p in sorted(features_dir.glob(f"*/{PLISM_FILE}"))}
    pt_dir, h5_dir = features_dir / "pt_files", features_dir / "h5_files"
    source = pt_dir if pt_dir.is_dir() else h5_dir
    if not source.is_dir():
        raise StoreValidationError(f"{features_dir}: CLAM folder needs pt_files/ or h5_files/")
    pattern = "*.pt" if source == pt_dir else "*.h5"
    return {p.stem: p for p in sorted(source.glob(pattern))}


def feature_files(features_dirs: Sequence[Path], fmt: str) -> tuple[dict[str, Path], str]:
    """slide_id -> feature file over one or several folders of one format; the format found.

    A slide id with files in two folders is an error naming the files.
    """
    formats = {detect_format(d, fmt) for d in features_dirs}
    if len(formats) > 1:
        raise StoreValidationError(f"feature folders {[str(d) for d in features_dirs]} mix formats {sorted(formats)}")
    found = formats.pop()
    files: dict[str, Path] = {}
    clash: dict[str, list[str]] = {}
    for folder in features_dirs:
        for sid, path in _files_in(folder, found).items():
            if sid in files:
                clash.setdefault(sid, [str(files[sid])]).append(str(path))
            files[sid] = path
    if clash:
        shown = "; ".join(f"{sid}: {paths}" for sid, paths in sorted(clash.items())[:5])
        raise StoreValidationError(
            f"feature folders {[str(d) for d in features_dirs]}: slide ids with a feature file in more than one "
            f"folder {format_ids(sorted(clash))} ({shown})"
        )
    return files, found


def _read_h5(path: Path, name: str, required: bool = True) -> np.ndarray | None:
    with h5py.File(path, "r") as f:
        if name not in f:
            if not required:
                return None
            raise StoreValidationError(f"{path}: dataset {name!r} missing (has {list(f.keys())})")
        arr = np.asarray(f[name][()])
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]  # some extractors keep a leading batch axis
    return arr


def _as_features(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise StoreValidationError(f"{path}: features must be a non-empty (N, D) array, got shape {arr.shape}")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.float16, np.float32):
        raise StoreValidationError(f"{path}: features must be floating point, got {arr.dtype}")
    return arr


def _whole(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Integer positions from an integer or whole-valued float array."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise StoreValidationError(f"{path}: {what} must be whole, finite level-0 pixel positions")
    elif values.dtype.kind not in "iu":
        raise StoreValidationError(f"{path}: {what} must be numbers, got {values.dtype}")
    return values.astype(np.int64)


def _coords(path: Path, n: int) -> np.ndarray:
    coords = _read_h5(path, "coords")
    if coords.shape != (n, 2):
        raise StoreValidationError(f"{path}: coords has shape {coords.shape}, expected ({n}, 2) to match features")
    return _whole(coords, path, "dataset 'coords'")


def _patch_label(path: Path, name: str | None, n: int) -> np.ndarray | None:
    if name is None or path.suffix != ".h5":
        return None
    labels = _read_h5(path, name, required=False)
    if labels is None:
        return None
    labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
    if labels.shape != (n,):
        raise StoreValidationError(f"{path}: dataset {name!r} has shape {labels.shape}, expected ({n},) patch labels")
    if labels.dtype.kind == "O":  # h5py variable-length strings come back as bytes objects
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in labels])
    return labels.astype(str) if labels.dtype.kind == "S" else labels


def _read_pt(path: Path) -> np.ndarray:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, torch.Tensor):
        raise StoreValidationError(f"{path}: expected a tensor of shape (N, D), got {type(obj).__name__}")
    return obj.detach().float().numpy() if obj.dtype == torch.bfloat16 else obj.detach().numpy()


def read_slide(path: Path, fmt: str, patch_label: str | None = None) -> SlideFeatures:
    """One slide's features, coordinates (None when its files have none), optional patch labels and,
    for plismbench, the registration key of every tile."""
    if fmt == "plismbench":
        table = np.load(path, allow_pickle=False)
        if table.ndim != 2 or table.shape[1] <= PLISM_KEY_COLUMNS or table.shape[0] == 0:
            raise StoreValidationError(
                f"{path}: expected a plismbench (N, 3 + D) array (tile key columns, then features), got {table.shape}"
            )
        key = _whole(table[:, :PLISM_KEY_COLUMNS], path, "the three tile-key columns")
        return SlideFeatures(_as_features(table[:, PLISM_KEY_COLUMNS:], path), key[:, 1:3], None, key)
    if fmt == "clam" and path.suffix == ".pt":
        features = _as_features(_read_pt(path), path)
        h5 = path.parent.parent / "h5_files" / f"{path.stem}.h5"
        if not h5.is_file():
            return SlideFeatures(features, None, None)
        return SlideFeatures(features, _coords(h5, len(features)), _patch_label(h5, patch_label, len(features)))
    features = _as_features(_read_h5(path, "features"), path)
    coords = _read_h5(path, "coords", required=False)
    coords = None if coords is None else _coords(path, len(features))
    return SlideFeatures(features, coords, _patch_label(path, patch_label, len(features)))
