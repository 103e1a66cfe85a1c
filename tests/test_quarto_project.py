"""Structure of the Quarto manuscript: config, embeds, cross-references, citations, figures, numbers.

Static checks read `_quarto.yml`, the article `index.qmd` with its included sections `paper/_*.qmd`,
`paper/references.bib` and the source notebooks.
The others use the session's one smoke run of the pipeline into a temporary root (the `smoke_run`
fixture of tests/conftest.py, shared with tests/test_notebooks.py).
Quarto itself is not needed (and not imitated): these are the preconditions of `quarto render`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from scangen import paths
from scangen.pipeline import Layout, load_param_set
from scangen.pipeline.article import INCLUDE, ArticleData, article_source

ROOT = paths.ROOT
CONFIG = yaml.safe_load((ROOT / "_quarto.yml").read_text(encoding="utf-8"))
ARTICLE = ROOT / CONFIG["manuscript"]["article"]
TEXT = article_source(ARTICLE)
"""The article as Quarto sees it: includes expanded."""
BIB = ROOT / CONFIG["bibliography"]
EMBED = re.compile(r"\{\{<\s*embed\s+([^#\s]+)#([\w-]+)(?:\s[^>]*)?>\}\}")
CROSSREF_PREFIXES = ("fig", "tbl", "eq", "sec")


def _code_sources(notebook: Path) -> list[str]:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]


def _labels_in_code(sources: list[str]) -> set[str]:
    return {m for s in sources for m in re.findall(r"^#\|\s*label:\s*([\w-]+)\s*$", s, re.M)}


def _article_labels() -> set[str]:
    cells = re.findall(r"```\{python\}\n(.*?)```", TEXT, re.S)
    return _labels_in_code(cells) | set(re.findall(r"\{#((?:fig|tbl|eq|sec)-[\w-]+)\}", TEXT))


def _embeds() -> list[tuple[Path, str]]:
    """(executed notebook path relative to the repository, label) of every embed in the article."""
    out = []
    for target, label in EMBED.findall(TEXT):
        resolved = (ARTICLE.parent / target).resolve()
        out.append((resolved.relative_to(ROOT.resolve()), label))
    return out


def _prose() -> str:
    """The article without code cells, inline code and math (where `@` never means a citation)."""
    text = re.sub(r"```.*?```", "", TEXT, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\$\$.*?\$\$|\$[^$]*\$", "", text, flags=re.S)


def _citations() -> set[str]:
    keys = set(re.findall(r"(?<![\w.])-?@([A-Za-z][\w:-]*[A-Za-z0-9])", _prose()))
    return {k for k in keys if k.split("-", 1)[0] not in CROSSREF_PREFIXES}


def _crossrefs() -> set[str]:
    keys = set(re.findall(r"(?<![\w.])@((?:fig|tbl|eq|sec)-[\w-]*[A-Za-z0-9])", _prose()))
    return keys


# --- static structure -----------------------------------------------------------------------------

def test_quarto_config_is_a_manuscript_with_prerender_and_formats() -> None:
    project = CONFIG["project"]
    # Quarto resolves `article:` and `notebooks:` against the article's folder: it must be the root
    assert ARTICLE.parent.resolve() == ROOT.resolve(), "the article must sit at the project root"
    assert project["type"] == "manuscript"
    assert "scangen.pipeline run" in project["pre-render"]
    assert project["render"] == [CONFIG["manuscript"]["article"]], "only the article is rendered as a page"
    assert ARTICLE.is_file() and BIB.is_file()
    assert {"html", "typst"} <= set(CONFIG["format"])


def test_article_sections_are_includes_under_paper() -> None:
    """Each section is its own file under paper/, named with a leading `_` so Quarto never renders it
    as a page; every file there is included exactly once."""
    included = INCLUDE.findall(ARTICLE.read_text(encoding="utf-8"))
    assert len(included) >= 8
    assert all(Path(p).parent == Path("paper") and Path(p).name.startswith("_") for p in included), included
    assert len(set(included)) == len(included)
    assert {Path(p).name for p in included} == {p.name for p in (ROOT / "paper").glob("_*.qmd")}


def test_include_expansion(tmp_path: Path) -> None:
    (tmp_path / "paper").mkdir()
    (tmp_path / "index.qmd").write_text("a\n\n{{< include paper/_b.qmd >}}\n\nc\n")
    (tmp_path / "paper" / "_b.qmd").write_text("b1\n\n{{< include /paper/_d.qmd >}}\n")
    (tmp_path / "paper" / "_d.qmd").write_text("d\n")
    assert article_source(tmp_path / "index.qmd") == "a\n\nb1\n\nd\n\n\n\nc\n"
    (tmp_path / "paper" / "_d.qmd").write_text("{{< include paper/_missing.qmd >}}\n")
    with pytest.raises(FileNotFoundError, match="_missing.qmd"):
        article_source(tmp_path / "index.qmd")


def test_manuscript_notebooks_are_the_executed_copies_of_every_set() -> None:
    listed = [Path(item["notebook"]) for item in CONFIG["manuscript"]["notebooks"]]
    executed = paths.EXECUTED_NOTEBOOKS.relative_to(ROOT)
    assert all(p.parent == executed and p.suffix == ".ipynb" for p in listed), listed
    names = [p.stem for p in listed]
    assert all((paths.NOTEBOOKS / f"{n}.ipynb").is_file() for n in names)
    for set_file in sorted(paths.PARAMS.glob("*.yml")):
        assert load_param_set(set_file.stem).names() == names, set_file.name


def test_embeds_point_at_labelled_cells_of_listed_notebooks() -> None:
    listed = {Path(item["notebook"]) for item in CONFIG["manuscript"]["notebooks"]}
    embeds = _embeds()
    assert len(embeds) >= 8
    for notebook, label in embeds:
        assert notebook in listed, f"embed of {notebook} (not in manuscript.notebooks)"
        source = paths.NOTEBOOKS / notebook.name
        assert label in _labels_in_code(_code_sources(source)), f"{source} has no cell labelled {label}"


def test_cross_references_resolve() -> None:
    available = _article_labels() | {label for _, label in _embeds()}
    refs = _crossrefs()
    assert {"fig-umap", "tbl-table1", "eq-cov", "eq-scangen", "eq-total", "tbl-vs-paper"} <= available
    assert refs, "the article cross-references nothing"
    assert refs <= available, f"unresolved cross-references: {sorted(refs - available)}"


def test_citations_exist_in_bibliography_and_every_entry_is_cited() -> None:
    bib_keys = set(re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(encoding="utf-8"), re.M))
    cited = _citations()
    assert len(bib_keys) >= 30
    assert cited <= bib_keys, f"citations missing from {BIB.name}: {sorted(cited - bib_keys)}"
    assert bib_keys <= cited, f"bibliography entries never cited: {sorted(bib_keys - cited)}"


def test_referenced_figure_files_exist() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", _prose())
    for image in images:
        assert (ARTICLE.parent / image).is_file(), f"figure file {image} not found"


def test_equations_follow_the_method_spec() -> None:
    for fragment in (r"\sigma_c", r"\mu_c", r"d_{ij} = 1 - \cos(z_i, z_j)", r"\max(0,\ m - d_{ij})^2",
                     r"\alpha\,\mathcal{L}_{\mathrm{att}} + (1-\alpha)\,\mathcal{L}_{\mathrm{rep}}",
                     r"{|P| + |N|}", r"\lambda\, \mathcal{L}_{\mathrm{ScanGen}}"):
        assert fragment in TEXT, fragment


# --- after a smoke run ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def smoke_layout(smoke_run: dict) -> Layout:
    """The layout of the session's one smoke run (tests/conftest.py's `smoke_run`)."""
    return smoke_run["layout"]


def test_listed_notebooks_exist_after_smoke_run(smoke_layout: Layout) -> None:
    record = json.loads((smoke_layout.executed / "active-set.json").read_text())
    assert record["param_set"] == "smoke"
    for item in CONFIG["manuscript"]["notebooks"]:
        assert (smoke_layout.executed / Path(item["notebook"]).name).is_file(), item["notebook"]


def test_embedded_cells_have_outputs_and_no_errors(smoke_layout: Layout) -> None:
    for notebook, label in _embeds():
        nb = json.loads((smoke_layout.executed / notebook.name).read_text())
        cells = [c for c in nb["cells"] if c["cell_type"] == "code"
                 and label in _labels_in_code(["".join(c["source"])])]
        assert len(cells) == 1, f"{notebook.name}: {len(cells)} cells labelled {label}"
        outputs = cells[0].get("outputs", [])
        assert outputs, f"{notebook.name}#{label} has no output"
        assert not [o for o in outputs if o["output_type"] == "error"], f"{notebook.name}#{label} failed"
        kinds = {kind for o in outputs for kind in o.get("data", {})}
        needed = "image/png" if label.startswith("fig-") else "text/markdown"  # what Typst can embed
        assert needed in kinds, f"{notebook.name}#{label} has no {needed} output"
    for nb_path in smoke_layout.executed.glob("*.ipynb"):
        nb = json.loads(nb_path.read_text())
        assert not [c for c in nb["cells"] if c["cell_type"] == "code"
                    for o in c.get("outputs", []) if o["output_type"] == "error"], nb_path.name


def test_embedded_tables_fit_the_page(smoke_layout: Layout) -> None:
    """Every table the article embeds fits the typeset text width (scangen.tables.fits_page): its
    longest unbreakable cells, side by side, are narrower than the page."""
    from scangen.tables import fits_page

    for notebook, label in _embeds():
        if not label.startswith("tbl-"):
            continue
        nb = json.loads((smoke_layout.executed / notebook.name).read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and label in _labels_in_code(["".join(c["source"])]))
        markdown = "".join("".join(o["data"]["text/markdown"]) for o in cell["outputs"] if "text/markdown" in o.get("data", {}))
        lines = [line.strip().strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("|")]
        header, rows = [c.strip() for c in lines[0]], [[c.strip() for c in row] for row in lines[2:]]
        assert fits_page(header, rows), f"{notebook.name}#{label} is too wide for the page: {header}"


def test_article_numbers_are_computed_from_the_smoke_results(smoke_layout: Layout,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Layout, "default", classmethod(lambda cls: smoke_layout))
    assert ArticleData.load().param_set == "smoke"
    namespace: dict = {}
    for cell in re.findall(r"```\{python\}\n(.*?)```", TEXT, re.S):
        exec(compile(cell, str(ARTICLE), "exec"), namespace)
    inline = re.findall(r"`\{python\} ([^`]+)`", TEXT)
    assert len(inline) >= 20
    for expression in inline:
        value = eval(expression, namespace)
        assert str(value).strip(), expression
    assert namespace["simulated"] is True and namespace["param_set"] == "smoke"


def test_comparison_rows_put_the_paper_beside_our_numbers() -> None:
    from scangen.pipeline.article import fmt, pct, table1_comparison_rows

    doc = {"fms": {"phikon-sim": {
        "real_model": "Phikon",
        "baseline": {"auc_mean": 0.7, "scanner_cov_mean": 0.4, "mag_cov_mean": 0.2},
        "scangen": {"auc_mean": 0.75, "scanner_cov_mean": 0.2, "mag_cov_mean": None},
        "rel_change": {"auc": 7.142857, "scanner_cov": -50.0, "mag_cov": None}}}}
    base, sg = table1_comparison_rows(doc)
    assert base == ["phikon-sim (Phikon)", "no", "0.738", "0.700", "0.389", "0.400", "0.158", "0.200"]
    assert sg == ["", "yes", "0.768", "0.750", "0.121", "0.200", "0.053", "–"]
    assert fmt(float("nan")) == "–" and pct(-68.9) == "-68.9%"
    from scangen.pipeline.article import plural
    assert plural(1, "setting") == "1 setting" and plural(3, "setting") == "3 settings"
