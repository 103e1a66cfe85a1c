#!/usr/bin/env bash
# Create .venv (once) and install scangen with everything it needs.
# Where no NVIDIA GPU is visible, torch is pinned to the CPU build first (on these machines
# `torch==2.13.0` is a local CPU wheel), so the `torch>=2.3` range in pyproject.toml is already met
# and pip never pulls a multi-GB CUDA build. With a GPU, pip's usual (CUDA) torch is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$VPY" -m pip install -q "torch>=2.3"
  else
    "$VPY" -m pip install -q "torch==2.13.0"
  fi
fi
if [ -n "$extra" ]; then
  "$VPY" -m pip install -q -e ".[$extra]"
else
  "$VPY" -m pip install -q -e .
fi
# A Jupyter kernel that sees scangen, for JupyterLab and papermill.
"$VPY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (scangen)" >/dev/null
