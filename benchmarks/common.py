"""Helpers the benchmark scripts share: accelerator sync for wall-clock timing, parameter-set settings."""

from __future__ import annotations

import torch
import yaml

from scangen.paths import PARAMS
from scangen.train.device import resolve_amp_cpu


def sync(device: torch.device) -> None:
    """Wait for queued accelerator work so wall-clock timings are complete (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def param_set_training(name: str) -> dict:
    """Training settings of params/<name>.yml: `max_steps` (its `steps`) and its `train` mapping."""
    path = PARAMS / f"{name}.yml"
    params = (yaml.safe_load(path.read_text()) or {}).get("parameters") or {}
    if "steps" not in params:
        raise ValueError(f"{path}: parameters.steps: expected the number of training steps")
    train = dict(params.get("train") or {})
    if "amp_cpu" in train:  # "auto" -> this CPU's native bf16 support, as the notebooks resolve it
        train["amp_cpu"] = resolve_amp_cpu(train["amp_cpu"])
    return {"max_steps": int(params["steps"]), **train}
