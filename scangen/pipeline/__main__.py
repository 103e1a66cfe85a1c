"""Command line: `python -m scangen.pipeline run|status`.

    python -m scangen.pipeline run --params quick [--only 03] [--force]
    python -m scangen.pipeline status [--params quick]
    python -m scangen.pipeline strip            # clear outputs of the source notebooks before committing

Without `--params` the set comes from `$SCANGEN_PARAMS` (default `quick`); this is how Quarto's
pre-render step picks it. `--root` moves build/ and results/ (and the kernels' `SCANGEN_ROOT`) to
another folder while notebooks and parameter sets are read from the repository.
"""

from __future__ import annotations

import argparse
import sys

from scangen.pipeline.layout import Layout, param_set_from_env
from scangen.pipeline.params import ParamSetError
from scangen.pipeline.runner import DEFAULT_KERNEL, NotebookFailed, active_set, plan, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scangen.pipeline",
                                     description="Run the compendium's notebooks (cached) for a parameter set.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "execute the notebooks that are out of date"),
                       ("status", "show which notebooks are up to date")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--params", help="set name in params/ or a .yml path (default: $SCANGEN_PARAMS or quick)")
        cmd.add_argument("--root", help="folder to hold build/ and results/ instead of the repository")
    sub.add_parser("strip", help="clear outputs and run metadata of the source notebooks (notebooks/)")
    run_cmd = sub.choices["run"]
    run_cmd.add_argument("--only", action="append", metavar="NN",
                         help="run only this notebook (number prefix or full name); repeatable")
    run_cmd.add_argument("--force", action="store_true", help="re-execute even if the cache is valid")
    run_cmd.add_argument("--kernel", default=DEFAULT_KERNEL, help="Jupyter kernel name (default python3)")
    run_cmd.add_argument("--log-output", action="store_true", help="stream notebook output to the log")
    return parser


def _layout(root: str | None) -> Layout:
    return Layout.under(root, sources_from=Layout.default()) if root else Layout.default()


def _status(param_set: str, layout: Layout) -> int:
    pset, states = plan(param_set, layout)
    print(f"parameter set {pset.name}: {pset.description}")
    for state in states:
        text = "up to date" if state.fresh else "will run: " + "; ".join(state.reasons)
        print(f"  {state.name:<24} {text}")
    active = active_set(layout)
    print(f"published in {layout.executed}: " + (f"set {active['param_set']}" if active else "nothing yet"))
    return 0


def _strip(layout: Layout) -> int:
    from scangen.pipeline.params import available_notebooks
    from scangen.pipeline.sources import strip_notebook

    for path in available_notebooks(layout.notebooks).values():
        print(f"{path.name}: {'stripped' if strip_notebook(path) else 'clean'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "strip":
        return _strip(Layout.default())
    layout = _layout(args.root)
    param_set = param_set_from_env(args.params)
    try:
        if args.command == "status":
            return _status(param_set, layout)
        run(param_set, layout, only=args.only, force=args.force, kernel=args.kernel,
            log_output=args.log_output)
        return 0
    except (ParamSetError, NotebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
