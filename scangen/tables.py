"""Paper-style formatting of result tables as Markdown (renders in HTML and in Quarto's typst PDF).

Numbers are formatted, never changed: "0.768 [0.70, 0.83]" is a seed mean with its interval; a
relative change against the baseline sits in its own column ("-68.9%").

Generic helpers any new table can use:
- `human_header("egfr_positive_share")` -> "EGFR-positive share" (snake_case to a reader's header);
- `display(df)`: every column as rounded text under human headers (`readable(df)` keeps numbers, for
  notebook views);
- `to_markdown(df)`: a pipe table whose column widths follow the content (`column_widths`), so that
  Quarto's typst/HTML output wraps headers and text between words and never squeezes a number or a
  name into a column narrower than itself; numbers are right-aligned. `fits_page` says whether a
  table's unbreakable content fits the text width at all (if not: fewer columns).
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import polars as pl

from scangen.constants import REAL_MODEL_OF


def fmt(x: Any, digits: int = 3) -> str:
    """A number with `digits` decimals, an en dash for missing/NaN; anything else as text."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.{digits}f}"


def fmt_ci(mean: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """'mean [lo, hi]', or just the mean when the interval is missing."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"


def fmt_change(value: float | None, change: float | None, digits: int = 3) -> str:
    """'value (+x.x%)' with the relative change in percent, or the value alone."""
    if change is None or not math.isfinite(change):
        return fmt(value, digits)
    return f"{fmt(value, digits)} ({change:+.1f}%)"


def fmt_pct(change: float | None, digits: int = 1) -> str:
    """A signed percentage ('-68.9%'), an en dash when missing: a change in its own column."""
    if change is None or not math.isfinite(change):
        return "–"
    return f"{change:+.{digits}f}%"


ACRONYMS = {"auc": "AUC", "cov": "CoV", "egfr": "EGFR", "fm": "FM", "wsi": "WSI", "sd": "SD", "id": "ID",
            "ri": "RI", "mil": "MIL", "umap": "UMAP", "ci": "CI", "gap": "GAP"}
WORDS = {"mag": "magnification", "prob": "probabilities", "val": "validation", "n": "number of",
         "lo": "lower", "hi": "upper", "pct": "%", "rel": "relative"}


def human_header(name: str) -> str:
    """A reader's header for a snake_case column name ('n_slides' -> 'Slides', 'egfr_positive_share'
    -> 'EGFR-positive share', 'scanner_cov_prob' -> 'Scanner CoV probabilities'); a name that
    already has spaces or capitals is returned unchanged."""
    if " " in name or name != name.lower():
        return name
    parts = [p for p in name.split("_") if p]
    if len(parts) > 1 and parts[0] == "n":
        parts = parts[1:]  # n_slides: a count is named by what it counts
    words = [ACRONYMS.get(p, WORDS.get(p, p)) for p in parts]
    text = " ".join(words)
    text = re.sub(r"\b(EGFR) (positive|negative)\b", r"\1-\2", text)
    return text[:1].upper() + text[1:] if text[:1].islower() else text


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return fmt(value, digits)
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v, digits) for v in value)
    return str(value)


def display(df: pl.DataFrame, digits: int = 3, headers: dict[str, str] | None = None) -> pl.DataFrame:
    """Every column as text for a paper table: floats with `digits` decimals (en dash for
    missing/NaN), lists joined, headers from `headers` or `human_header`."""
    headers = headers or {}
    return pl.DataFrame({headers.get(c, human_header(c)): [_cell(v, digits) for v in df[c].to_list()]
                         for c in df.columns}, schema={headers.get(c, human_header(c)): pl.String for c in df.columns})


def readable(df: pl.DataFrame, digits: int = 3, headers: dict[str, str] | None = None) -> pl.DataFrame:
    """The frame for a notebook view: floats rounded to `digits`, human headers; values stay numbers."""
    headers = headers or {}
    rounded = df.with_columns(pl.col(pl.Float32, pl.Float64).round(digits))
    return rounded.rename({c: headers.get(c, human_header(c)) for c in df.columns})


NUMBER = re.compile(r"^[–+\-−]?\d[\d.,]*(e[+-]?\d+)?%?( \[.*\])?( \(.*\))?$|^–$")
TEXT_WIDTH_PT = 432.0
"""Width of the typeset text block: US letter (612 pt) less Quarto typst's 90 pt margins."""
CHAR_PT = 4.9
"""Generous width of one character of table text (9 pt, `_quarto.yml` sets it for typst tables)."""
HEADER_FACTOR = 1.12
"""Bold header text is this much wider."""
INSET_PT = 10.0
"""Horizontal inset of a typst table cell (5 pt either side)."""
NARROW_TABLE = 0.6
"""Tables whose natural width is at most this fraction of the text keep content-sized columns."""


