"""Command line of the store: `python -m scangen.store import ...` and `python -m scangen.store vocabulary STORE`.

    python -m scangen.store import FEATURES [FEATURES ...] --manifest M.csv --store data/mine --fm uni \\
        [--format auto|trident|clam|plismbench] [--task msi | --no-task] [--alias "UFS-B300=B300" ...]
        [--alias-file aliases.csv] [--patch-label tissue_class] [--patch-labels labels.parquet]
        [--registered | --no-registered] [--plism-magnification 20] [--min-specimens 10] [--overwrite]
        [--dtype float16|float32]

Errors are printed as one line (the StoreValidationError's message, naming file, column and ids)
with exit status 2; warnings are printed as they occur.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from .cohort_checks import MIN_SPECIMENS_PER_SCANNER
from .formats import FORMATS
from .schema import StoreValidationError


def _aliases(pairs: Sequence[str], alias_file: str | None) -> dict[str, str]:
    """User alias map from NAME=CODE pairs and/or a CSV file with columns name, scanner."""
    out: dict[str, str] = {}
    if alias_file:
        table = pl.read_csv(alias_file, infer_schema=False)
        if not {"name", "scanner"} <= set(table.columns):
            raise StoreValidationError(f"{alias_file}: alias file needs columns 'name' and 'scanner', got {table.columns}")
        out.update(dict(zip(table["name"].to_list(), table["scanner"].to_list())))
    for pair in pairs:
        if "=" not in pair:
            raise StoreValidationError(f"--alias {pair!r}: expected NAME=CODE, e.g. 'UFS-B300=B300'")
        name, code = pair.split("=", 1)
        out[name] = code
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scangen.store", description="Import real features into a store.")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a feature folder (TRIDENT, CLAM, plismbench) plus a manifest")
    imp.add_argument("features", nargs="+", help="feature folder(s)")
    imp.add_argument("--manifest", nargs="*", default=[], help="manifest file(s) (CSV/Parquet); optional for plismbench")
    imp.add_argument("--store", required=True, help="store folder to write")
    imp.add_argument("--fm", required=True, help="name of the foundation model (names embeddings/<fm>.parquet)")
    imp.add_argument("--format", default="auto", choices=FORMATS)
    task = imp.add_mutually_exclusive_group()
    task.add_argument("--task", default="auto", help="manifest column holding the binary slide label (default: an EGFR column)")
    task.add_argument("--no-task", action="store_true", help="embedding-only store: no slide label")
    imp.add_argument("--alias", action="append", default=[], help="scanner alias NAME=CODE (repeatable)")
    imp.add_argument("--alias-file", help="CSV with columns name, scanner")
    imp.add_argument("--patch-label", default="tissue_class", help="per-patch label dataset/column name")
    imp.add_argument("--patch-labels", help="side table (CSV/Parquet) of per-patch labels")
    reg = imp.add_mutually_exclusive_group()
    reg.add_argument("--registered", dest="registered", action="store_true", default=None,
                     help="write registered tiles (equal coordinates across the scans of a specimen)")
    reg.add_argument("--no-registered", dest="registered", action="store_false")
    imp.add_argument("--plism-magnification", type=int, help="plismbench without a manifest: the tiles' magnification")
    imp.add_argument("--min-specimens", type=int, default=MIN_SPECIMENS_PER_SCANNER,
                     help="warn about scanners with fewer specimens than this")
    imp.add_argument("--overwrite", action="store_true", help="replace the model, or the store when its slides differ")
    imp.add_argument("--dtype", choices=("float16", "float32"), help="store the features in this precision")
    voc = sub.add_parser("vocabulary", help="print a store's vocabulary as JSON")
    voc.add_argument("store")
    return parser


def _run_import(args: argparse.Namespace) -> None:
    from .importers import import_features, plism_manifest

    manifest: object = [Path(m) for m in args.manifest]
    if not args.manifest:
        if args.plism_magnification is None:
            raise StoreValidationError("--manifest: give the manifest file(s) (or, for plismbench, --plism-magnification)")
        manifest = plism_manifest(args.features[0], args.plism_magnification)
    task = None if args.no_task or (not args.manifest and args.task == "auto") else args.task
    store = import_features(
        [Path(f) for f in args.features], manifest, Path(args.store), args.fm, args.format, task=task,
        scanner_aliases=_aliases(args.alias, args.alias_file), patch_label=args.patch_label,
        patch_labels=args.patch_labels, registered=args.registered, overwrite=args.overwrite,
        min_specimens_per_scanner=args.min_specimens, dtype=args.dtype,
    )
    print(f"imported {args.fm} into {store}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "import":
            _run_import(args)
        else:
            from .vocabulary import store_vocabulary

            voc = store_vocabulary(Path(args.store))
            print(json.dumps({**voc.to_json(), "task": voc.task, "models": list(voc.models),
                              "primary_magnification": voc.primary_magnification}, indent=2))
    except StoreValidationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
