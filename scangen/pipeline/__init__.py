"""The compendium's build machinery: parameter sets, cached papermill runs, publication for the paper.

`run(set)` executes `notebooks/NN_*.ipynb` in order with the set's parameters, reusing runs whose
inputs did not change; `plan(set)` says which would run; `load_param_set(set)` validates a set file.
Command line: `python -m scangen.pipeline run --params quick` (see `__main__`).
"""

from scangen.pipeline.layout import Layout
from scangen.pipeline.params import ParamSet, ParamSetError, load_param_set
from scangen.pipeline.runner import NotebookFailed, RunReport, active_set, plan, run

__all__ = ["Layout", "NotebookFailed", "ParamSet", "ParamSetError", "RunReport", "active_set",
           "load_param_set", "plan", "run"]
