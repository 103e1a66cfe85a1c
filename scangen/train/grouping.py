"""Which configs may train together as one batched ensemble (`ensemble_group_key`).

Members of one ensemble share: the data (store, FM, harmonisation and, when harmonising, the split
it is fitted on), the architecture (head, its arguments, hidden size, dropout), the optimiser's
settings (lr, weight decay: one fused AdamW step updates every member), the step budget and
evaluation schedule, the task batch shape, the device, precision and thread count. Everything else
may differ per member: seed, split, ScanGen on/off and level, loss weights and distance, scanner
subset, adversary weight, selection rule, select_min_step, patience, test tracing.
"""

from __future__ import annotations

import json

from scangen.train.config import TrainConfig

GROUP_FIELDS = (
    "store", "fm", "head", "head_kwargs", "hidden_dim", "dropout", "harmonize", "lr", "weight_decay",
    "max_steps", "eval_every", "task_batch_size", "max_patches_train", "device", "amp", "amp_cpu", "eval_patch_budget",
    "num_threads", "predict_task",
)
"""TrainConfig fields the members of one ensemble share."""


def ensemble_group_key(config: TrainConfig) -> tuple:
    """Hashable key; configs with equal keys may train together in one `run_ensemble` call."""
    data = config.to_dict()
    key = [(name, json.dumps(data[name], sort_keys=True, default=str)) for name in GROUP_FIELDS]
    if config.harmonize != "none":  # the harmonised features depend on the split they are fitted on
        key.append(("split", json.dumps([config.split_seed, list(config.split_fractions)])))
    return tuple(key)
