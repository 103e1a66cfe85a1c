"""Training: config, two-flow trainer (task + ScanGen batches through one phi), checkpoints,
inference and `run_experiment` (config -> predictions table)."""

from scangen.train.batching import BagTensors, collate, inference_batches
from scangen.train.checkpoint import load_checkpoint, save_checkpoint
from scangen.train.config import TrainConfig, config_hash
from scangen.train.device import resolve_device
from scangen.train.experiment import PREDICTION_COLUMNS, prediction_table, run_experiment
from scangen.train.predict import predict_logits
from scangen.train.samplers import ScanGenSampler, TaskSampler
from scangen.train.trainer import TrainResult, assign_splits, train

__all__ = [
    "BagTensors",
    "PREDICTION_COLUMNS",
    "ScanGenSampler",
    "TaskSampler",
    "TrainConfig",
    "TrainResult",
    "assign_splits",
    "collate",
    "config_hash",
    "inference_batches",
    "load_checkpoint",
    "predict_logits",
    "prediction_table",
    "resolve_device",
    "run_experiment",
    "save_checkpoint",
    "train",
]
