"""The embedding store: Parquet tables of slides and patch embeddings, validated at the boundary.

Public API (see DESIGN.md and data/README.md):
    write_slides, write_embeddings, write_registered, write_meta, write_store   -- atomic writers
    read_slides, read_meta, list_models, load_bags, load_registered            -- validated readers
    Bags, RegisteredBags                                                        -- flat bags in memory
    StoreValidationError                                                        -- every schema error
    store_vocabulary, slides_vocabulary, read_task_column, Vocabulary           -- what a store holds
Importers of real TRIDENT/CLAM/plismbench feature folders live in scangen.store.importers
(command line: `python -m scangen.store import ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import polars as pl

from .bags import Bags, RegisteredBags
from .reader import list_models, load_bags, load_registered, read_meta, read_slides
from .schema import StoreValidationError
from .validate import validate_slides
from .vocabulary import Vocabulary, read_task_column, slides_vocabulary, store_vocabulary, task_of_meta
from .writer import write_embeddings, write_meta, write_registered, write_slides


def write_store(store: Path, slides: pl.DataFrame, bags: Mapping[str, Bags], meta: Mapping) -> Path:
    """Write a whole store: meta.json, slides, then one embedding table per model in `bags`.

    meta["models"] is completed with each model's D from `bags` and meta["vocabulary"] with the
    slides' vocabulary; meta["task"] ({"label_column": name} or None) names the label column (absent:
    `egfr`). Returns the store folder.
    """
    store = Path(store)
    models = dict(meta.get("models", {}))
    for fm, b in bags.items():
        models[fm] = b.dim
    task = task_of_meta(meta)
    canonical = validate_slides(slides, f"slides table for {store}", has_task=task is not None)
    full_meta = {**meta, "models": models, "vocabulary": slides_vocabulary(canonical, task).to_json()}
    write_meta(store, full_meta)  # first: write_embeddings checks each model's D against meta.json
    write_slides(store, slides)
    for fm, b in bags.items():
        write_embeddings(store, fm, b.slide_ids, b.offsets, b.features, b.coords, b.tissue_class)
    return store


__all__ = [
    "Bags",
    "RegisteredBags",
    "StoreValidationError",
    "Vocabulary",
    "read_task_column",
    "slides_vocabulary",
    "store_vocabulary",
    "list_models",
    "load_bags",
    "load_registered",
    "read_meta",
    "read_slides",
    "write_embeddings",
    "write_meta",
    "write_registered",
    "write_slides",
    "write_store",
]