def _longest_token(text: str) -> int:
    return max((len(tok) for tok in text.split()), default=0)


def _column_needs(header: Sequence[str], rows: Sequence[Sequence[str]]) -> tuple[list[float], list[float]]:
    """Per column, in points: (least width: its longest unbreakable token of a cell or header word;
    wanted width: its longest cell on one line)."""
    need, want = [], []
    for j, head in enumerate(header):
        cells = [row[j] for row in rows]
        least = max([_longest_token(c) * CHAR_PT for c in cells] + [_longest_token(head) * CHAR_PT * HEADER_FACTOR])
        full = max([len(c) * CHAR_PT for c in cells] + [least])
        need.append(least + INSET_PT)
        want.append(full + INSET_PT)
    return need, want


def column_widths(header: Sequence[str], rows: Sequence[Sequence[str]], width: float = TEXT_WIDTH_PT) -> list[float]:
    """Column widths in points: each at least its longest unbreakable token (so nothing overflows
    or is hyphenated), the space left shared out towards each column's longest cell."""
    need, want = _column_needs(header, rows)
    spare, extra = width - sum(need), [w - n for w, n in zip(want, need)]
    if spare <= 0 or not sum(extra):
        return need
    grow = min(1.0, spare / sum(extra))
    return [n + e * grow for n, e in zip(need, extra)]


def fits_page(header: Sequence[str], rows: Sequence[Sequence[str]], width: float = TEXT_WIDTH_PT) -> bool:
    """Whether the table's unbreakable content fits the text width (otherwise: fewer columns)."""
    return sum(_column_needs(header, rows)[0]) <= width


def _align(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """'r' for columns whose cells are all numbers (or missing), else 'l'."""
    out = []
    for j, _ in enumerate(header):
        cells = [r[j] for r in rows if r[j] not in ("", "–")]
        out.append("r" if cells and all(NUMBER.match(c) for c in cells) else "l")
    return out


def to_markdown(df: pl.DataFrame, align: Sequence[str] | None = None) -> str:
    """A pipe table of the frame's values as strings (`align` per column: 'l', 'r' or 'c'; default:
    numbers right, text left), with content-based column widths (`column_widths`)."""
    rows = [["" if v is None else str(v) for v in row] for row in df.iter_rows()]
    return pipe_table(df.columns, rows, align)


def pipe_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None,
               widths: Sequence[float] | None = None) -> str:
    """A Markdown pipe table (Quarto renders it in HTML and Typst alike); `align` 'l', 'r' or 'c' per
    column (default from the content). The separator's dashes carry the relative column widths
    (`column_widths` unless given): pandoc uses them whenever a row is longer than its line width, so
    rows are padded to that width and wide tables always get them."""
    header = [h.replace("|", "\\|") for h in header]
    rows = [[c.replace("|", "\\|") for c in row] for row in rows]
    align = list(align) if align is not None else _align(header, rows)
    if len(align) != len(header):
        raise ValueError(f"align: expected {len(header)} entries, got {len(align)}")
    widths = list(widths) if widths is not None else column_widths(header, rows)
    if len(widths) != len(header):
        raise ValueError(f"widths: expected {len(header)} entries, got {len(widths)}")
    if sum(widths) <= NARROW_TABLE * TEXT_WIDTH_PT:
        dashes = [3] * len(widths)  # short lines: pandoc sizes the columns to their content
    else:  # 200 dashes, above pandoc's 72 columns: the widths apply, as fractions of the text width
        dashes = [max(3, int(round(200 * w / sum(widths)))) for w in widths]
    marks = {"l": lambda n: ":" + "-" * (n - 1), "r": lambda n: "-" * (n - 1) + ":",
             "c": lambda n: ":" + "-" * (n - 2) + ":"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a](d) for a, d in zip(align, dashes)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def model_label(fm: str) -> str:
    """'phikon-sim (Phikon)': a simulated FM with the real model it stands in for."""
    return f"{fm} ({REAL_MODEL_OF[fm]})" if fm in REAL_MODEL_OF else fm


