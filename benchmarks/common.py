"""Helpers the benchmark scripts share: accelerator sync for wall-clock timing, parameter-set settings."""

from __future__ import annotations

import torch
import yaml

from scangen.paths import PARAMS


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
    return {"max_steps": int(params["steps"]), **(params.get("train") or {})}
