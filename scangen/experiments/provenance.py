"""Provenance of a simulated store: which generator (code, FM parameters, size, seed, models) made it.

The simulator's `meta.json["generator"]` records its config and seed but no fingerprint of its own
code, so a store simulated by older code would look current. `generator_description` adds one: a
SHA-256 over every source and parameter file of `scangen.simulate` (including `fm_params.json`).
It is kept in a sidecar file next to the store (`<store>.generator.json`), written after each
simulation, and `prepare_store` compares it with the current description to decide whether to
simulate again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from scangen.atomic import atomic_write_text

SIMULATE_SOURCE = Path(__file__).resolve().parents[1] / "simulate"


def simulator_fingerprint(source: Path = SIMULATE_SOURCE) -> str:
    """SHA-256 (hex) of the names and bytes of every .py and .json file under the simulator package."""
    files = sorted(p for p in Path(source).rglob("*") if p.suffix in {".py", ".json"} and p.is_file())
    if not files:
        raise FileNotFoundError(f"simulator source {source}: no .py/.json files to fingerprint")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(source).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def generator_description(size: str, seed: int, models: list[str] | None) -> dict[str, Any]:
    """What a simulated store made now with these arguments would be made by (JSON-able)."""
    from scangen.simulate import SimConfig

    return {"size": size, "seed": int(seed), "models": sorted(models) if models else None,
            "config": SimConfig.from_size(size).to_dict(), "fingerprint": simulator_fingerprint()}


def sidecar_path(store: Path) -> Path:
    """`<store>.generator.json`, beside the store folder (not inside: the simulator owns that)."""
    store = Path(store)
    return store.parent / f"{store.name}.generator.json"


def read_description(store: Path) -> dict[str, Any] | None:
    """The recorded generator description of `store`, or None when none (or an unreadable one) exists."""
    path = sidecar_path(store)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_description(store: Path, description: dict[str, Any]) -> Path:
    """Record `description` as the generator of `store` (atomically, through scangen.atomic)."""
    return atomic_write_text(sidecar_path(store), json.dumps(description, indent=1, sort_keys=True))
