"""Fingerprint of the code that produces a training run: the import closure of the training entry points.

A hand-kept list of source files goes stale as soon as the trainer imports a new module (it missed
`scangen/scan_labels.py` and `scangen/metrics/scanner_variance.py`), and then a cached run computed
with old code is served as if it were current. Instead the hashed files are derived from the code:
starting at `ENTRY_MODULES`, every `import` / `from ... import` statement naming a `scangen` module is
followed (statically, with `ast`, including imports inside functions, so lazily imported modules count
too; a string literal spelling a package module, as in `importlib.import_module("scangen.harmonise")`,
counts as an import), and each imported module's parent packages (`__init__.py`, executed on import)
are added. Static analysis over-approximates (an import inside a branch that never
runs still counts), which can only cause an unneeded retrain, never a stale hit.
tests/test_experiments_cache_fingerprint.py runs real training in a fresh interpreter and checks that
every `scangen` module it imported is in the closure.

The versions of torch and numpy are hashed too: a new release may change the numbers of the same code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import platform
import re
from collections import deque
from pathlib import Path
from typing import Iterable

import scangen

PACKAGE = "scangen"
PACKAGE_DIR = Path(scangen.__file__).resolve().parent
ENTRY_MODULES: tuple[str, ...] = (
    "scangen.train.experiment",   # run_record / run_experiment: one run
    "scangen.train.ensemble",     # run_ensemble: a group of runs trained together
    "scangen.experiments.grid",   # train_group: what a local or Dask worker executes
)
"""Modules whose execution produces a run's predictions, history and diagnostics."""


def module_file(name: str, package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> Path | None:
    """Source file of module `name` inside the package (its __init__.py for a subpackage), or None."""
    parts = name.split(".")
    if parts[0] != package:
        return None
    base = package_dir.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    file = base.with_suffix(".py")
    return file if parts[1:] and file.is_file() else None


def _imported_names(source: str, module: str, is_package: bool, package: str = PACKAGE) -> set[str]:
    """Absolute names of every module (or module attribute) an import statement in `source` names, plus
    every string literal spelling a dotted name in the package (`importlib.import_module("pkg.x")`)."""
    names: set[str] = set()
    dotted = re.compile(rf"^{re.escape(package)}(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and dotted.match(node.value):
            names.add(node.value)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return names


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_closure(entries: Iterable[str] = ENTRY_MODULES, package_dir: Path = PACKAGE_DIR,
                   package: str = PACKAGE) -> dict[str, Path]:
    """{module name: source file} of every package module reachable by imports from `entries`."""
    found: dict[str, Path] = {}
    queue = deque(entries)
    missing = [e for e in entries if module_file(e, package_dir, package) is None]
    if missing:
        raise ValueError(f"entries: modules {missing} have no source file under {package_dir}")
    while queue:
        name = queue.popleft()
        if name in found:
            continue
        file = module_file(name, package_dir, package)
        if file is None:
            continue  # outside the package, or an attribute imported from a module (`from m import f`)
        found[name] = file
        imported = _imported_names(file.read_text(), name, file.name == "__init__.py", package)
        queue.extend(n for n in (*imported, *_parents(name)) if n.split(".")[0] == package)
    return dict(sorted(found.items()))


def code_fingerprint(entries: Iterable[str] = ENTRY_MODULES, package_dir: Path = PACKAGE_DIR,
                     package: str = PACKAGE, with_versions: bool = True) -> str:
    """Digest of the import closure's sources (path + bytes), plus the torch and numpy versions."""
    h = hashlib.blake2b(digest_size=16)
    for file in import_closure(entries, package_dir, package).values():
        h.update(str(file.relative_to(package_dir)).encode())
        h.update(file.read_bytes())
    if with_versions:
        h.update(library_versions().encode())
    return h.hexdigest()


def library_versions() -> str:
    """Python, numpy and torch versions, one string (a new release may change a run's numbers)."""
    import numpy
    import torch

    return f"python={platform.python_version()} numpy={numpy.__version__} torch={torch.__version__}"


@functools.lru_cache(maxsize=1)
def process_code_fingerprint() -> str:
    """`code_fingerprint()` taken once per process: the code this process runs, even if the files
    change on disk while it runs (a Dask worker reports it with every result; see grid.py)."""
    return code_fingerprint()
