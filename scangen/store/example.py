"""A small TRIDENT-style feature folder plus manifest in a vocabulary the simulator never uses.

For the worked example of docs/bring_your_own_cohort.md and its end-to-end test: scanners "Aperio
CS2", "NanoZoomer S210" and "Motic EasyScan Pro" at 25x, the NanoZoomer also at 10x (one
two-magnification scanner), and a binary task named `msi`. Not a calibrated simulation: the
features are random Gaussian patches with a class shift, a per-scanner offset and a per-specimen
offset, just enough signal for every notebook to have something to compute.

    write_example_trident(folder) -> (features_dir, manifest_path)

Layout written (TRIDENT: one HDF5 file per slide with `features` (n_patches, dim) and `coords`
(n_patches, 2), plus a per-patch `tissue_class`)::

    folder/features/<slide_id>.h5
    folder/manifest.csv     slide_id, specimen_id, scanner, magnification, cohort, msi
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

EXAMPLE_SCANNERS: tuple[str, ...] = ("Aperio CS2", "NanoZoomer S210", "Motic EasyScan Pro")
EXAMPLE_MAGNIFICATION = 25
EXAMPLE_LOW = ("NanoZoomer S210", 10)
"""The one scanner that also scanned the multi-scanner specimens at a second, lower magnification."""
EXAMPLE_TASK = "msi"


def example_manifest(n_task: int = 16, n_multi: int = 12, task: str | None = EXAMPLE_TASK) -> pl.DataFrame:
    """The manifest: `n_task` single-scan training specimens (cohort "task", scanned on the first
    scanner) and `n_multi` multi-scanner specimens (every scanner at 25x, the NanoZoomer at 10x too);
    labels (0/1) alternate by specimen. task None: no label column (an embedding-only cohort)."""
    rows = []
    for s in range(n_task):
        rows.append({"slide_id": f"T{s:02d}", "specimen_id": f"TP{s:02d}", "scanner": EXAMPLE_SCANNERS[0],
                     "magnification": f"{EXAMPLE_MAGNIFICATION}x", "cohort": "task", "_y": s % 2})
    for s in range(n_multi):
        scans = [(sc, EXAMPLE_MAGNIFICATION) for sc in EXAMPLE_SCANNERS] + [EXAMPLE_LOW]
        for k, (scanner, mag) in enumerate(scans):
            rows.append({"slide_id": f"M{s:02d}-{k}", "specimen_id": f"MP{s:02d}", "scanner": scanner,
                         "magnification": f"{mag}x", "cohort": "multiscanner", "_y": s % 2})
    df = pl.DataFrame(rows)
    if task is not None:
        df = df.with_columns(pl.col("_y").alias(task))
    return df.drop("_y")


def write_example_trident(folder: Path, *, dim: int = 16, n_patches: int = 12, seed: int = 0,
                          task: str | None = EXAMPLE_TASK, n_task: int = 16, n_multi: int = 12) -> tuple[Path, Path]:
    """Write `folder/features/*.h5` and `folder/manifest.csv`; return (features folder, manifest)."""
    import h5py

    folder = Path(folder)
    features = folder / "features"
    features.mkdir(parents=True, exist_ok=True)
    manifest = example_manifest(n_task, n_multi, task)
    rng = np.random.default_rng(seed)
    class_dir = rng.standard_normal(dim)
    scanner_dir = {s: 0.8 * rng.standard_normal(dim) for s in (*EXAMPLE_SCANNERS, "low")}
    specimen_dir = {s: 0.5 * rng.standard_normal(dim) for s in manifest["specimen_id"].unique().sort().to_list()}
    y_of = {r["specimen_id"]: bool(r[task]) if task else r["specimen_id"][-1] in "13579" for r in manifest.iter_rows(named=True)}
    for row in manifest.iter_rows(named=True):
        low = row["magnification"] != f"{EXAMPLE_MAGNIFICATION}x"
        shift = (class_dir * (1.0 if y_of[row["specimen_id"]] else -1.0) + specimen_dir[row["specimen_id"]]
                 + scanner_dir["low" if low else row["scanner"]])
        feats = (rng.standard_normal((n_patches, dim)) + shift).astype(np.float32)
        grid = np.arange(n_patches)
        with h5py.File(features / f"{row['slide_id']}.h5", "w") as f:
            f["features"] = feats
            f["coords"] = np.stack([(grid % 4) * 256, (grid // 4) * 256], axis=1).astype(np.int64)
            f["tissue_class"] = (grid % 3).astype(np.int64)
    path = folder / "manifest.csv"
    manifest.write_csv(path)
    return features, path
