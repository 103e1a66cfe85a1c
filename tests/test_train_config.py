"""TrainConfig: validation, plain-dict round trip, stable hash; device resolution."""

from __future__ import annotations

import json

import pytest
import torch

from scangen.train.config import TrainConfig, config_hash
from scangen.train.device import amp_dtype, resolve_device


def test_hash_is_stable_and_ignores_output_fields() -> None:
    a = TrainConfig(fm="uni-sim", lam=1.0)
    assert config_hash(a) == config_hash(TrainConfig(fm="uni-sim", lam=1.0))
    assert config_hash(a) == config_hash(a.replace(progress=False, output="/tmp/x.parquet", checkpoint="c.pt"))
    assert config_hash(a) != config_hash(a.replace(lam=2.0))
    assert config_hash(a) != config_hash(a.replace(scanner_subset=("AT2", "GT450")))
    assert len(config_hash(a)) == 12 and hash(a) == hash(TrainConfig(fm="uni-sim", lam=1.0))


def test_round_trip_through_plain_types() -> None:
    cfg = TrainConfig(head="abmil", head_kwargs={"attention_dim": 64}, scanner_subset=["AT2", "B300"], use_scangen=True)
    data = cfg.to_dict()
    json.dumps(data)  # plain types only
    assert data["scanner_subset"] == ["AT2", "B300"]
    back = TrainConfig.from_dict(data)
    assert back == cfg and back.scanner_subset == ("AT2", "B300")
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({**data, "bogus": 1})


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"head": "transformer"}, "head"),
        ({"alpha": 1.5}, "alpha"),
        ({"margin": 0.0}, "margin"),
        ({"scanner_subset": ("AT2", "AT2")}, "scanner_subset"),
        ({"scanner_subset": "AT2"}, "scanner_subset"),
        ({"scangen_distance": "euclid"}, "scangen_distance"),
        ({"harmonize": "magic"}, "harmonize"),
        ({"adversary_weight": -1.0}, "adversary_weight"),
        ({"select_min_step": -1}, "select_min_step"),
        ({"select_min_step": 500, "max_steps": 400}, "select_min_step"),
        ({"scanner_subset": ("AT2",), "use_scangen": True}, "scanner_subset"),
        ({"scangen_level": "tile"}, "scangen_level"),
        ({"scangen_k": 1}, "scangen_k"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_invalid_fields_are_named(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**changes)


def test_cpu_bf16_is_opt_in_and_auto_is_resolved_where_configs_are_made() -> None:
    from scangen.experiments.session import train_settings
    from scangen.train.device import cpu_has_native_bf16, resolve_amp_cpu

    cpu = torch.device("cpu")
    assert amp_dtype(cpu, True) is None and amp_dtype(cpu, True, cpu=True) == torch.bfloat16
    assert amp_dtype(cpu, False, cpu=True) == torch.bfloat16  # `amp` is the CUDA switch
    assert amp_dtype(torch.device("mps"), True, cpu=True) is None
    assert resolve_amp_cpu(True) is True and resolve_amp_cpu(False) is False
    assert resolve_amp_cpu("auto") is cpu_has_native_bf16()
    assert train_settings(4, "cpu", {"amp_cpu": "auto"})["amp_cpu"] is cpu_has_native_bf16()
    with pytest.raises(ValueError, match="amp_cpu"):
        resolve_amp_cpu("yes")
    with pytest.raises(ValueError, match="TrainConfig.amp_cpu"):
        TrainConfig(amp_cpu="auto")


def test_device_resolution_and_amp_only_on_cuda() -> None:
    dev = resolve_device("auto")
    assert dev.type in {"cuda", "mps", "cpu"}
    assert resolve_device("cpu") == torch.device("cpu")
    assert amp_dtype(torch.device("cpu"), True) is None
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("not-a-device")


def test_new_fields_are_hashed_and_scanner_subset_defaults_to_the_stores_primary_scanners() -> None:
    import polars as pl

    from scangen.train.config import resolve_scanner_subset

    base = TrainConfig()
    assert base.scanner_subset is None
    for change in ({"select_min_step": 50}, {"scangen_distance": "cosine_norm"}, {"scangen_pair_norm": True},
                   {"harmonize": "combat"}, {"adversary_weight": 0.5}, {"amp_cpu": True},
                   {"scanner_subset": ("AT2", "GT450")}):
        assert config_hash(base) != config_hash(base.replace(**change)), change
    assert config_hash(base) == config_hash(base.replace(trace_test=True))  # display only: same run
    slides = pl.DataFrame({"cohort": ["multiscanner"] * 4 + ["task"], "scanner": ["X1", "X2", "X1", "X3", "T"],
                           "magnification": [40, 40, 20, 20, 40]})
    assert resolve_scanner_subset(base, slides) == ("X1", "X2")
    assert resolve_scanner_subset(base.replace(scanner_subset=["X2", "X1"]), slides) == ("X2", "X1")
    with pytest.raises(ValueError, match="TrainConfig.scanner_subset"):
        resolve_scanner_subset(base.replace(scanner_subset=("X1", "X3")), slides)
    assert TrainConfig.from_dict(base.to_dict()) == base



def test_precision_text_names_what_trains_in_bf16() -> None:
    from scangen.train.device import precision_text

    assert precision_text("cpu", True, False).startswith("training in float32")  # `amp` is the CUDA switch
    assert "bfloat16 autocast" in precision_text("cpu", False, True)
    assert "bfloat16 or float16" in precision_text("cuda", True, False)
    assert precision_text("mps", True, True).startswith("training in float32")
    assert all(t.endswith("evaluation and predictions in float32")
               for t in (precision_text("cpu", True, True), precision_text("cuda", False, False)))
