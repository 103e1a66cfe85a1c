"""Write the compendium's numbered notebooks (notebooks/NN_name.ipynb) from the cell lists below.

The notebooks are generated so that they stay reviewable as plain Python and carry no outputs.
Each one: a markdown header (inputs, outputs), one code cell tagged `parameters` holding literals
only (defaults = the quick set, so it runs top to bottom in JupyterLab), then orchestration cells
calling scangen.experiments / scangen.figures / scangen.tables. Paper figures and tables sit in
cells labelled for Quarto (`#| label: fig-...` / `tbl-...`); a figure cell shows the static PNG
exported with vl-convert, the interactive altair chart sits in an unlabelled cell before it.

Usage: python scripts/make_notebooks.py [--check]   (--check: fail if a notebook is out of date)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from scangen.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

FMS = '["phikon-sim", "uni-sim", "virchow-sim", "gigapath-sim", "hoptimus0-sim"]'

COMMON = '''param_set = "quick"  # parameter set name: results go to results/<param_set>/
results_dir = None  # None: scangen.paths.results_dir(param_set)
store_dir = None  # None: the simulated store of `size` and `seed` (data/simulated/<size>-seed<seed>)
size = "quick"  # simulated cohort size: "tiny", "quick" or "paper"
seed = 0  # simulation seed'''

TRAIN = '''seeds = [0, 1]  # training seeds
steps = 150  # max training steps per run (TrainConfig.max_steps)
device = "auto"  # "auto": CUDA, else MPS, else CPU
train = {"eval_every": 25, "patience": 4, "max_patches_train": 32}  # further TrainConfig fields shared by every run
cache_dir = None  # finished-run cache; None: data/cache/runs'''

SETUP = '''from pathlib import Path

import polars as pl
from IPython.display import Image, Markdown, display

from scangen import figures, tables
from scangen.experiments import data, results'''

SESSION = '''from scangen.experiments.session import ExperimentSession, train_settings

store = data.resolve_store(store_dir, size, seed)
out = data.resolve_results_dir(results_dir, param_set)
session = ExperimentSession(store, data.resolve_cache_dir(cache_dir), train_settings(steps, device, train))
print(f"store {store} (simulated={session.simulated}); results in {out}; cache {session.cache.root}")'''


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str, *tags: str):
    cell = new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def nb_data():
    return [
        md("""
# 01 · Data: the multi-scanner cohort

**Inputs**: nothing (simulates the default cohort), or an existing store (`store_dir`), or TRIDENT/CLAM
feature folders to import (`import_from` + `manifest` + `import_fm`, written to `store_dir`).
**Outputs**: the store; `results/<set>/cohort_per_scan.parquet`, `cohort.parquet`, `data.json`.

The default cohort is **simulated** (the paper's multi-scanner cohort is private and the FMs' weights
cannot be downloaded here): a task cohort (TCGA/CPTAC-like, few scanners) and a multi-scanner cohort
whose specimens are scanned on six 40x scanners plus GT450 at 20x, embedded by five simulated FMs.
"""),
        code(COMMON + '''
import_from = None  # folder of TRIDENT/CLAM features to import (real data), or None
manifest = None  # CSV/Parquet manifest of the imported slides
import_fm = None  # model name to store the imported features under
import_format = "auto"  # "trident", "clam" or "auto"''', "parameters"),
        code(SETUP),
        code('''store, source = data.prepare_store(store_dir, size, seed, import_from=import_from, manifest=manifest,
                                   import_fm=import_fm, import_format=import_format)
info = data.cohort_tables(store)
out = data.resolve_results_dir(results_dir, param_set)
print(f"store: {store} ({source}); simulated = {info['simulated']}; models: {info['models']}")'''),
        md("## Cohorts"),
        code('''#| label: tbl-cohort
#| tbl-cap: "Cohorts of the store: slides, specimens and EGFR-positive share per cohort."
display(Markdown(tables.to_markdown(tables.origin(info["per_cohort"].drop("simulated"), info["simulated"]))))'''),
        code('''#| label: tbl-scans
#| tbl-cap: "Slides per cohort, scanner and magnification."
display(Markdown(tables.to_markdown(tables.origin(info["per_scan"].drop("simulated"), info["simulated"]))))'''),
        md("The task cohort's sites, scanners and EGFR prevalence (the confound a baseline can learn):"),
        code('''if info["per_site"] is not None:
    display(info["per_site"])'''),
        code('''results.write_table(out, "cohort", info["per_cohort"], simulated=info["simulated"])
results.write_table(out, "cohort_per_scan", info["per_scan"], simulated=info["simulated"])
results.write_json(out, "data", data.data_json(info, store, source), simulated=info["simulated"])
sorted(p.name for p in out.iterdir())'''),
    ]


def nb_scanner_bias():
    return [
        md("""
