"""The per-notebook cache: content hashes, the manifest, and the decision to re-execute.

A notebook is re-executed only when one of these changed since its last successful run:
its source cells, its injected parameters, the `scangen` package source (every file except the
pipeline itself, which does not shape results), the outputs of the notebooks before it, or the
contents of the data its path parameters name (a store, an import folder; not caches). It is also re-executed when its
executed copy or one of the result files it wrote is missing or was modified.
The manifest, `results/<set>/manifest.json`, records all of this and is replaced atomically.
"""

from __future__ import annotations


import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scangen
from scangen.atomic import atomic_write_text
from scangen.pipeline.params import is_path_parameter, resolve_parameter_path

PIPELINE_DIR = Path(__file__).resolve().parent
_DIGESTS: dict[tuple[str, int, int], str] = {}
MISSING = "missing"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (memoised per path, size and modification time)."""
    stat = path.stat()
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo_key] = digest.hexdigest()
    return _DIGESTS[memo_key]


def json_sha256(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value in canonical form (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def notebook_source_sha256(path: Path) -> str:
    """Hash of what a source notebook does: cell types, sources and tags (not outputs or ids)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = []
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        cells.append([cell.get("cell_type"), "".join(source) if isinstance(source, list) else source,
                      sorted(cell.get("metadata", {}).get("tags", []))])
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    return json_sha256({"cells": cells, "kernel": kernel})


def tree_digests(root: Path, *, exclude: tuple[Path, ...] = (), suffixes: tuple[str, ...] | None = None
                 ) -> dict[str, str]:
    """`{relative path: sha256}` of the files below `root` (none if it does not exist)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        if any(path == ex or ex in path.parents for ex in exclude):
            continue
        if suffixes is not None and path.suffix not in suffixes:
            continue
        out[path.relative_to(root).as_posix()] = file_sha256(path)
    return out


def package_sha256() -> str:
    """Hash of the `scangen` package source, leaving out `scangen/pipeline/` (the runner itself)."""
    pkg = Path(scangen.__file__).resolve().parent
    return json_sha256(tree_digests(pkg, exclude=(PIPELINE_DIR,), suffixes=(".py", ".json", ".yml", ".yaml")))


NOT_INPUTS = ("results_dir", "cache_dir")
"""Path parameters that are not inputs: the notebook's own results, and run caches (which only
memoise training that the cache key already determines)."""


def data_digest(parameters: dict[str, Any], root: Path) -> dict[str, str]:
    """Content hash of every file or folder a path parameter names (see `params.is_path_parameter`);
    relative values are read below `root`. Keys are the parameter names, never the paths."""
    out: dict[str, str] = {}
    for key, value in sorted(parameters.items()):
        if key in NOT_INPUTS or not is_path_parameter(key) or not isinstance(value, str) or not value:
            continue
        target = resolve_parameter_path(value, root)
        if target.is_dir():
            out[key] = json_sha256(tree_digests(target))
        elif target.is_file():
            out[key] = file_sha256(target)
        else:
            out[key] = MISSING
    return out


def snapshot(folder: Path, exclude: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """`{relative path: (size, mtime_ns)}` of the files below `folder`, to see what a run wrote."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    out = {}
    for path in folder.rglob("*"):
        if path.is_file() and not any(path == ex or ex in path.parents for ex in exclude):
            stat = path.stat()
            out[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return out


def written_since(before: dict[str, tuple[int, int]], folder: Path, exclude: tuple[Path, ...] = ()
                  ) -> dict[str, str]:
    """Files below `folder` that are new or rewritten since `before`, with their hashes."""
    after = snapshot(folder, exclude)
    return {rel: file_sha256(Path(folder) / rel) for rel, sig in sorted(after.items()) if before.get(rel) != sig}


@dataclass
class CacheKey:
    """What a notebook's result depends on; two runs with equal keys give the same result."""

    source: str
    parameters: str
    package: str
    upstream: str
    data: dict[str, str] = field(default_factory=dict)

    def differences(self, other: "CacheKey") -> list[str]:
        """Names of the components that differ, in words."""
        words = {"source": "notebook source", "parameters": "parameters", "package": "scangen source",
                 "upstream": "upstream outputs", "data": "data folders"}
        return [words[name] for name in words if getattr(self, name) != getattr(other, name)]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "parameters": self.parameters, "package": self.package,
                "upstream": self.upstream, "data": self.data}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "CacheKey":
        return cls(value["source"], value["parameters"], value["package"], value["upstream"],
                   dict(value.get("data", {})))


class Manifest:
    """`results/<set>/manifest.json`: one entry per notebook that last ran successfully."""

    VERSION = 1

    def __init__(self, path: Path, param_set: str, entries: dict[str, dict[str, Any]] | None = None):
        self.path = Path(path)
        self.param_set = param_set
        self.entries: dict[str, dict[str, Any]] = entries or {}

    @classmethod
    def load(cls, path: Path, param_set: str) -> "Manifest":
        path = Path(path)
        if not path.is_file():
            return cls(path, param_set)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: corrupt pipeline manifest ({exc}); delete it to rebuild") from exc
        if raw.get("version") != cls.VERSION or raw.get("param_set") != param_set:
            return cls(path, param_set)
        return cls(path, param_set, raw.get("notebooks", {}))

    def save(self) -> None:
        body = {"version": self.VERSION, "param_set": self.param_set, "notebooks": self.entries}
        atomic_write_text(self.path, json.dumps(body, indent=2, sort_keys=True) + "\n")

    def outputs_of(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Recorded outputs of the notebooks `names` (`missing` for one never run)."""
        return {n: self.entries[n]["outputs"] if n in self.entries else {MISSING: MISSING} for n in names}


def staleness(entry: dict[str, Any] | None, key: CacheKey, executed: Path, results_dir: Path) -> list[str]:
    """Why a notebook must run again; empty when its cached run is still valid."""
    if entry is None:
        return ["never run with this parameter set"]
    reasons = CacheKey.from_json(entry["key"]).differences(key)
    if not executed.is_file():
        reasons.append(f"executed copy {executed} is missing")
    elif file_sha256(executed) != entry.get("executed_sha256"):
        reasons.append(f"executed copy {executed} was modified")
    for rel, digest in sorted(entry.get("outputs", {}).items()):
        target = Path(results_dir) / rel
        if not target.is_file():
            reasons.append(f"output {rel} is missing")
        elif file_sha256(target) != digest:
            reasons.append(f"output {rel} was modified")
    return reasons
