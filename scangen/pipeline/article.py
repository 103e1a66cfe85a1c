"""What the paper (`index.qmd` and its sections `paper/_*.qmd`) reads: the published set's result files, and the original paper's
reported numbers to set beside ours.

The article never types a result: its code cells call `ArticleData.load()`, which finds the set
whose notebooks are published in `build/notebooks/` (`active-set.json`) and reads that set's
`results/<set>/*.json`, so embedded figures and numbers in the text always come from the same run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scangen.constants import REAL_MODEL_OF
from scangen.tables import fmt, pipe_table
from scangen.pipeline.layout import Layout
from scangen.pipeline.runner import active_set

PAPER_TABLE1: dict[str, dict[str, tuple[float, float, float]]] = {
    "Phikon": {"baseline": (0.738, 0.389, 0.158), "scangen": (0.768, 0.121, 0.053)},
    "UNI": {"baseline": (0.733, 0.401, 0.116), "scangen": (0.744, 0.318, 0.089)},
    "Virchow": {"baseline": (0.744, 0.443, 0.125), "scangen": (0.758, 0.206, 0.077)},
    "Gigapath": {"baseline": (0.736, 0.450, 0.174), "scangen": (0.770, 0.414, 0.193)},
    "H-Optimus-0": {"baseline": (0.821, 0.324, 0.117), "scangen": (0.835, 0.215, 0.108)},
}
"""Table 1 of Carloni et al. (2025) as printed: (EGFR AUC, scanner CoV, magnification CoV) per FM."""

PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "gap": {"baseline": (0.821, 0.324), "scangen": (0.835, 0.215)},
    "abmil": {"baseline": (0.828, 0.251), "scangen": (0.835, 0.224)},
    "dsmil": {"baseline": (0.834, 0.265), "scangen": (0.828, 0.214)},
    "slotmil": {"baseline": (0.822, 0.338), "scangen": (0.826, 0.227)},
}
"""Table 2 of Carloni et al. (2025), H-Optimus-0 features: (EGFR AUC, scanner CoV) per MIL head."""


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 setting', '3 settings' (`many` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def and_join(items: Any) -> str:
    """'AT2', 'AT2 and GT450', 'AT2, GT450 and P1000' (the text's lists of scanners and tasks)."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def pct(value: Any, digits: int = 1) -> str:
    """A signed percentage, e.g. `-68.9%`."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}%"


@dataclass(frozen=True)
class ArticleData:
    """The published parameter set and its results folder."""

    param_set: str
    results_dir: Path

    @classmethod
    def load(cls, layout: Layout | None = None) -> "ArticleData":
        """The set published in `build/notebooks/`; a clear error if the pipeline never ran."""
        layout = layout or Layout.default()
        record = active_set(layout)
        if record is None:
            raise FileNotFoundError(f"{layout.executed / 'active-set.json'} not found: run "
                                    "`python -m scangen.pipeline run` (or `quarto render`, whose "
                                    "pre-render step runs it) before rendering the paper")
        return cls(record["param_set"], layout.results_dir(record["param_set"]))

    def json(self, name: str) -> dict[str, Any]:
        """`results/<set>/<name>.json`, naming the file when it is missing."""
        path = self.results_dir / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: result file not found; the notebook that writes "
                                    f"{name}.json did not run for set {self.param_set!r}")
        return json.loads(path.read_text(encoding="utf-8"))

    def set_description(self, layout: Layout | None = None) -> str:
        """The published set's one-line `description` from its parameter file."""
        from scangen.pipeline.params import load_param_set

        return load_param_set(self.param_set, layout or Layout.default()).description

    def vocabulary(self) -> dict[str, Any]:
        """The store's own names (`data.json["vocabulary"]`: scanners, primary scanners, magnifications,
        two-magnification scanners, task column), so the text names a user's scanners and task."""
        vocab = self.json("data").get("vocabulary")
        if not isinstance(vocab, dict):
            raise KeyError(f"{self.results_dir / 'data.json'}: no 'vocabulary' entry; rerun notebook 01_data")
        return vocab

    def task(self) -> str:
        """The reader's name of the slide task ("EGFR", "MSI", ...; "task" for an embedding-only store)."""
        from scangen.task_name import display_name

        return display_name(self.vocabulary().get("task"))

    def simulated(self) -> bool:
        """Whether every result JSON of the set says `simulated` (the article's data label)."""
        docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.results_dir.glob("*.json"))
                if p.name != "manifest.json"]
        return bool(docs) and all(doc.get("simulated") is True for doc in docs)