def table1_display(table: pl.DataFrame) -> pl.DataFrame:
    """The paper's Table 1 layout: model, ScanGen yes/no, AUC [95% interval], scanner CoV and its
    change against the baseline, magnification CoV and its change (changes in their own columns)."""
    rows = []
    for r in table.iter_rows(named=True):
        sg = bool(r["use_scangen"])
        rows.append({
            "Model": model_label(r["fm"]) if not sg else "",
            "ScanGen": "yes" if sg else "no",
            "EGFR AUC ↑ [95% interval]": fmt_ci(r["auc_mean"], r["auc_lo"], r["auc_hi"]),
            "Scanner CoV ↓": fmt(r["scanner_cov_mean"]),
            "Scanner CoV change": fmt_pct(r.get("scanner_cov_rel_change")) if sg else "",
            "Mag. CoV ↓": fmt(r["mag_cov_mean"]),
            "Mag. CoV change": fmt_pct(r.get("mag_cov_rel_change")) if sg else "",
        })
    return pl.DataFrame(rows)


def table1_agreement_display(table: pl.DataFrame) -> pl.DataFrame:
    """Table 1's runs by scale-free agreement measures: scanner CoV on probabilities, scanner share
    (within-specimen spread / spread of specimen means), flip rate, and the number of seeds."""
    return pl.DataFrame([{
        "Model": model_label(r["fm"]) if not r["use_scangen"] else "",
        "ScanGen": "yes" if r["use_scangen"] else "no",
        "Scanner CoV on probabilities ↓": fmt(r["scanner_cov_prob_mean"]),
        "Scanner share ↓": fmt(r["scanner_share_mean"]),
        "Flip rate ↓": fmt(r["flip_rate_mean"]),
        "Seeds": str(r["n_seeds"]),
    } for r in table.iter_rows(named=True)])


def mil_display(table: pl.DataFrame, labels: dict[str, str]) -> pl.DataFrame:
    """The paper's Table 2, one row per MIL aggregator and training (EGFR, EGFR + ScanGen): AUC
    [95% interval], scanner CoV and its change against the baseline (five columns for any number
    of heads, so the table fits the page)."""
    rows = []
    for h in table["head"].unique(maintain_order=True).to_list():
        for sg in (False, True):
            part = table.filter((pl.col("head") == h) & (pl.col("use_scangen") == sg))
            if part.height == 0:
                continue
            r = part.row(0, named=True)
            rows.append({
                "MIL aggregator": labels.get(h, h) if not sg else "",
                "Training": "EGFR + ScanGen" if sg else "EGFR",
                "EGFR AUC ↑ [95% interval]": fmt_ci(r["auc_mean"], r["auc_lo"], r["auc_hi"]),
                "Scanner CoV ↓": fmt(r["scanner_cov_mean"]),
                "Scanner CoV change": fmt_pct(r.get("scanner_cov_rel_change")) if sg else "",
            })
    return pl.DataFrame(rows)


