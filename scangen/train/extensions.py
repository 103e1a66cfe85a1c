"""Beyond-the-paper options that call the harmonisation package: feature harmonisation and DANN.

`scangen.harmonise` is imported lazily, only when a config asks for it (`harmonize` != "none" or
`adversary_weight` > 0), so the trainer works without that package; asking for it when it is
missing is a clear ImportError naming the config field.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import polars as pl
from torch import nn

from scangen.splits import TASK_SPLIT
from scangen.store.bags import Bags

FIT_SPLITS = (TASK_SPLIT, "scangen_train")
"""Splits a harmonisation is fitted on: the training slides of both flows (never val or test)."""


def _harmonise_module(name: str, field: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"TrainConfig.{field}: needs the package {name!r} (scangen/harmonise), which could not be "
            f"imported ({err}); use the default value or install/merge the harmonisation package"
        ) from err


def fit_positions(slides: pl.DataFrame) -> np.ndarray:
    """Bag positions (int64) of the training slides (FIT_SPLITS) of a table with a `split` column."""
    rows = slides.with_row_index("_pos").filter(pl.col("split").is_in(list(FIT_SPLITS)))
    return rows["_pos"].to_numpy().astype(np.int64)


def harmonised_bags(bags: Bags, slides: pl.DataFrame, method: str) -> Bags:
    """`bags` with features harmonised by `method`, fitted on the training slides of `slides`.

    `slides` is `bags.slides` with the run's `split` column (row i <-> bag i). "none" returns `bags`.
    """
    if method == "none":
        return bags
    module = _harmonise_module("scangen.harmonise", "harmonize")
    return module.harmonise_bags(bags, fit_positions(slides), method)


def make_adversary(in_dim: int, n_scanners: int) -> nn.Module:
    """The DANN scanner adversary (classifier behind gradient reversal) for items of size `in_dim`."""
    module = _harmonise_module("scangen.harmonise.dann", "adversary_weight")
    return module.ScannerAdversary(in_dim, n_scanners)
