"""The run cache: full records (predictions, history, diagnostics) round-trip, incomplete entries are
never served, and the code fingerprint covers every module training imports (so no stale hits)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from scangen.experiments.cache import RunCache
from scangen.experiments.code_fingerprint import PACKAGE_DIR, code_fingerprint, import_closure
from scangen.train.experiment import RunRecord


def _record(value: float) -> RunRecord:
    preds = pl.DataFrame({"slide_id": ["s1", "s2"], "logit": [value, -value], "diag_within_sd": [0.5, 0.5]})
    history = pl.DataFrame({"step": [1, 2], "val_auc": [0.5, 0.75], "selected": [False, True]})
    return RunRecord(predictions=preds, history=history, diagnostics={"within_sd": 0.5, "att_term": float("nan")})


def test_record_round_trip_with_nan_diagnostics(tmp_path: Path):
    cache = RunCache(tmp_path, code_fp="code-1")
    key = cache.key({"fm": "x", "seed": 0}, "store-1")
    assert cache.get_record(key) is None
    cache.put_record(key, _record(1.0), {"config": {"fm": "x"}, "train_seconds": 0.25})
    back = cache.get_record(key)
    assert back.predictions.equals(_record(1.0).predictions) and back.history.equals(_record(1.0).history)
    assert back.diagnostics["within_sd"] == 0.5 and math.isnan(back.diagnostics["att_term"])
    info = json.loads((tmp_path / key / "run.json").read_text())  # strict JSON: NaN stored as null
    assert info["diagnostics"] == {"within_sd": 0.5, "att_term": None}
    assert info["code_fingerprint"] == "code-1" and info["train_seconds"] == 0.25 and info["n_rows"] == 2
    assert "cached" not in info


def test_incomplete_entry_is_not_served(tmp_path: Path):
    cache = RunCache(tmp_path, code_fp="c")
    key = cache.key({"a": 1}, "s")
    cache.put_record(key, _record(1.0), {})
    (tmp_path / key / "predictions.parquet").unlink()  # predictions are written last: a crash before them
    assert cache.get_record(key) is None and not cache.has_record(key)
    cache.put_record(key, _record(2.0), {})
    (tmp_path / key / "history.parquet").unlink()
    assert cache.get_record(key) is None


def test_failed_write_leaves_no_complete_entry(tmp_path: Path):
    cache = RunCache(tmp_path, code_fp="c")
    key = cache.key({"a": 1}, "s")
    bad = RunRecord(predictions=_record(1.0).predictions, history="not a table", diagnostics={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="record.history"):
        cache.put_record(key, bad, {})
    assert cache.get_record(key) is None and not list(tmp_path.rglob("*.tmp"))


def _write(pkg: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)


def test_closure_follows_imports_and_only_they_change_the_fingerprint(tmp_path: Path):
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "",
        "entry.py": "from .sub import helper\nimport json\n\ndef f():\n    from pkg import lazy\n    return importlib.import_module('pkg.dyn')\n",
        "dyn.py": "d = 5\n",
        "sub/__init__.py": "from pkg.sub.deep import x\n",
        "sub/helper.py": "from ..leaf import y\n",
        "sub/deep.py": "x = 1\n",
        "leaf.py": "y = 2\n",
        "lazy.py": "z = 3\n",
        "unrelated.py": "import pkg.leaf\n",
    })
    closure = import_closure(["pkg.entry"], pkg, "pkg")
    assert set(closure) == {"pkg", "pkg.entry", "pkg.sub", "pkg.sub.helper", "pkg.sub.deep", "pkg.leaf", "pkg.lazy",
                            "pkg.dyn"}
    fp = code_fingerprint(["pkg.entry"], pkg, "pkg", with_versions=False)
    (pkg / "unrelated.py").write_text("import pkg.leaf\nw = 4\n")
    assert code_fingerprint(["pkg.entry"], pkg, "pkg", with_versions=False) == fp
    for rel in ("leaf.py", "lazy.py", "sub/deep.py", "dyn.py"):
        (pkg / rel).write_text((pkg / rel).read_text() + "# edited\n")
        new = code_fingerprint(["pkg.entry"], pkg, "pkg", with_versions=False)
        assert new != fp, rel
        fp = new
    with pytest.raises(ValueError, match="no source file"):
        import_closure(["pkg.missing"], pkg, "pkg")


def test_closure_covers_the_modules_the_issue_found_missing():
    files = {p.relative_to(PACKAGE_DIR).as_posix() for p in import_closure().values()}
    assert {"scan_labels.py", "metrics/scanner_variance.py", "train/trainer.py", "losses.py",
            "train/ensemble.py", "experiments/grid.py"} <= files
    assert "pipeline/runner.py" not in files and "figures.py" not in files  # notebook plumbing: not hashed


_TRAIN_EVERYTHING = r"""
import json, sys
from dataclasses import fields
from pathlib import Path
import scangen
from scangen.experiments.grid import GroupTask, train_group
from scangen.store import load_bags
from scangen.train import TrainConfig
from scangen.train.config import HEADS, SCANGEN_LEVELS

store = sys.argv[1]
names = {f.name for f in fields(TrainConfig)}
base = TrainConfig(store=store, fm="phikon-sim", max_steps=2, eval_every=1, patience=1, device="cpu",
                   progress=False, max_patches_train=8)
configs = [base.replace(head=h) for h in HEADS]
configs += [base.replace(use_scangen=True, scangen_level=level) for level in SCANGEN_LEVELS]
in_tree = (Path(scangen.__file__).parent / "harmonise").is_dir()  # merged yet on this branch?
if "harmonize" in names and in_tree:
    configs += [base.replace(harmonize=m) for m in ("standardize", "combat", "coral")]
if "adversary_weight" in names and in_tree:
    configs += [base.replace(adversary_weight=0.5, use_scangen=True)]
if "trace_test" in names:
    configs += [base.replace(trace_test=True)]
if "amp_cpu" in names:
    configs += [base.replace(amp_cpu=True)]
bags = load_bags(store, "phikon-sim")
for c in configs:
    train_group(GroupTask(fm=c.fm, configs=(c,), keys=("k",), device="cpu", threads=1), bags)
train_group(GroupTask(fm=base.fm, configs=(base, base.replace(seed=1)), keys=("a", "b"), device="cpu", threads=1), bags)
print(json.dumps(sorted({m.__file__ for n, m in list(sys.modules.items())
                         if n.split(".")[0] == "scangen" and getattr(m, "__file__", None)})))
"""


def test_every_module_training_imports_is_fingerprinted(tiny_store: Path):
    """Train every head, ScanGen level and (when present) harmonisation / adversary option, alone and as
    an ensemble, in a fresh interpreter; every scangen module it imported must be in the closure."""
    proc = subprocess.run([sys.executable, "-c", _TRAIN_EVERYTHING, str(tiny_store)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {Path(f).resolve() for f in json.loads(proc.stdout.strip().splitlines()[-1])}
    hashed = {p.resolve() for p in import_closure().values()}
    assert imported and imported <= hashed, sorted(str(p) for p in imported - hashed)
