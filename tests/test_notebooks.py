"""The numbered notebooks, executed end to end under the smoke parameter set on a tiny simulated cohort.

One session-scoped run of the pipeline (`scangen.pipeline`, papermill) into a temporary root (the
`smoke_run` fixture of tests/conftest.py, shared with tests/test_quarto_project.py); the
tests then check the sources (generated, output-free, literal parameters), the executed copies (every
Quarto-labelled cell has its output), and the result files (schemas, value ranges, simulated flags,
reuse of cached training across notebooks).
"""

from __future__ import annotations

import ast
import json
import math

import nbformat
import polars as pl
import pytest

from scangen import paths
from scangen.pipeline.sources import notebook_text, strip_notebook, stripped

NOTEBOOKS = ["01_data", "02_scanner_bias", "03_tuning", "04_table1", "05_ablation", "06_mil_heads", "07_harmonisation"]
REQUIRED_IN_SMOKE = NOTEBOOKS
LABELS = {
    "01_data": {"tbl-cohort", "tbl-scans"},
    "02_scanner_bias": {"fig-umap", "tbl-embedding-metrics"},
    "03_tuning": {"tbl-tuning", "fig-tuning"},
    "04_table1": {"tbl-protocol", "tbl-table1", "tbl-table1-agreement", "tbl-table1-paired",
                  "tbl-table1-paired-scenarios", "fig-cov-auc", "fig-history"},
    "05_ablation": {"fig-ablation", "tbl-ablation", "tbl-ablation-paired", "tbl-ablation-counts"},
    "06_mil_heads": {"tbl-mil", "tbl-mil-paired", "fig-mil", "tbl-claims"},
    "07_harmonisation": {"tbl-harmonisation-design", "tbl-table3", "tbl-table3-task", "tbl-harmonisation-auc-scanner",
                         "tbl-harmonisation-embedding", "fig-harmonisation"},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels(cell) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in cell.source.splitlines() if line.startswith("#| label:")]


def _executed(smoke_run: dict, name: str) -> nbformat.NotebookNode:
    return nbformat.read(smoke_run["layout"].executed / f"{name}.ipynb", as_version=4)


def _same_code(*tables: pl.DataFrame) -> bool:
    """Whether all runs were made by the same scangen source (code edited between notebooks, as
    during development, rightly invalidates the run cache; reuse is asserted only when it was not)."""
    return len({fp for t in tables for fp in t["code_fingerprint"].to_list()}) == 1


def _json(smoke_run: dict, name: str) -> dict:
    return json.loads((smoke_run["results"] / f"{name}.json").read_text())


# --- sources -----------------------------------------------------------------------------------

