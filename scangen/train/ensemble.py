"""Ensembles: configs that may train together as one batched model, and `run_ensemble`.

`ensemble_group_key(config)` names what must be shared for runs to train as one model with a
leading member dimension: the data (store, FM, harmonisation and, when harmonising, the split it
is fitted on), the architecture (head, its arguments, hidden size, dropout), the step budget and
evaluation schedule, the batch shapes of both flows, the device and precision. Everything else
(seed, split, ScanGen on/off, loss weights, scanner subset, selection rule, patience, learning
rate) may differ between members.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from scangen.store.bags import Bags
from scangen.train.config import TrainConfig
from scangen.train.experiment import RunRecord, run_record

GROUP_FIELDS = (
    "store", "fm", "head", "head_kwargs", "hidden_dim", "dropout", "harmonize", "max_steps", "eval_every",
    "task_batch_size", "max_patches_train", "scangen_level", "scangen_patches", "device", "amp",
    "eval_patch_budget", "num_threads", "predict_task", "trace_test",
)
"""TrainConfig fields members of one ensemble share."""


def ensemble_group_key(config: TrainConfig) -> tuple:
    """Hashable key; configs with equal keys may train together in one `run_ensemble` call."""
    data = config.to_dict()
    key = [(name, json.dumps(data[name], sort_keys=True, default=str)) for name in GROUP_FIELDS]
    if config.harmonize != "none":  # the harmonised features depend on the split they are fitted on
        key.append(("split", json.dumps([config.split_seed, list(config.split_fractions)])))
    return tuple(key)


def run_ensemble(configs: Sequence[TrainConfig], bags: Bags) -> list[RunRecord]:
    """Train `configs` (all with one `ensemble_group_key`) on `bags`; one RunRecord per config, in order.

    Each record equals `run_record(config, bags)`.
    """
    configs = list(configs)
    if not configs:
        return []
    keys = {ensemble_group_key(c) for c in configs}
    if len(keys) > 1:
        raise ValueError("configs: expected one ensemble_group_key for all members; group them first "
                         "(scangen.train.ensemble.ensemble_group_key)")
    return [run_record(config, bags) for config in configs]
