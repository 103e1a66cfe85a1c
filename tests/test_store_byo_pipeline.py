"""End to end on a cohort the simulator never makes: a generated TRIDENT folder (scanners "Aperio
CS2", "NanoZoomer S210", "Motic EasyScan Pro" at 25x, the NanoZoomer also at 10x, task `msi`) plus
its manifest, imported by notebook 01 from a parameter file, then every notebook of the pipeline;
the structural Quarto checks run on its outputs and the tables show the task's and the store's names.
This is issue 13's Done criterion: CI runs it (about a minute on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scangen.pipeline.layout import Layout
from scangen.pipeline.params import available_notebooks, notebook_parameters
from scangen.pipeline.runner import run
from scangen.store import store_vocabulary
from scangen.store.example import EXAMPLE_SCANNERS, write_example_trident

SET = "byo_msi"


def params_file(folder: Path, features: Path, manifest: Path, store: Path) -> Path:
    """The parameter set a user writes for their cohort (docs/bring_your_own_cohort.md), smoke-sized."""
    doc = {
        "description": "Example TRIDENT cohort: three unseen scanners at 25x (one also at 10x), task msi.",
        "parameters": {"store_dir": str(store), "fms": ["my-fm"], "seeds": [0], "steps": 6, "device": "cpu",
                       "train": {"eval_every": 3, "patience": 1}},
        "notebooks": {
            "01_data": {"import_from": str(features), "manifest": str(manifest), "import_fm": "my-fm",
                        "import_options": {"task": "msi"}},
            "02_scanner_bias": {"max_patches_per_slide": 8, "max_tile_queries": 64, "umap_n_epochs": 50},
            "03_tuning": {}, "04_table1": {}, "05_ablation": {"max_subsets": 3, "count_sizes": [2]},
            "06_mil_heads": {"heads": ["gap", "abmil"]}, "07_harmonisation": {"fms": ["my-fm"]},
        },
    }
    smoke = yaml.safe_load((Layout.default().params / "smoke.yml").read_text(encoding="utf-8"))["notebooks"]
    for name, overrides in doc["notebooks"].items():  # the smoke set's cost bounds for the notebooks
        for key, value in (smoke.get(name) or {}).items():
            overrides.setdefault(key, value)
    sources = available_notebooks(Layout.default().notebooks)
    for name, overrides in doc["notebooks"].items():  # a real store has a single scenario: itself
        for key in notebook_parameters(sources[name]):
            if key.endswith("scenarios"):
                overrides[key] = ["image"]
    path = folder / f"{SET}.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("byo")
    features, manifest = write_example_trident(folder / "cohort")
    pset = params_file(folder, features, manifest, folder / "store")
    layout = Layout.under(folder / "root", sources_from=Layout.default())
    report = run(pset, layout, log=lambda _msg: None)
    return {"layout": layout, "report": report, "store": folder / "store"}


def _outputs_text(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            for kind in ("text/markdown", "text/plain", "text/html"):
                value = out.get("data", {}).get(kind)
                if value:
                    parts.append("".join(value) if isinstance(value, list) else value)
            if out.get("output_type") == "stream":
                parts.append("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
    return "\n".join(parts)


def test_every_notebook_runs_on_the_imported_store(byo_run: dict) -> None:
    layout: Layout = byo_run["layout"]
    assert set(byo_run["report"].actions.values()) == {"executed"}
    assert sorted(p.stem for p in layout.executed.glob("*.ipynb")) == sorted(byo_run["report"].actions)
    voc = store_vocabulary(byo_run["store"])
    assert voc.task == "msi" and voc.primary_scanners == EXAMPLE_SCANNERS and voc.magnifications == (25, 10)


def test_structural_quarto_checks_pass_on_its_outputs(byo_run: dict) -> None:
    from test_quarto_project import test_embedded_cells_have_outputs_and_no_errors, test_embedded_tables_fit_the_page

    test_embedded_cells_have_outputs_and_no_errors(byo_run["layout"])
    test_embedded_tables_fit_the_page(byo_run["layout"])


def test_tables_show_the_task_and_the_stores_scanners(byo_run: dict) -> None:
    executed = byo_run["layout"].executed
    texts = {p.stem: _outputs_text(p) for p in executed.glob("*.ipynb")}
    everything = "\n".join(texts.values())
    assert "MSI AUC" in everything and "MSI-positive share" in texts["01_data"]
    assert "EGFR" not in everything, [k for k, t in texts.items() if "EGFR" in t]
    for scanner in EXAMPLE_SCANNERS:
        assert scanner in texts["01_data"], scanner
    for simulated_name in ("GT450", "S360MD", "hoptimus0-sim"):
        assert simulated_name not in everything, simulated_name
    results = byo_run["layout"].results_dir(SET)
    data = json.loads((results / "data.json").read_text(encoding="utf-8"))
    assert data["vocabulary"]["task"] == "msi" and data["vocabulary"]["two_magnification_scanners"] == ["NanoZoomer S210"]


def test_article_text_names_the_stores_scanners_and_task(byo_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The article's code cells and inline expressions, run on the imported store's results, say
    "imported", name its scanners, magnifications and task, and never call the data simulated."""
    import re

    from test_quarto_project import ARTICLE, TEXT

    from scangen.pipeline.article import ArticleData

    monkeypatch.setattr(Layout, "default", classmethod(lambda cls: byo_run["layout"]))
    # the parameter file lives in the test's folder, not in params/: its description is not under test
    monkeypatch.setattr(ArticleData, "set_description", lambda self, layout=None: "example cohort")
    namespace: dict = {}
    for cell in re.findall(r"```\{python\}\n(.*?)```", TEXT, re.S):
        exec(compile(cell, str(ARTICLE), "exec"), namespace)
    values = [eval(e, namespace) for e in re.findall(r"`\{python\} ([^`]+)`", TEXT)]
    inline = " ".join(str(getattr(v, "data", v)) for v in values)  # Markdown objects: their text
    assert namespace["simulated"] is False and namespace["task"] == "MSI"
    assert "**imported**" in inline and "**simulated**" not in inline and "Simulated data" not in inline
    for scanner in EXAMPLE_SCANNERS:
        assert scanner in inline, scanner
    assert "NanoZoomer S210 at 25x and 10x" in inline and "MSI" in inline
    assert "EGFR" not in inline and "GT450" not in inline


