"""The paper rendered by a real Quarto: HTML and PDF exist, every figure and table of the article is
there, nothing is left unresolved and no table overflows its column or the page.

Runs only where `quarto` is on PATH (and `pdftotext` from poppler for the PDF checks); otherwise it
is skipped and says so; the structural tests in tests/test_quarto_project.py run everywhere.
The render uses the session's smoke run (tests/conftest.py's `smoke_run`): the repository's
tracked files and that run's build/, results/ and data/ are copied into a fresh folder, so Quarto's
pre-render step finds every notebook up to date there (cache keys hold no machine paths) and the
developer's checkout is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scangen import paths
from scangen.pipeline.article import article_source

QUARTO = shutil.which("quarto")
PDFTOTEXT = shutil.which("pdftotext")
pytestmark = pytest.mark.skipif(QUARTO is None, reason="quarto is not on PATH: the real render of the paper is "
                                "not checked here (see ../shared/tools/quarto/ or quarto.org to get it)")
LABEL = re.compile(r"(?:#\|\s*label:\s*|\{#|embed [^#\s]+#)((?:fig|tbl)-[\w-]+)")
MARGIN_PT = 90.0
"""Quarto typst's page margin: body text, tables and captions stay inside it."""


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=paths.ROOT, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.split("\0") if p]


@pytest.fixture(scope="session")
def rendered(smoke_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`quarto render` (smoke set) in a copy of the repository holding the smoke run's products."""
    root = tmp_path_factory.mktemp("render") / "scangen"
    for rel in _tracked_files():
        if (paths.ROOT / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(paths.ROOT / rel, root / rel)
    smoke_root = smoke_run["layout"].root
    for folder in ("build", "results", "data"):
        if (smoke_root / folder).is_dir():
            shutil.copytree(smoke_root / folder, root / folder, dirs_exist_ok=True)
    before = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    env = {**os.environ, "SCANGEN_PARAMS": "smoke", "QUARTO_PYTHON": sys.executable, "PYTHONPATH": str(root),
           "SCANGEN_ROOT": str(root), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([QUARTO, "render"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    after = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {"root": root, "proc": proc, "log": proc.stdout + proc.stderr, "new_files": sorted(after - before)}


def _article_labels(root: Path) -> set[str]:
    return set(LABEL.findall(article_source(root / "index.qmd")))


def test_quarto_render_exits_0_with_html_and_pdf(rendered: dict) -> None:
    assert rendered["proc"].returncode == 0, rendered["log"][-4000:]
    out = rendered["root"] / "_manuscript"
    assert (out / "index.html").is_file() and (out / "index.pdf").stat().st_size > 10_000
    assert "up to date (cached)" in rendered["log"], "the pre-render step recomputed the moved smoke run"


def test_render_writes_only_build_products(rendered: dict) -> None:
    products = ("_manuscript/", ".quarto/", "build/", "results/", "data/cache/", "data/simulated/")
    stray = [p for p in rendered["new_files"] if not p.startswith(products)]
    assert not stray, f"quarto render wrote into source folders: {stray}"
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=paths.ROOT, text=True,
                             input="\n".join(p for p in rendered["new_files"]), capture_output=True).stdout.split()
    assert set(ignored) == set(rendered["new_files"]), "a render product is not in .gitignore"


def test_typst_reports_no_warning(rendered: dict) -> None:
    warnings = [line for line in rendered["log"].splitlines()
                if re.search(r"\bwarning\b", line, re.I) and "Kernel is running over TCP" not in line]
    assert not warnings, "\n".join(warnings)


def test_html_has_every_figure_and_table(rendered: dict) -> None:
    html = (rendered["root"] / "_manuscript" / "index.html").read_text(encoding="utf-8")
    labels = _article_labels(rendered["root"])
    assert len(labels) >= 10
    missing = [label for label in sorted(labels) if f'id="{label}"' not in html]
    assert not missing, f"HTML lacks {missing}"
    assert "?@" not in html and "cdn.jsdelivr.net/npm/mathjax" not in html


@pytest.fixture(scope="session")
def pdf_words(rendered: dict) -> list[list[tuple[float, float, float, float, str]]]:
    """Per page, (xMin, yMin, xMax, yMax, text) of every word of the PDF (pdftotext -bbox)."""
    if PDFTOTEXT is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: the PDF's text is not checked")
    pdf = rendered["root"] / "_manuscript" / "index.pdf"
    xml = subprocess.run([PDFTOTEXT, "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    xml = re.sub(r"<!DOCTYPE[^>]*>", "", xml).replace('xmlns="http://www.w3.org/1999/xhtml"', "")
    pages = []
    for page in ET.fromstring(xml).iter("page"):
        words = [(float(w.get("xMin")), float(w.get("yMin")), float(w.get("xMax")), float(w.get("yMax")), w.text or "")
                 for w in page.iter("word")]
        pages.append((float(page.get("width")), words))
    return pages


def test_pdf_resolves_every_reference_and_shows_every_figure_and_table(rendered: dict, pdf_words: list) -> None:
    text = " ".join(w[4] for _, words in pdf_words for w in words)
    assert "??" not in text and "?@" not in text
    labels = _article_labels(rendered["root"])
    n_fig, n_tbl = (len([lab for lab in labels if lab.startswith(p)]) for p in ("fig-", "tbl-"))
    captions = re.findall(r"\b(Figure|Table) (\d+):", text)
    assert {int(n) for kind, n in captions if kind == "Figure"} == set(range(1, n_fig + 1))
    assert {int(n) for kind, n in captions if kind == "Table"} == set(range(1, n_tbl + 1))
    assert text.count("References") == 1 and "Bibliography" not in text


def _is_math(word: str) -> bool:
    """Typeset maths (italic letters from the mathematical alphanumerics, combining accents such as
    a hat) stacks glyphs on purpose; those are not overlaps."""
    return any(unicodedata.combining(ch) or 0x1D400 <= ord(ch) <= 0x1D7FF for ch in word)


def test_pdf_text_stays_inside_the_margins_and_never_overlaps(pdf_words: list) -> None:
    """A table cell too narrow for its content shows as text beyond the margin or over its
    neighbour; both are caught from the words' boxes."""
    problems = []
    for number, (width, words) in enumerate(pdf_words, start=1):
        for x0, y0, x1, _, word in words:
            if x0 < MARGIN_PT - 3 or x1 > width - MARGIN_PT + 3:
                problems.append(f"page {number}: {word!r} outside the text block ({x0:.0f}-{x1:.0f} pt)")
        rows: dict[int, list] = {}
        for w in words:
            rows.setdefault(round(w[1]), []).append(w)
        for row in rows.values():
            row.sort()
            for a, b in zip(row, row[1:]):
                if b[0] < a[2] - 1.0 and not (_is_math(a[4]) or _is_math(b[4])):
                    problems.append(f"page {number}: {a[4]!r} overlaps {b[4]!r}")
    assert not problems, "\n".join(problems[:20])
