"""Model selection on validation metrics: the selection key and early stopping.

One rule for every arm (baseline, ScanGen, any head): after each evaluation the key of
`selection_key` is compared with the best so far; only evaluations at step >= `select_min_step`
are eligible (earlier ones are recorded in the history but can neither be selected nor count
towards patience); training stops after exactly `patience` eligible evaluations in a row without
improvement. Test metrics are never an input here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scangen.train.config import TrainConfig


def selection_key(config: TrainConfig, record: dict[str, float]) -> tuple[float, float]:
    """Key (higher is better, compared as a tuple) of one evaluation; see TrainConfig.select_metric.

    Reads only the `val_*` entries of `record`.
    """
    auc, loss = record["val_auc"], record["val_loss"]
    if config.select_metric == "loss":
        return (-loss, auc)
    if config.select_metric == "auc_cov":
        return (auc - config.cov_weight * record["val_cov"], -loss)
    if config.select_metric == "auc_pcov":
        return (auc - config.cov_weight * record["val_pcov"], -loss)
    if config.select_metric == "auc_share":
        return (auc - config.cov_weight * record["val_share"], -loss)
    return (auc, -loss)


@dataclass
class EarlyStopping:
    """Tracks the best eligible evaluation and the run of evaluations without improvement.

    `update(step, key)` returns True when this evaluation becomes the selected one; `stop` turns
    True after `patience` consecutive eligible evaluations that did not improve on the best key.
    """

    patience: int
    min_step: int = 0
    best_key: tuple[float, ...] | None = None
    best_step: int = 0
    stale: int = 0
    stop: bool = field(default=False)

    def update(self, step: int, key: tuple[float, ...]) -> bool:
        if self.stop:
            raise RuntimeError("EarlyStopping.update called after the stopping rule fired")
        if step < self.min_step:
            return False
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_step, self.stale = key, step, 0
            return True
        self.stale += 1
        self.stop = self.stale >= self.patience
        return False

    @classmethod
    def for_config(cls, config: TrainConfig) -> "EarlyStopping":
        return cls(patience=config.patience, min_step=config.select_min_step)
