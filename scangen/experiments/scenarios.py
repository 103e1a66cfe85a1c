"""Declared data-generating scenarios and where each one's store and results live.

`image` is the calibrated simulator (scanner pipelines before the nonlinear FM): its store is the one
notebook 01 prepares and its results go to `results/<set>/`. `feature` (scanner offsets added after the
FM, `scangen.simulate.feature_effects`, calibrated to the same anchors) gets its own simulated store
beside the default one (`<store>-feature`) and its own results folder (`results/<set>/scenario-feature/`).
Both scenarios are reported; a real (imported) store has no scenarios other than itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scangen.experiments import provenance
from scangen.simulate.config import SCANNER_EFFECTS
from scangen.store import read_meta

DEFAULT_SCENARIO = "image"


def check_scenarios(scenarios: list[str] | tuple[str, ...]) -> list[str]:
    """The scenarios, validated: known names, no duplicates, the default one first."""
    out = list(scenarios)
    unknown = [s for s in out if s not in SCANNER_EFFECTS]
    if unknown or len(set(out)) != len(out) or not out:
        raise ValueError(f"scenarios: expected distinct names from {SCANNER_EFFECTS}, got {out}")
    return sorted(out, key=lambda s: s != DEFAULT_SCENARIO)


def scenario_results_dir(results_dir: Path, scenario: str) -> Path:
    """Where a scenario's result files go (created if needed)."""
    out = Path(results_dir) if scenario == DEFAULT_SCENARIO else Path(results_dir) / f"scenario-{scenario}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def scenario_store(store: Path, scenario: str, *, models: list[str] | None = None) -> Path:
    """The store of `scenario` for the default (image) store `store`: `store` itself for "image";
    for "feature", `<store>-feature`, simulated (same size, seed and models as `store`) unless a store
    recorded with the current simulator and settings is already there. A real store has no other
    scenario (ValueError)."""
    store = Path(store)
    if scenario == DEFAULT_SCENARIO:
        return store
    meta = read_meta(store)
    if not meta.get("simulated", False):
        raise ValueError(f"store {store}: scenario {scenario!r} needs a simulated store; real data has one "
                         f"scenario, its own: set the parameter `scenarios: [{DEFAULT_SCENARIO}]` of the notebooks "
                         "that take one (04_table1, and `claim_scenarios` of 06_mil_heads; see docs/bring_your_own_cohort.md)")
    gen = meta["generator"]
    size, seed = gen["config"]["size"], int(gen["seed"])
    models = models or list(meta.get("models", {}))
    target = store.parent / f"{store.name}-{scenario}"
    current = {**provenance.generator_description(size, seed, models), "scanner_effect": scenario}
    if (target / "meta.json").is_file() and _same(provenance.read_description(target), current):
        return target
    if target.exists():
        shutil.rmtree(target)
    from scangen.simulate import SimConfig, simulate_cohort

    simulate_cohort(target, seed=seed, models=models, registered_tiles=False,
                    config=SimConfig.from_size(size, scanner_effect=scenario))
    provenance.write_description(target, current)
    return target


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