# 02 · Scanner bias of raw FM embeddings (paper Fig. 3)

**Inputs**: the store from notebook 01; the calibration table `data/calibration/achieved_vs_published.*`
(published robustness values), if present.
**Outputs**: `results/<set>/scanner_bias_umap.parquet`, `scanner_bias_metrics.parquet`,
`scanner_bias.json`, `figures/fig3_umap.png|svg`.

One mean embedding per test WSI, UMAP with the cosine metric per FM, coloured by scanner and by
specimen; beside it, embedding-level robustness numbers on the whole multi-scanner cohort at 40x.
No training here.

Cost bounds (parameters; the set's values are in `params/<set>.yml`): `max_patches_per_slide` random
patches per WSI for the robustness index (its kNN search grows with the square of the patch count),
`max_tile_queries` random queries per scanner pair and direction for the tile retrieval (the pool is
never subsampled), `predictability_pca` principal components of the WSI means for the scanner probe
(`None`: the raw embeddings) and `umap_n_epochs` UMAP epochs (`None`: umap-learn's default).
"""),
        code(COMMON + f'''
fms = {FMS}
split_seed = 0  # specimen split seed (as TrainConfig.split_seed): UMAP shows the test split
umap_seed = 0  # UMAP random_state
max_patches_per_slide = 16  # patches per WSI for the patch-level robustness index (None: all)
max_tile_queries = 256  # tile-retrieval queries per scanner pair and direction (None: all)
predictability_pca = None  # PCA components before the scanner probe (None: raw WSI means)
umap_n_epochs = 200  # UMAP optimisation epochs (None: umap-learn default)''', "parameters"),
        code(SETUP + '''
from scangen.experiments import scanner_bias as sb

store = data.resolve_store(store_dir, size, seed)
out = data.resolve_results_dir(results_dir, param_set)
simulated = bool(data.cohort_tables(store)["simulated"])'''),
        code('''coords, metrics = sb.run_scanner_bias(store, fms, seed=umap_seed, split_seed=split_seed,
                                      max_patches_per_slide=max_patches_per_slide, max_tile_queries=max_tile_queries,
                                      predictability_pca=predictability_pca, umap_n_epochs=umap_n_epochs)
metrics = sb.with_published(metrics, sb.published_values())
results.write_table(out, "scanner_bias_umap", coords, simulated=simulated)
results.write_table(out, "scanner_bias_metrics", metrics, simulated=simulated)
results.write_json(out, "scanner_bias", {"fms": {r["fm"]: r for r in metrics.iter_rows(named=True)},
                                         "split_seed": split_seed, "umap_seed": umap_seed,
                                         "bounds": {"max_patches_per_slide": max_patches_per_slide,
                                                    "max_tile_queries": max_tile_queries,
                                                    "predictability_pca": predictability_pca,
                                                    "umap_n_epochs": umap_n_epochs}}, simulated=simulated)'''),
        md("Interactive chart (hover for specimen and scanner):"),
        code('''chart = figures.umap_chart(coords, simulated=simulated)
fig_paths = figures.save_chart(chart, out / "figures", "fig3_umap")
chart'''),
        code('''#| label: fig-umap
#| fig-cap: "UMAP (cosine) of the mean embedding of every test WSI per foundation model, coloured by scanner (top) and by specimen (bottom). Points clustering by scanner rather than by specimen show scanner bias."
Image(filename=str(fig_paths["png"]))'''),
        code('''#| label: tbl-embedding-metrics
#| tbl-cap: "Embedding-level robustness of the raw FM embeddings: robustness index (patches, tissue class), same-specimen WSI retrieval, cross-scanner tile retrieval (top-10), scanner predictability (balanced accuracy; chance in brackets) and UMAP silhouettes; published values where known."
display(Markdown(tables.to_markdown(tables.origin(tables.scanner_bias_display(metrics), simulated))))'''),
    ]


def nb_table1():
    return [
        md("""
# 03 · Table 1 and Fig. 1: five FMs, with and without ScanGen

**Inputs**: the store from notebook 01.
**Outputs**: `results/<set>/table1_runs.parquet` (one row per run), `table1.parquet` (seed means, 95%
intervals, relative change), `table1.json`, `figures/fig1_cov_auc.png|svg`.

Every FM is trained with the GAP head twice per seed, by cross-entropy alone (baseline) and with the
ScanGen loss; all runs are cached, so rerunning reuses finished training.
"""),
        code(COMMON + f'''
fms = {FMS}
''' + TRAIN, "parameters"),
        code(SETUP + '''
from scangen.experiments import table1 as t1'''),
        code(SESSION),
        code('''runs, table = t1.run_table1(session, fms, seeds)
results.write_table(out, "table1_runs", runs, simulated=session.simulated)
results.write_table(out, "table1", table, simulated=session.simulated)
results.write_json(out, "table1", t1.table1_json(table, seeds, {"steps": steps}), simulated=session.simulated)
print(f"{runs.height} runs, {session.cache.hits} reused from the cache, {session.cache.misses} trained")'''),
        code('''#| label: tbl-table1
#| tbl-cap: "EGFR AUC (seed mean [95% interval]), scanner CoV and magnification CoV of logits on the held-out test split, per FM, without and with ScanGen; relative change against the baseline in brackets."
display(Markdown(tables.to_markdown(tables.origin(tables.table1_display(table), session.simulated))))'''),
        md("Interactive chart:"),
        code('''chart = figures.cov_auc_chart(table, simulated=session.simulated)
fig_paths = figures.save_chart(chart, out / "figures", "fig1_cov_auc")
chart'''),
        code('''#| label: fig-cov-auc
#| fig-cap: "Scanner CoV against EGFR AUC per foundation model: each arrow goes from the baseline to the model trained with ScanGen (seed means)."
Image(filename=str(fig_paths["png"]))'''),
        md("Per-run metrics, per-scanner AUC and the CoV computed on probabilities instead of logits:"),
        code('''runs.select("fm", "use_scangen", "seed", "auc", "scanner_cov", "scanner_cov_prob", "mag_cov", "flip_rate",
            "n_near_zero", "cached", *[c for c in runs.columns if c.startswith("auc_") and c[4:].isupper()])'''),
        md("""Where the scanner disagreement of each run comes from (`scangen.metrics.scanner_variance`): the
test logits split into specimen means (spread `between_sd`), per-scanner offsets (`offset_sd`) and a
specimen-specific residual (`residual_sd`). `scanner_share` = mean within-specimen std / `between_sd` is
unchanged by scaling or shifting the logits; `median_abs_mean` is the typical CoV denominator, so a run
can lower the logit CoV by moving its intercept away from 0 without agreeing better across scanners."""),
        code('''runs.select("fm", "use_scangen", "seed", "scanner_cov", "scanner_share", "offset_sd", "residual_sd",
            "between_sd", "median_abs_mean", "n_near_zero")'''),
    ]


def nb_ablation():
    return [
        md("""
# 04 · ScanGen with limited scanners (paper Fig. 4)

**Inputs**: the store from notebook 01; `table1.json` (to pick the FM when `fm` is None).
**Outputs**: `results/<set>/ablation_runs.parquet`, `ablation_subsets.parquet`, `ablation_by_size.parquet`,
`ablation.json`, `figures/fig4_ablation.png|svg`.

ScanGen is trained with every subset of 2..6 of the six 40x scanners (57 subsets; `max_subsets` keeps a
size-balanced selection for quick checks) and tested on all six. The gain is the percent CoV reduction
against the baseline of the same seed. For sizes 2..5 we count how often each scanner (and scanner pair)
appears in the best and the worst subsets.
"""),
        code(COMMON + '''
fm = None  # FM of the ablation; None: the strongest FM of Table 1
max_subsets = None  # None: all 57 subsets
count_sizes = [2, 3, 4, 5]  # subset sizes whose best/worst subsets are counted
top_k = 1  # best/worst subsets counted per size
''' + TRAIN.replace("seeds = [0, 1]", "seeds = [0]"), "parameters"),
        code(SETUP + '''
from scangen.experiments import ablation as ab
from scangen.experiments.table1 import resolve_fm'''),
        code(SESSION + '''
fm, fm_how = resolve_fm(fm, out, session.models)
print(f"ablation FM: {fm} ({fm_how})")'''),
        code('''res = ab.run_ablation(session, fm, seeds, max_subsets=max_subsets, count_sizes=count_sizes, top_k=top_k)
results.write_table(out, "ablation_runs", res["runs"], simulated=session.simulated)
results.write_table(out, "ablation_subsets", res["subsets"], simulated=session.simulated)
results.write_table(out, "ablation_by_size", res["by_size"], simulated=session.simulated)
results.write_json(out, "ablation", {**ab.ablation_json(res, fm, seeds), "fm_chosen_by": fm_how}, simulated=session.simulated)
print(f"{res['n_subsets']} of {res['n_subsets_possible']} subsets; {session.cache.hits} runs reused, {session.cache.misses} trained")'''),
        md("Interactive chart:"),
        code('''chart = figures.ablation_chart(res["subsets"], res["by_size"], simulated=session.simulated, fm=fm)
fig_paths = figures.save_chart(chart, out / "figures", "fig4_ablation")
chart'''),
        code('''#| label: fig-ablation
#| fig-cap: "Scanner CoV gain over the baseline (percent, on the six-scanner test split) against the number of scanners used in the ScanGen loss: one point per scanner subset, the line joins the means per size."
Image(filename=str(fig_paths["png"]))'''),
        code('''#| label: tbl-ablation
#| tbl-cap: "CoV gain over the baseline per number of ScanGen scanners (mean, SD and range over subsets)."
display(Markdown(tables.to_markdown(tables.origin(tables.ablation_display(res["by_size"]), session.simulated))))'''),
        code('''#| label: tbl-ablation-counts
#| tbl-cap: "How often each scanner appears in the best (lowest CoV) and worst (highest CoV) subset of each size counted."
display(Markdown(tables.to_markdown(tables.origin(tables.best_worst_display(res["best_worst"]), session.simulated))))'''),
        code('''res["best_worst"]["best"], res["best_worst"]["worst"]'''),
    ]


def nb_mil():
    return [
        md("""
# 05 · Other MIL aggregators (paper Table 2)

**Inputs**: the store from notebook 01; `table1.json` (to pick the strongest FM when `fm` is None).
**Outputs**: `results/<set>/mil_runs.parquet`, `mil_table.parquet`, `mil_table.json`,
`figures/fig_mil.png|svg`.

GAP, AB-MIL, DS-MIL and SlotMIL heads on the strongest FM, each trained without and with ScanGen. The GAP
runs are Table 1's runs of that FM (served by the run cache).
"""),
        code(COMMON + '''
fm = None  # None: the strongest FM of Table 1 (highest baseline AUC)
heads = ["gap", "abmil", "dsmil", "slotmil"]
''' + TRAIN, "parameters"),
        code(SETUP + '''
from scangen.experiments import mil_table as mt
from scangen.experiments.table1 import resolve_fm'''),
        code(SESSION + '''
fm, fm_how = resolve_fm(fm, out, session.models)
print(f"MIL FM: {fm} ({fm_how})")'''),
        code('''runs, table = mt.run_mil_table(session, fm, heads, seeds)
results.write_table(out, "mil_runs", runs, simulated=session.simulated)
results.write_table(out, "mil_table", table, simulated=session.simulated)
results.write_json(out, "mil_table", mt.mil_json(table, fm, fm_how, seeds), simulated=session.simulated)
print(f"{runs.height} runs, {session.cache.hits} reused from the cache, {session.cache.misses} trained")'''),
        code('''#| label: tbl-mil
#| tbl-cap: "EGFR AUC (seed mean [95% interval]) and scanner CoV per MIL aggregator on the strongest FM, without and with ScanGen; relative CoV change in brackets."
display(Markdown(tables.to_markdown(tables.origin(tables.mil_display(table, mt.HEAD_LABELS), session.simulated))))'''),
        md("Interactive chart:"),
        code('''chart = figures.mil_chart(table, simulated=session.simulated, fm=fm)
fig_paths = figures.save_chart(chart, out / "figures", "fig_mil")
chart'''),
        code('''#| label: fig-mil
#| fig-cap: "EGFR AUC and scanner CoV per MIL aggregator, without and with ScanGen (seed means, 95% intervals)."
Image(filename=str(fig_paths["png"]))'''),
    ]


def nb_sensitivity():
    return [
        md("""
# 06 · Method choices: ScanGen item level and loss settings

**Inputs**: the store from notebook 01; `table1.json` (to pick the FM when `fm` is None).
**Outputs**: `results/<set>/sensitivity_runs.parquet`, `sensitivity.parquet`, `sensitivity.json`,
`figures/fig_sensitivity.png|svg`.

The paper's text lost its hyper-parameter ranges and leaves the ScanGen item level open. Here ScanGen is
retrained on one FM while one setting at a time moves away from the defaults: item level (slide mean vs
patches), lambda, alpha and the margin. Validation metrics are shown beside test metrics (the defaults
should be chosen on validation), and the scanner CoV is given on logits (paper) and on probabilities.
"""),
        code(COMMON + '''
fm = None  # None: the strongest FM of Table 1
grid = {"scangen_level": ["slide", "patch", "bag"], "lam": [0.3, 1.0, 3.0]}
cov_weight = 0.1  # validation rule: val AUC - cov_weight x val CoV
''' + TRAIN.replace("seeds = [0, 1]", "seeds = [0]"), "parameters"),
        code(SETUP + '''
from scangen.experiments import sensitivity as sv
from scangen.experiments.table1 import resolve_fm'''),
        code(SESSION + '''
fm, fm_how = resolve_fm(fm, out, session.models)
print(f"FM: {fm} ({fm_how})")'''),
        code('''runs, table, summary = sv.run_sensitivity(session, fm, grid, seeds, cov_weight)
results.write_table(out, "sensitivity_runs", runs, simulated=session.simulated)
results.write_table(out, "sensitivity", table, simulated=session.simulated)
results.write_json(out, "sensitivity", {**summary, "fm_chosen_by": fm_how}, simulated=session.simulated)
print(f"validation rule picks {summary['val_choice']}; {session.cache.hits} runs reused, {session.cache.misses} trained")'''),
        code('''#| label: tbl-sensitivity
#| tbl-cap: "ScanGen with one setting changed at a time (seed means): validation and test EGFR AUC, scanner CoV on logits and on probabilities, magnification CoV."
display(Markdown(tables.to_markdown(tables.origin(tables.sensitivity_display(table), session.simulated))))'''),
        md("Interactive chart:"),
        code('''chart = figures.sensitivity_chart(table, summary["baseline"]["scanner_cov"], simulated=session.simulated, fm=fm)
fig_paths = figures.save_chart(chart, out / "figures", "fig_sensitivity")
chart'''),
        code('''#| label: fig-sensitivity
#| fig-cap: "Test scanner CoV of ScanGen as one setting moves away from the defaults (red line: defaults; dashed: baseline without ScanGen)."
Image(filename=str(fig_paths["png"]))'''),
    ]


NOTEBOOK_CELLS = {
    "01_data": nb_data,
    "02_scanner_bias": nb_scanner_bias,
    "03_table1": nb_table1,
    "04_ablation": nb_ablation,
    "05_mil_extensions": nb_mil,
    "06_sensitivity": nb_sensitivity,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook `name` with stable cell ids (so regeneration gives identical files)."""
    nb = new_notebook(cells=NOTEBOOK_CELLS[name]())
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook differs from its generator")
    args = parser.parse_args(argv)
    NOTEBOOKS.mkdir(exist_ok=True)
    stale = []
    for name in NOTEBOOK_CELLS:
        text = nbformat.writes(build(name)) + "\n"
        path = NOTEBOOKS / f"{name}.ipynb"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            atomic_write_text(path, text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run scripts/make_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
