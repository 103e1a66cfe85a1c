"""pyproject.toml and environment.yml declare the same dependency set (conda names mapped to pip)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "quarto"}


def _name_and_spec(req: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert match, f"unparseable requirement {req!r}"
    return match.group(1).lower(), match.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    return dict(_name_and_spec(r) for r in reqs)


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    out: dict[str, str] = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            if item.startswith("-e"):
                continue
            name, spec = _name_and_spec(item)
            if name.split("=")[0] in CONDA_ONLY or name in CONDA_ONLY:
                continue
            out[CONDA_TO_PIP.get(name, name)] = spec
    return out


def test_environment_yml_matches_pyproject() -> None:
    assert _conda_requirements() == _pyproject_requirements()


def test_environment_yml_has_quarto_and_pytorch_from_conda_forge() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = {_name_and_spec(d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert {"quarto", "pytorch", "python"} <= names


def test_torch_requirement_is_a_range_met_by_the_local_cpu_build() -> None:
    """A pinned newer torch would make pip fetch a multi-GB CUDA build on CPU machines."""
    spec = _pyproject_requirements()["torch"]
    assert spec.startswith(">="), spec
    assert tuple(int(p) for p in spec[2:].split(".")) <= (2, 13)