INCLUDE = re.compile(r"^\{\{<\s*include\s+(\S+)\s*>\}\}[ \t]*$", re.M)
"""Quarto's include shortcode on a line of its own."""


def article_source(article: Path) -> str:
    """The article's text with every `{{< include path >}}` replaced by the file's text, recursively.

    As in Quarto, an included file's paths (its own includes, embeds, images) are relative to the
    article's folder, not to the included file (a leading `/` means the same folder here).
    """
    article = Path(article)

    def expand(text: str, seen: tuple[Path, ...]) -> str:
        def one(match: re.Match[str]) -> str:
            target = (article.parent / match.group(1).lstrip("/")).resolve()
            if target in seen:
                raise ValueError(f"{article}: include cycle through {target}")
            if not target.is_file():
                raise FileNotFoundError(f"{article}: included file {match.group(1)} not found ({target})")
            return expand(target.read_text(encoding="utf-8"), seen + (target,))
        return INCLUDE.sub(one, text)

    return expand(article.read_text(encoding="utf-8"), (article.resolve(),))


def table1_comparison_rows(table1: dict[str, Any]) -> list[list[str]]:
    """Rows `[FM, ScanGen, paper AUC, ours AUC, paper CoV, ours CoV, paper mag CoV, ours mag CoV]`.

    `table1` is `results/<set>/table1.json`; simulated FMs are matched to the paper's rows by
    `scangen.constants.REAL_MODEL_OF`. Values only (no relative changes: those are in the table of
    our own runs), so that eight number columns fit the page.
    """
    rows: list[list[str]] = []
    for fm, entry in table1["fms"].items():
        real = entry.get("real_model") or REAL_MODEL_OF.get(fm, fm)
        paper = PAPER_TABLE1.get(real)
        for side in ("baseline", "scangen"):
            ours = entry.get(side)
            if ours is None:
                continue
            theirs = paper[side] if paper else (None, None, None)
            cells = [f"{fm} ({real})" if side == "baseline" else "", "yes" if side == "scangen" else "no"]
            for i, metric in enumerate(("auc", "scanner_cov", "mag_cov")):
                cells += [fmt(theirs[i]), fmt(ours.get(f"{metric}_mean"))]
            rows.append(cells)
    return rows


def table2_comparison_rows(table2: dict[str, Any]) -> list[list[str]]:
    """Rows `[head, ScanGen, paper AUC, ours AUC, paper CoV, ours CoV]` from the MIL results JSON."""
    rows: list[list[str]] = []
    for head, entry in table2["heads"].items():
        paper = PAPER_TABLE2.get(head)
        for side in ("baseline", "scangen"):
            ours = entry.get(side)
            if ours is None:
                continue
            theirs = paper[side] if paper else (None, None)
            rows.append([entry.get("label", head) if side == "baseline" else "",
                         "yes" if side == "scangen" else "no",
                         fmt(theirs[0]), fmt(ours.get("auc_mean")), fmt(theirs[1]), fmt(ours.get("scanner_cov_mean"))])
    return rows


def markdown_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """The article's comparison tables: two text columns, then numbers right-aligned."""
    return pipe_table(header, rows, align or "l" * 2 + "r" * (len(header) - 2))
