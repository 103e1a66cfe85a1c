"""`run_ensemble`: configs of one `ensemble_group_key` trained together as one batched model.

See `scangen.train.engine` for how members are batched and kept independent, and
`scangen.train.grouping` for what members must share.
"""

from __future__ import annotations

from collections.abc import Sequence

from scangen.store.bags import Bags
from scangen.train.config import TrainConfig
from scangen.train.device import cpu_threads
from scangen.train.experiment import RunRecord, record_from_result
from scangen.train.grouping import GROUP_FIELDS, ensemble_group_key
from scangen.train.trainer import train_group

__all__ = ["GROUP_FIELDS", "ensemble_group_key", "run_ensemble"]


def run_ensemble(configs: Sequence[TrainConfig], bags: Bags) -> list[RunRecord]:
    """Train `configs` (all with one `ensemble_group_key`) on `bags`; one RunRecord per config, in order.

    A member's predictions equal `run_record(config, bags)` within float rounding (the tests use
    an absolute logit tolerance of 1e-4); `run_record` is the one-member case of the same trainer.
    """
    configs = list(configs)
    if not configs:
        return []
    keys = {ensemble_group_key(c) for c in configs}
    if len(keys) > 1:
        raise ValueError("configs: expected one ensemble_group_key for all members; group them first "
                         "(scangen.train.ensemble.ensemble_group_key)")
    with cpu_threads(configs[0].num_threads):
        results = train_group(configs, bags)
    return [record_from_result(result) for result in results]