def test_embedding_only_store_runs_notebook_02_and_skips_training_with_a_note(tmp_path: Path) -> None:
    """No task label: 01 imports, 02 runs, 03-06 are skipped (each executed copy says why), the
    pipeline succeeds, `status` sees them up to date, and a training session refuses the store."""
    from scangen.experiments.session import ExperimentSession
    from scangen.pipeline.runner import plan

    features, manifest = write_example_trident(tmp_path / "cohort", task=None, n_task=0, n_multi=6)
    pset = params_file(tmp_path, features, manifest, tmp_path / "store")
    text = pset.read_text(encoding="utf-8").replace("import_options:\n      task: msi", "import_options:\n      task: null")
    assert "task: null" in text
    pset.write_text(text, encoding="utf-8")
    layout = Layout.under(tmp_path / "root", sources_from=Layout.default())
    report = run(pset, layout, log=lambda _msg: None)
    assert report.actions["01_data"] == report.actions["02_scanner_bias"] == "executed"
    training = [n for n in report.actions if n[:2] in ("03", "04", "05", "06")]
    assert training and all(report.actions[n] == "skipped" for n in training)
    for name in training:
        nb = json.loads((layout.executed / f"{name}.ipynb").read_text(encoding="utf-8"))
        note = "".join(nb["cells"][1]["source"])
        assert note.startswith("**Not run:**") and "no slide task label" in note, note
    assert store_vocabulary(tmp_path / "store").task is None
    bias = _outputs_text(layout.executed / "02_scanner_bias.ipynb")
    assert "Tile retrieval n/a: no registered tiles in the store" in bias  # the reason, not a bare dash
    assert all(state.fresh for state in plan(pset, layout)[1])
    with pytest.raises(ValueError, match="embedding-only store"):
        ExperimentSession(tmp_path / "store", tmp_path / "cache")


def test_table1_and_embedding_tables_say_not_available_instead_of_a_dash() -> None:
    import polars as pl

    from scangen import tables
    from scangen.experiments.scanner_bias import MISSING_REGISTERED, missing_notes

    row = {"fm": "my-fm", "auc_mean": 0.7, "auc_lo": 0.6, "auc_hi": 0.8, "scanner_cov_mean": 0.3,
           "scanner_cov_rel_change": None, "mag_cov_mean": float("nan"), "mag_cov_rel_change": None}
    table = pl.DataFrame([{**row, "use_scangen": False}, {**row, "use_scangen": True, "scanner_cov_rel_change": -10.0}])
    shown = tables.table1_display(table)
    assert shown["Mag. CoV ↓"].to_list() == ["n/a", "n/a"] and shown["Mag. CoV change"].to_list() == ["", "n/a"]
    metrics = pl.DataFrame({"fm": ["my-fm"], "robustness_index": [0.5], "ri_missing": [None],
                            "tile_top10": [float("nan")], "tile_missing": [MISSING_REGISTERED]})
    assert tables.scanner_bias_display(metrics)["Tile retrieval top-10 ↑"].to_list() == ["n/a"]
    assert missing_notes(metrics) == f"\n\nTile retrieval n/a: {MISSING_REGISTERED}."
