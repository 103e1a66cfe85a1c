"""Parameter sets (`params/<set>.yml`): loading, validation against the notebooks, resolution.

A set file holds three top-level keys::

    description: one line saying what the set is for
    parameters:            # shared; injected into every notebook whose parameters cell declares the name
      size: quick
      seed: 0
    notebooks:             # the notebooks to run, in this order, each with its own overrides
      01_data: {}
      04_table1: {epochs: 30}

Every notebook starts with a cell tagged `parameters` holding literal assignments; those names are
the notebook's parameters. A shared parameter no notebook declares, or an override the notebook does
not declare, is an error naming the file and the key (a typo never silently does nothing).
The runner supplies `param_set` and `results_dir` itself. Parameters named `*_dir`, `*_from`,
`*_path` or `manifest` are paths. They are injected relative to the layout root (the kernels'
working directory): a path inside the root is written relative to it, so executed notebooks,
result files and cache keys carry no machine paths and a moved checkout reuses its cache; only a
path outside the root (e.g. your own data elsewhere) stays absolute.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scangen.pipeline.layout import Layout

TOP_LEVEL_KEYS = ("description", "parameters", "notebooks")
RUNNER_PARAMETERS = ("param_set", "results_dir")
"""Parameters the runner sets from the set name and layout; a set file may not set them."""


class ParamSetError(ValueError):
    """A parameter set or a notebook's parameters cell is malformed; the message names file and key."""


@dataclass(frozen=True)
class NotebookSpec:
    """One notebook of a set: its source and the parameters the set gives it (before runner ones)."""

    name: str
    path: Path
    declared: tuple[str, ...]
    overrides: dict[str, Any]


@dataclass(frozen=True)
class ParamSet:
    """A validated parameter set: shared parameters and the ordered notebooks."""

    name: str
    path: Path
    description: str
    shared: dict[str, Any]
    notebooks: tuple[NotebookSpec, ...]

    def names(self) -> list[str]:
        return [nb.name for nb in self.notebooks]

    def parameters_for(self, name: str, layout: Layout) -> dict[str, Any]:
        """Everything injected into notebook `name`: runner values, shared values it declares, overrides."""
        spec = self.notebook(name)
        values: dict[str, Any] = {k: v for k, v in self.shared.items() if k in spec.declared}
        values.update(spec.overrides)
        runner = {"param_set": self.name, "results_dir": str(layout.results_dir(self.name))}
        values.update({k: v for k, v in runner.items() if k in spec.declared})
        return {k: root_relative(k, v, layout.root) for k, v in sorted(values.items())}

    def notebook(self, name: str) -> NotebookSpec:
        for spec in self.notebooks:
            if spec.name == name:
                return spec
        raise KeyError(f"parameter set {self.name!r} has no notebook {name!r} (has {self.names()})")

    def select(self, only: list[str] | None) -> list[str]:
        """Notebook names matching `only` (full names or their `NN` prefixes), in set order."""
        if not only:
            return self.names()
        chosen: list[str] = []
        for token in only:
            hits = [n for n in self.names() if n == token or n.split("_", 1)[0] == token]
            if not hits:
                raise ParamSetError(f"{self.path}: --only {token!r} matches no notebook of the set "
                                    f"(notebooks: {', '.join(self.names())})")
            chosen.extend(h for h in hits if h not in chosen)
        return [n for n in self.names() if n in chosen]


def is_path_parameter(key: str) -> bool:
    """Whether a parameter names a file or folder (by the naming convention above)."""
    return key.endswith(("_dir", "_from", "_path")) or key == "manifest"


def root_relative(key: str, value: Any, root: Path) -> Any:
    """A path parameter's value as a POSIX path relative to `root` when it lies inside it (else
    absolute); any other parameter unchanged."""
    if not (is_path_parameter(key) and isinstance(value, str) and value):
        return value
    root = Path(root).resolve()
    target = Path(value) if Path(value).is_absolute() else root / value
    target = Path(os.path.normpath(target))
    try:
        return target.relative_to(root).as_posix()
    except ValueError:
        return str(target)


