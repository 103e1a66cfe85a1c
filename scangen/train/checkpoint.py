"""Checkpoints of plain types only, so `torch.load(path, weights_only=True)` can read them.

Layout: {"format": 1, "config": TrainConfig.to_dict(), "in_dim": D, "state_dict": {name: tensor},
"info": {str: int | float | str}}. The model is rebuilt from the config and D.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scangen.models import MILModel, build_model
from scangen.atomic import atomic_write_with
from scangen.train.config import TrainConfig, config_hash

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: MILModel, config: TrainConfig, info: dict[str, Any] | None = None) -> Path:
    """Write model weights (on CPU) with the config atomically; returns the path."""
    payload = {
        "format": FORMAT_VERSION,
        "config": config.to_dict(),
        "config_hash": config_hash(config),
        "in_dim": int(model.in_dim),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": dict(info or {}),
    }
    return atomic_write_with(Path(path), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MILModel, TrainConfig]:
    """(model in eval mode, config) from a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    missing = {"format", "config", "in_dim", "state_dict"} - set(payload)
    if missing:
        raise ValueError(f"checkpoint {path}: missing keys {sorted(missing)}")
    if payload["format"] != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path}: format {payload['format']}, expected {FORMAT_VERSION}")
    config = TrainConfig.from_dict(payload["config"])
    model = build_model(
        payload["in_dim"], config.head, config.hidden_dim, phi_dropout=config.dropout, **config.head_kwargs
    )
    model.load_state_dict(payload["state_dict"])
    model.to(map_location)
    model.eval()
    return model, config