def test_notebooks_are_the_source():
    """The .ipynb files are edited where they are read: no generator script stands behind them, and
    every source notebook is a valid nbformat-4 file with unique cell ids and a Python kernel."""
    assert not (paths.ROOT / "scripts" / "make_notebooks.py").exists()
    assert sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:
        nb = nbformat.read(paths.NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        ids = [c.get("id") for c in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), f"{name}: cell ids missing or repeated"
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        text = (paths.NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8")
        assert notebook_text(stripped(nb)) == text, \
            f"{name}: not stripped; run `python -m scangen.pipeline strip` before committing"


def test_strip_removes_outputs_and_run_metadata_but_keeps_tags_and_ids(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1", id="p-0", execution_count=3,
                                     outputs=[nbformat.v4.new_output("stream", text="hi")])
    cell.metadata = {"tags": ["parameters"], "papermill": {"duration": 1.0}, "execution": {"x": 1}}
    nb.cells = [cell]
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "papermill": {"parameters": {"a": "/abs/path"}}, "widgets": {}}
    path = tmp_path / "01_x.ipynb"
    path.write_text(nbformat.writes(nb))
    assert strip_notebook(path) is True and strip_notebook(path) is False
    clean = nbformat.read(path, as_version=4)
    assert clean.cells[0].outputs == [] and clean.cells[0].execution_count is None
    assert clean.cells[0].metadata == {"tags": ["parameters"]} and clean.cells[0].id == "p-0"
    assert set(clean.metadata) == {"kernelspec"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_has_literal_parameters_first_and_no_outputs(name):
    """Outputs stay stripped (clear them before committing: Kernel > Restart and Clear Outputs in
    JupyterLab); the `parameters` cell holds literal assignments only, which papermill replaces."""
    nb = nbformat.read(paths.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert nb.cells[0].cell_type == "markdown" and "Outputs" in nb.cells[0].source
    for node in ast.parse(code[0].source).body:
        assert isinstance(node, ast.Assign), f"{name}: parameters cell may only assign literals"
        ast.literal_eval(node.value)
    assert {"param_set", "results_dir", "store_dir", "size", "seed"} <= {
        n.targets[0].id for n in ast.parse(code[0].source).body}
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{name}: outputs or execution counts in the source notebook (clear them before committing)"
    found = {lab for c in code for lab in _labels(c)}
    assert found == LABELS[name]


# --- executed copies ---------------------------------------------------------------------------

def test_smoke_set_runs_every_paper_notebook(smoke_run):
    assert set(REQUIRED_IN_SMOKE) <= set(smoke_run["pset"].names())


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_labelled_cell_has_its_output(smoke_run, name):
    if name not in smoke_run["pset"].names():
        pytest.skip(f"{name} is not part of the smoke set")
    nb = _executed(smoke_run, name)
    seen = set()
    for cell in nb.cells:
        for label in _labels(cell) if cell.cell_type == "code" else []:
            seen.add(label)
            kinds = {k for out in cell.outputs for k in out.get("data", {})}
            assert not any(out.get("output_type") == "error" for out in cell.outputs)
            if label.startswith("fig-"):
                assert "image/png" in kinds, f"{name}#{label}: no PNG output"
                assert "#| fig-cap:" in cell.source
            else:
                assert "text/markdown" in kinds, f"{name}#{label}: no table output"
                assert "#| tbl-cap:" in cell.source
                assert "(simulated data)" in "".join(o["data"]["text/markdown"] for o in cell.outputs if "data" in o)
    assert seen == LABELS[name]


# --- result files ------------------------------------------------------------------------------

def test_every_result_table_and_json_says_simulated(smoke_run):
    res = smoke_run["results"]
    tables = sorted(res.glob("*.parquet"))
    assert {"table1", "table1_runs", "ablation_subsets", "mil_table", "scanner_bias_umap", "cohort"} <= {p.stem for p in tables}
    for path in tables:
        df = pl.read_parquet(path)
        assert df.height > 0, path.name
        assert df["simulated"].dtype == pl.Boolean and df["simulated"].all(), path.name
    for path in res.glob("*.json"):
        if path.name != "manifest.json":
            assert json.loads(path.read_text())["simulated"] is True, path.name


def test_figures_exported_as_png_and_svg(smoke_run):
    figs = smoke_run["results"] / "figures"
    stems = ["fig1_cov_auc", "fig3_umap", "fig4_ablation", "fig_mil", "fig_tuning", "fig_history"]
    for stem in stems:
        assert (figs / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (figs / f"{stem}.svg").read_text().lstrip().startswith("<svg")


def test_table1_json_values_and_relative_change(smoke_run):
    doc = _json(smoke_run, "table1")
    fms = smoke_run["pset"].shared["fms"]
    assert sorted(doc["fms"]) == sorted(fms)
    assert "strongest_fm" not in doc  # no FM is picked from test results
    assert all(set(e["paired"]) >= {"scanner_cov", "median_cov", "auc"} for e in doc["fms"].values())
    for entry in doc["fms"].values():
        base, sg = entry["baseline"], entry["scangen"]
        for side in (base, sg):
            assert 0.0 <= side["auc_mean"] <= 1.0
            assert side["scanner_cov_mean"] >= 0 and side["mag_cov_mean"] >= 0
        expected = 100 * (sg["scanner_cov_mean"] - base["scanner_cov_mean"]) / base["scanner_cov_mean"]
        assert math.isclose(entry["rel_change"]["scanner_cov"], expected, rel_tol=1e-9)


def test_scanner_bias_numbers_in_range(smoke_run):
    doc = _json(smoke_run, "scanner_bias")
    assert sorted(doc["fms"]) == sorted(smoke_run["pset"].shared["fms"])
    for row in doc["fms"].values():
        assert 0.0 <= row["robustness_index"] <= 1.0
        assert 0.0 <= row["scanner_predictability"] <= 1.0
        assert 0.0 <= row["wsi_top1"] <= 1.0
    umap = pl.read_parquet(smoke_run["results"] / "scanner_bias_umap.parquet")
    assert umap.select(pl.col("umap_1", "umap_2").is_finite().all()).row(0) == (True, True)


def test_ablation_reuses_table1_runs_and_counts(smoke_run):
    doc = _json(smoke_run, "ablation")
    n_sub = smoke_run["pset"].notebook("05_ablation").overrides["max_subsets"]
    assert doc["n_subsets"] == n_sub and doc["n_subsets_possible"] == 57
    runs = pl.read_parquet(smoke_run["results"] / "ablation_runs.parquet")
    # the baseline and the all-six-scanner ScanGen run are Table 1's runs: served by the run cache
    reused = runs.filter(~pl.col("use_scangen") | (pl.col("n_scanners") == 6))
    table1 = pl.read_parquet(smoke_run["results"] / "table1_runs.parquet")
    assert reused.height >= 2
    if _same_code(runs, table1):
        assert set(reused["config_hash"]) <= set(table1["config_hash"])
    counts = doc["best_worst"]["scanner_counts"]
    for side in ("best", "worst"):
        sizes = doc["best_worst"]["sizes_counted"]
        assert sum(counts[side].values()) == sum(sizes)  # top_k = 1 subset of size k per counted size


def test_mil_table_heads_and_gap_reuse(smoke_run):
    doc = _json(smoke_run, "mil_table")
    heads = smoke_run["pset"].notebook("06_mil_heads").overrides["heads"]
    assert sorted(doc["heads"]) == sorted(heads)
    runs = pl.read_parquet(smoke_run["results"] / "mil_runs.parquet")
    gap = runs.filter(pl.col("head") == "gap")
    table1 = pl.read_parquet(smoke_run["results"] / "table1_runs.parquet")
    if _same_code(runs, table1):
        assert set(gap["config_hash"]) <= set(table1["config_hash"])
    for entry in doc["heads"].values():
        assert 0.0 <= entry["scangen"]["auc_mean"] <= 1.0


def test_tuning_results(smoke_run):
    doc = _json(smoke_run, "scangen_choice")
    log = pl.read_parquet(smoke_run["results"] / "tuning_log.parquet")
    assert log.select(pl.col("val_auc").is_between(0, 1).all()).row(0) == (True,)
    assert not [c for c in log.columns if c.startswith("test")]  # the tuning log holds validation metrics only
    assert log.group_by("stage").agg(pl.col("chosen").sum())["chosen"].to_list() == [1] * log["stage"].n_unique()
    assert set(doc["overrides"]) >= {"scangen_level", "margin", "lam"} and doc["rule"]


def test_harmonisation_results(smoke_run):
    """Table 3: every method of the set paired with the baseline (verdicts read their intervals), the
    baseline and ScanGen runs are Table 1's, and the feature maps were fitted on training splits only."""
    doc = _json(smoke_run, "harmonisation")
    assert doc["methods"][0] == "none" and doc["fit_splits"] == ["task_train", "scangen_train"]
    for fm, entry in doc["fms"].items():
        for method in doc["methods"][1:]:
            for metric, p in entry[method]["paired"].items():
                lo, hi = p["diff_lo"], p["diff_hi"]
                spans = lo is None or hi is None or lo <= 0.0 <= hi
                assert (p["verdict"] == "inconclusive") == spans, (fm, method, metric)
    runs = pl.read_parquet(smoke_run["results"] / "harmonisation_runs.parquet")
    table1 = pl.read_parquet(smoke_run["results"] / "table1_runs.parquet")
    shared = runs.filter(pl.col("method").is_in(["none", "scangen"]))
    if _same_code(runs, table1):
        assert set(shared["config_hash"]) <= set(table1["config_hash"])