def ablation_display(by_size: pl.DataFrame) -> pl.DataFrame:
    """Per subset size: number of subsets, CoV gain (mean, sd, range) and mean scanner-share gain, in percent."""
    return pl.DataFrame([
        {"Scanners in ScanGen": str(r["size"]), "Subsets": str(r["n_subsets"]),
         "Mean CoV gain (%)": fmt(r["gain_mean"], 1), "SD (%)": fmt(r["gain_sd"], 1),
         "Range (%)": f"{fmt(r['gain_min'], 1)} to {fmt(r['gain_max'], 1)}",
         **({"Mean share gain (%)": fmt(r["share_gain_mean"], 1)} if "share_gain_mean" in r else {})}
        for r in by_size.iter_rows(named=True)
    ])


def origin(df: pl.DataFrame, simulated: bool) -> pl.DataFrame:
    """Rename the first column to say where the data come from, e.g. 'Embedding (simulated data)'."""
    first = df.columns[0]
    return df.rename({first: f"{first} ({'simulated' if simulated else 'real'} data)"})


def scanner_bias_display(metrics: pl.DataFrame) -> pl.DataFrame:
    """Embedding-level robustness per FM; published values beside ours where the table has them."""
    def ours_and_published(value: Any, column: str, r: dict) -> str:
        published = r.get(column) if column in metrics.columns else None
        return fmt(value) if published is None else f"{fmt(value)} ({fmt(published)})"

    published = any(c in metrics.columns for c in ("published_ri", "published_top10"))
    tag = " (published)" if published else ""
    rows = []
    for r in metrics.iter_rows(named=True):
        rows.append({
            "Model": model_label(r["fm"]),
            f"Robustness index ↑{tag}": ours_and_published(r.get("robustness_index"), "published_ri", r),
            f"Tile retrieval top-10 ↑{tag}": ours_and_published(r.get("tile_top10"), "published_top10", r),
            "WSI retrieval top-1 ↑": fmt(r.get("wsi_top1")),
            "Scanner probe accuracy ↓ (chance)": (f"{fmt(r.get('scanner_predictability'))} "
                                                  f"({fmt(r.get('predictability_chance'), 2)})"),
            "Silhouette, scanner / specimen": (f"{fmt(r.get('umap_silhouette_scanner'), 2)} / "
                                               f"{fmt(r.get('umap_silhouette_specimen'), 2)}"),
        })
    return pl.DataFrame(rows)


def best_worst_display(best_worst: dict) -> pl.DataFrame:
    """One row per scanner: times in a best subset and in a worst subset (sizes counted)."""
    best, worst = best_worst["scanner_counts"]["best"], best_worst["scanner_counts"]["worst"]
    sizes = ", ".join(str(k) for k in best_worst["sizes_counted"])
    return pl.DataFrame([
        {"Scanner": s, f"In best subsets (sizes {sizes})": str(best.get(s, 0)),
         f"In worst subsets (sizes {sizes})": str(worst.get(s, 0))}
        for s in sorted(set(best) | set(worst), key=lambda s: (-best.get(s, 0), worst.get(s, 0), s))
    ])


def sensitivity_display(table: pl.DataFrame) -> pl.DataFrame:
    """One row per (setting, value): validation (Val.) AUC and CoV, then test AUC, scanner CoV of
    logits and of probabilities (prob.), magnification (Mag.) CoV; short headers keep eight number
    columns on the page."""
    return pl.DataFrame([
        {"Setting": r["parameter"], "Value": _cell(r["value"], 3), "Val. AUC ↑": fmt(r["val_auc"]),
         "Val. CoV ↓": fmt(r["val_scanner_cov"]), "Test AUC ↑": fmt(r["auc"]),
         "Test CoV ↓": fmt(r["scanner_cov"]), "Test CoV, prob. ↓": fmt(r["scanner_cov_prob"]),
         "Mag. CoV ↓": fmt(r["mag_cov"])}
        for r in table.iter_rows(named=True)
    ])
