#!/usr/bin/env bash
# The README's main command: install everything, run the whole compendium on the simulated default
# (papermill, parameter set "quick" unless SCANGEN_PARAMS says otherwise), then render the paper.
set -euo pipefail
cd "$(dirname "$0")/.."
PARAMS=${SCANGEN_PARAMS:-quick}
bash scripts/setup.sh
.venv/bin/python -m scangen.pipeline run --params "$PARAMS"
if command -v quarto >/dev/null 2>&1; then
  # The pre-render step re-runs the same cached pipeline: nothing is recomputed here.
  PATH="$PWD/.venv/bin:$PATH" SCANGEN_PARAMS="$PARAMS" quarto render
  echo "Paper written to _manuscript/ (HTML and PDF)."
else
  cat <<'MSG'
Quarto is not on PATH, so the paper was not rendered. The executed notebooks are in build/notebooks/
and the results in results/. To render the paper, install Quarto (>= 1.5) either with conda
(`conda env create -f environment.yml`, which includes quarto from conda-forge) or from
https://quarto.org/docs/get-started/, then run `quarto render` in this folder.
MSG
fi
