"""The data step of the compendium: choose, simulate or import the store, and describe the cohort.

`prepare_store` decides where the store comes from, in this order: `import_from` (a TRIDENT, CLAM or
plismbench feature folder plus a manifest, imported into `store_dir`; a rerun with the same folder,
manifest and model reuses the store), an existing `store_dir` (a real or
previously simulated store), or a simulated cohort of `size` and `seed` (written to `store_dir`, or to
the default `scangen.paths.simulated_store(size, seed)`). An existing simulated store is reused only
when its recorded generator (size, seed, models, config and a fingerprint of the simulator's code and
FM parameters; see `provenance`) matches the current one; otherwise it is simulated again. `cohort_tables` summarises a store for the
data notebook; every table carries the store's `simulated` flag.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from scangen import paths
from scangen.experiments import provenance
from scangen.store import list_models, read_meta, read_slides, store_vocabulary
from scangen.task_name import use_store_task


def default_store(size: str, seed: int) -> Path:
    """Where the simulated cohort of `size` and `seed` lives."""
    return paths.simulated_store(size, seed)


def resolve_store(store_dir: str | Path | None, size: str, seed: int) -> Path:
    """The store folder the experiment notebooks read; a clear error if it was never prepared."""
    store = Path(store_dir) if store_dir else default_store(size, seed)
    if not (store / "slides.parquet").is_file() or not (store / "meta.json").is_file():
        raise FileNotFoundError(
            f"store {store}: no slides.parquet/meta.json; run notebooks/01_data.ipynb first "
            f"(or pass store_dir pointing at an existing store)"
        )
    use_store_task(store)  # tables and figures show the store's task name ("MSI AUC", not "EGFR AUC")
    return store


def resolve_results_dir(results_dir: str | Path | None, param_set: str) -> Path:
    """The results folder of the parameter set (created if needed)."""
    out = Path(results_dir) if results_dir else paths.results_dir(param_set)
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The run cache folder (default `data/cache/runs`, shared by every parameter set)."""
    return Path(cache_dir) if cache_dir else paths.DATA / "cache" / "runs"


def prepare_store(store_dir: str | Path | None, size: str, seed: int, *, import_from: str | Path | None = None,
                  manifest: str | Path | None = None, import_fm: str | None = None,
                  import_format: str = "auto", models: list[str] | None = None,
                  import_options: dict[str, Any] | None = None) -> tuple[Path, str]:
    """(store folder, how it was obtained: "imported", "existing" or "simulated"); from now on tables
    and figures show the store's task name.

    import_options: further keyword arguments of `scangen.store.importers.import_features` (task,
    scanner_aliases, patch_label, patch_labels, registered, overwrite, min_specimens_per_scanner).
    """
    store, how = _obtain_store(store_dir, size, seed, import_from=import_from, manifest=manifest,
                               import_fm=import_fm, import_format=import_format, models=models,
                               import_options=import_options)
    use_store_task(store)
    return store, how


def _obtain_store(store_dir: str | Path | None, size: str, seed: int, *, import_from: str | Path | None,
                  manifest: str | Path | None, import_fm: str | None, import_format: str,
                  models: list[str] | None, import_options: dict[str, Any] | None) -> tuple[Path, str]:
    """`prepare_store` without the display setting."""
    if import_from:
        if not manifest or not import_fm:
            raise ValueError("import_from: also give `manifest` (CSV/Parquet of slides) and `import_fm` (model name)")
        if not store_dir:
            raise ValueError("import_from: also give `store_dir`, the folder the imported store is written to")
        from scangen.store.importers import import_features, import_is_current

        options = dict(import_options or {})
        same = {k: options[k] for k in ("task", "scanner_aliases", "default_cohort") if k in options}
        sources = [Path(p) for p in import_from] if isinstance(import_from, (list, tuple)) else Path(import_from)
        manifests = [Path(m) for m in manifest] if isinstance(manifest, (list, tuple)) else Path(manifest)
        if not options.get("overwrite") and import_is_current(sources, manifests, Path(store_dir), import_fm, **same):
            return Path(store_dir), "existing"
        store = import_features(sources, manifests, Path(store_dir), import_fm, fmt=import_format, **options)
        return Path(store), "imported"
    store = Path(store_dir) if store_dir else default_store(size, seed)
    current = provenance.generator_description(size, seed, models)
    if (store / "meta.json").is_file() and (store / "slides.parquet").is_file():
        if not read_meta(store).get("simulated", False):
            return store, "existing"  # a real (imported) store: never regenerated
        if _as_json(provenance.read_description(store)) == _as_json(current):
            return store, "existing"
        shutil.rmtree(store)  # simulated by other code, parameters or an unknown generator
    from scangen.simulate import simulate_cohort

    store = Path(simulate_cohort(store, size=size, seed=seed, models=models))
    provenance.write_description(store, current)
    return store, "simulated"


def _as_json(value: Any) -> Any:
    """`value` after a JSON round trip (tuples become lists), so recorded and current compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))


def cohort_tables(store: Path) -> dict[str, Any]:
    """Summary tables of a store: per cohort, per scanner x magnification, EGFR balance, bag sizes."""
    slides = read_slides(store)
    meta = read_meta(store)
    simulated = bool(meta.get("simulated", False))
    lit = pl.lit(simulated).alias("simulated")
    per_cohort = (
        slides.group_by("cohort").agg(pl.len().alias("n_slides"), pl.col("specimen_id").n_unique().alias("n_specimens"),
                                      pl.col("egfr").mean().alias("egfr_positive_share"))
        .sort("cohort").with_columns(lit)
    )
    per_scan = (
        slides.group_by("cohort", "scanner", "magnification").agg(pl.len().alias("n_slides"))
        .sort("cohort", "scanner", "magnification").with_columns(lit)
    )
    extra = [c for c in ("site",) if c in slides.columns and slides[c].null_count() < slides.height]
    per_site = (
        slides.filter(pl.col("cohort") == "task").group_by(*extra, "scanner")
        .agg(pl.len().alias("n_slides"), pl.col("egfr").mean().alias("egfr_positive_share"))
        .sort(*extra, "scanner").with_columns(lit)
        if extra else None
    )
    models = {fm: int(meta.get("models", {}).get(fm, 0)) for fm in list_models(store)}
    return {"simulated": simulated, "slides": slides, "per_cohort": per_cohort, "per_scan": per_scan,
            "per_site": per_site, "models": models, "meta": meta, "vocabulary": store_vocabulary(store)}


def data_json(tables: dict[str, Any], store: Path, source: str) -> dict[str, Any]:
    """Headline numbers of the cohort for the paper."""
    per = {r["cohort"]: {k: r[k] for k in ("n_slides", "n_specimens", "egfr_positive_share")}
           for r in tables["per_cohort"].iter_rows(named=True)}
    # the store's origin, not how this run obtained it: a rerun that reuses a simulated store writes
    # the same file as the run that simulated it (no needless downstream reruns)
    origin = "simulated" if tables["simulated"] else source
    description = provenance.read_description(store) if tables["simulated"] else None
    return {"store": str(store), "source": origin,
            "generator_fingerprint": description.get("fingerprint") if description else None, "cohorts": per, "models": tables["models"],
            "scanners": sorted(tables["slides"]["scanner"].unique().to_list()),
            "vocabulary": {**tables["vocabulary"].to_json(), "task": tables["vocabulary"].task,
                           "primary_magnification": tables["vocabulary"].primary_magnification},
            "n_slides": tables["slides"].height}
