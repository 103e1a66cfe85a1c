"""Generation time of the simulated cohort at each size, and (with --check) its realism numbers.

Usage: python benchmarks/bench_simulate.py [--sizes tiny quick] [--check] [--seed 0]
Prints wall time of `simulate_cohort` (generation + embedding + writing, all five models), the number
of slides/patches and the store size. --check also prints, per simulated model, the cross-validated
EGFR AUC of a logistic regression on mean slide embeddings (task cohort 5-fold; multiscanner 40x
5-fold grouped by specimen; trained on task, tested on multiscanner) and the grouped-CV accuracy of
predicting the scanner of multiscanner 40x slides (chance 1/6).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scangen.constants import SIMULATED_MODELS
from scangen.simulate import simulate_cohort
from scangen.store import load_bags


def _pca(x: np.ndarray, k: int = 64) -> np.ndarray:
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    return u[:, :k] * s[:k]


def check(store: Path) -> None:
    """Print label and scanner signal per model (see module docstring)."""
    for fm in SIMULATED_MODELS:
        bags = load_bags(store, fm)
        sl = bags.slides
        x = _pca(bags.mean_embeddings())
        y = sl["egfr"].to_numpy()
        task = (sl["cohort"] == "task").to_numpy()
        ms40 = ((sl["cohort"] == "multiscanner") & (sl["magnification"] == 40)).to_numpy()
        spec = sl["specimen_id"].to_numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        p_task = cross_val_predict(clf, x[task], y[task], cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                   method="predict_proba")[:, 1]
        p_ms = cross_val_predict(clf, x[ms40], y[ms40], cv=GroupKFold(5), groups=spec[ms40], method="predict_proba")[:, 1]
        p_tr = clf.fit(x[task], y[task]).predict_proba(x[ms40])[:, 1]
        scanner = sl["scanner"].to_numpy()[ms40]
        acc = (cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)), x[ms40], scanner,
                                 cv=GroupKFold(5), groups=spec[ms40]) == scanner).mean()
        print(f"  {fm:14s} EGFR AUC task-cv {roc_auc_score(y[task], p_task):.3f}  "
              f"multiscanner-cv {roc_auc_score(y[ms40], p_ms):.3f}  task->multiscanner "
              f"{roc_auc_score(y[ms40], p_tr):.3f} | scanner accuracy {acc:.2f} (chance 0.17)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "quick"], choices=["tiny", "quick", "paper"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="also print per-model EGFR AUC and scanner accuracy")
    args = ap.parse_args()
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            store = simulate_cohort(Path(tmp) / size, size=size, seed=args.seed)
            took = time.perf_counter() - start
            bags = load_bags(store, "phikon-sim")
            mb = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20
            print(f"{size:6s} {took:7.1f} s  slides {len(bags)}  patches {len(bags.features)}  "
                  f"bag median {int(np.median(bags.lengths))}  store {mb:.0f} MiB", flush=True)
            if args.check and size == "tiny":
                print("  (--check skipped for tiny: too few specimens for cross-validated AUCs)")
            elif args.check:
                check(store)


if __name__ == "__main__":
    main()
