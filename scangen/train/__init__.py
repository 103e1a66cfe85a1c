"""Training: config, two-flow trainer (task + ScanGen batches through one phi), checkpoints,
inference, `run_record` / `run_experiment` (config -> predictions, history, diagnostics) and
`run_ensemble` (configs sharing an `ensemble_group_key` trained together)."""

from scangen.train.batching import BagTensors, collate, inference_batches
from scangen.train.checkpoint import load_checkpoint, save_checkpoint
from scangen.train.config import TrainConfig, config_hash
from scangen.train.device import resolve_device
from scangen.train.ensemble import ensemble_group_key, run_ensemble
from scangen.train.experiment import PREDICTION_COLUMNS, RunRecord, prediction_table, run_experiment, run_record
from scangen.train.predict import predict_logits
from scangen.train.samplers import ScanGenSampler, TaskSampler
from scangen.train.trainer import TrainResult, assign_splits, train

__all__ = [
    "BagTensors",
    "PREDICTION_COLUMNS",
    "RunRecord",
    "ScanGenSampler",
    "TaskSampler",
    "TrainConfig",
    "TrainResult",
    "assign_splits",
    "collate",
    "config_hash",
    "ensemble_group_key",
    "inference_batches",
    "load_checkpoint",
    "predict_logits",
    "prediction_table",
    "resolve_device",
    "run_ensemble",
    "run_experiment",
    "run_record",
    "save_checkpoint",
    "train",
]