def resolve_parameter_path(value: str, root: Path) -> Path:
    """The file or folder a (possibly root-relative) path parameter names."""
    return Path(value) if Path(value).is_absolute() else Path(root) / value


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Names and default values assigned in the cell tagged `parameters` of notebook `path`."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ParamSetError(f"{path}: cannot read notebook ({exc})") from exc
    cells = [c for c in nb.get("cells", [])
             if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParamSetError(f"{path}: expected exactly one code cell tagged 'parameters', found {len(cells)}")
    source = cells[0]["source"]
    source = "".join(source) if isinstance(source, list) else source
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParamSetError(f"{path}: parameters cell is not valid Python ({exc})") from exc
    found: dict[str, Any] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(value) if value is not None else None
                except ValueError:
                    raise ParamSetError(f"{path}: parameter {target.id!r} must be a literal "
                                        f"(papermill replaces it), got {ast.unparse(value)!r}") from None
    if not found:
        raise ParamSetError(f"{path}: the parameters cell assigns no names")
    return found


def available_notebooks(notebooks_dir: Path) -> dict[str, Path]:
    """Source notebooks `NN_name.ipynb` in `notebooks_dir`, by stem, sorted."""
    return {p.stem: p for p in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))}


def set_file(name_or_path: str | Path, layout: Layout) -> Path:
    """The file of a set given by name (`quick`) or by path (`params/quick.yml`)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yml", ".yaml"):
        path = candidate
    else:
        path = layout.params / f"{name_or_path}.yml"
    if not path.is_file():
        known = sorted(p.stem for p in layout.params.glob("*.yml"))
        raise ParamSetError(f"no parameter set file {path} (known sets: {', '.join(known) or 'none'})")
    return path


def load_param_set(name_or_path: str | Path, layout: Layout | None = None) -> ParamSet:
    """Read and validate a set against the notebooks in `layout.notebooks`."""
    layout = layout or Layout.default()
    path = set_file(name_or_path, layout)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamSetError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ParamSetError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ParamSetError(f"{path}: unknown top-level key {key!r} "
                                f"(expected {', '.join(TOP_LEVEL_KEYS)})")
    shared = _mapping(raw.get("parameters"), path, "parameters")
    listed = _mapping(raw.get("notebooks"), path, "notebooks")
    if not listed:
        raise ParamSetError(f"{path}: 'notebooks' must list at least one notebook")
    available = available_notebooks(layout.notebooks)
    specs: list[NotebookSpec] = []
    for name, overrides in listed.items():
        if name not in available:
            raise ParamSetError(f"{path}: notebooks.{name}: no notebook {layout.notebooks / (str(name) + '.ipynb')}"
                                f" (available: {', '.join(available) or 'none'})")
        overrides = _mapping(overrides, path, f"notebooks.{name}")
        declared = notebook_parameters(available[name])
        for key in overrides:
            _check_key(path, f"notebooks.{name}.{key}", key)
            if key not in declared:
                raise ParamSetError(f"{path}: notebooks.{name}.{key} is not a parameter of "
                                    f"{available[name]} (its parameters: {', '.join(declared)})")
        specs.append(NotebookSpec(name, available[name], tuple(declared), overrides))
    all_declared = {k for spec in specs for k in spec.declared}
    for key in shared:
        _check_key(path, f"parameters.{key}", key)
        if key not in all_declared:
            raise ParamSetError(f"{path}: parameters.{key} is not a parameter of any listed notebook "
                                f"(known: {', '.join(sorted(all_declared))})")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ParamSetError(f"{path}: description must be a string")
    return ParamSet(path.stem, path, description.strip(), shared, tuple(specs))


def _check_key(path: Path, where: str, key: str) -> None:
    if key in RUNNER_PARAMETERS:
        raise ParamSetError(f"{path}: {where} is set by the runner and may not appear in a set file")


def _mapping(value: Any, path: Path, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ParamSetError(f"{path}: {where} must be a mapping of names to values, got {type(value).__name__}")
    return dict(value)
