"""The paper's figures as altair charts, plus static PNG/SVG export with vl-convert.

Notebooks display the interactive chart and also export a static copy into
`results/<set>/figures/` (Quarto's PDF output cannot show altair's HTML). Every chart title says the
data are simulated when they are.

- `umap_chart`: Fig. 3, UMAP of mean WSI embeddings per FM, coloured by scanner and by specimen.
- `cov_auc_chart`: Fig. 1, scanner CoV vs EGFR AUC per FM, an arrow from baseline to ScanGen.
- `ablation_chart`: Fig. 4, CoV gain over baseline against the number of ScanGen scanners.
- `mil_chart`: Table 2 as a chart, AUC and CoV per MIL head with and without ScanGen.

`enable_notebook_charts()` makes notebooks show charts with JupyterLab's own (offline) Vega-Lite 5
renderer, with a PNG beside it for viewers without one (Quarto's notebook pages, GitHub): altair's
default renderer loads its JavaScript from a CDN and fails without internet. `save_chart` keeps the
chart's spec beside the exports and rewrites unchanged bytes when the spec did not change, so
re-running a notebook (interactively or in the pipeline) never invalidates the pipeline's cache.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Sequence

import altair as alt
import polars as pl
import vl_convert as vlc

from scangen.atomic import atomic_write_bytes

from scangen.constants import REAL_MODEL_OF, SCANNERS_40X
from scangen.scan_labels import scanner_label_expr

SCANNER_COLORS = ("#4c78a8", "#9ecae9", "#f58518", "#54a24b", "#e45756", "#b279a2")
"""One colour per 40x scanner (the two Leica Aperio scanners in two blues); 20x scans use grey."""


def _clean(df: pl.DataFrame) -> pl.DataFrame:
    """NaN floats as nulls: vega-lite specs are JSON, which has no NaN."""
    return df.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))


def _sim(title: str, simulated: bool) -> str:
    return f"{title} (simulated data)" if simulated else title


def _fm_label(fm: str) -> str:
    return f"{fm} ({REAL_MODEL_OF[fm]} stand-in)" if fm in REAL_MODEL_OF else fm


def tooltip(field: str, title: str, fmt: str | None = None) -> alt.Tooltip:
    """A tooltip entry with a reader's name and, for numbers, a rounded format (e.g. ".3f")."""
    return alt.Tooltip(field, title=title, format=fmt) if fmt else alt.Tooltip(field, title=title)


def _require(df: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}")


def umap_chart(coords: pl.DataFrame, *, simulated: bool, width: int = 150, height: int = 150,
               columns: int = 3) -> alt.VConcatChart:
    """Fig. 3: one panel per FM, in an upper block coloured by scanner (shape = magnification) and a
    lower block coloured by specimen; each block wraps after `columns` FMs so that five FMs stay
    readable at page width.

    `coords` columns: fm, umap_1, umap_2, scanner, magnification, specimen_id.
    """
    _require(coords, ["fm", "umap_1", "umap_2", "scanner", "magnification", "specimen_id"], "UMAP coordinates")
    data = _clean(coords).with_columns(
        scanner_label_expr().alias("scan")
    )
    scans = [*SCANNERS_40X, "GT450@20x"]
    scan_scale = alt.Scale(domain=scans, range=[*SCANNER_COLORS, "#7f7f7f"])
    blocks = []
    for color in ("scan", "specimen_id"):
        panels = []
        for fm in data["fm"].unique(maintain_order=True).to_list():
            enc = (
                alt.Color("scan:N", scale=scan_scale, title="scanner")
                if color == "scan"
                else alt.Color("specimen_id:N", legend=None, scale=alt.Scale(scheme="category20"))
            )
            panels.append(
                alt.Chart(data.filter(pl.col("fm") == fm), title=_fm_label(fm))
                .mark_point(filled=True, size=28, opacity=0.8)
                .encode(
                    x=alt.X("umap_1:Q", axis=alt.Axis(labels=False, ticks=False, title="UMAP 1"), scale=alt.Scale(zero=False)),
                    y=alt.Y("umap_2:Q", axis=alt.Axis(labels=False, ticks=False, title="UMAP 2"), scale=alt.Scale(zero=False)),
                    color=enc,
                    shape=alt.Shape("magnification:N", title="magnification"),
                    tooltip=[tooltip("fm", "model"), tooltip("specimen_id", "specimen"), tooltip("scanner", "scanner"),
                             tooltip("magnification", "magnification (x)")],
                )
                .properties(width=width, height=height)
            )
        block_title = "coloured by scanner" if color == "scan" else "coloured by specimen"
        rows = [alt.hconcat(*panels[i:i + columns]) for i in range(0, len(panels), columns)]
        block = rows[0] if len(rows) == 1 else alt.vconcat(*rows)
        blocks.append(block.properties(title=alt.TitleParams(block_title, anchor="start", fontSize=12)))
    title = _sim("Mean WSI embeddings, UMAP (cosine), by scanner and by specimen", simulated)
    return alt.vconcat(*blocks, title=title).resolve_scale(color="independent", shape="shared")


def _padded(lo: float, hi: float, frac: float = 0.12) -> tuple[float, float]:
    span = (hi - lo) or max(abs(hi), 1e-3)
    return lo - frac * span, hi + frac * span


def cov_auc_chart(table: pl.DataFrame, *, simulated: bool, width: int = 420, height: int = 320) -> alt.LayerChart:
    """Fig. 1: scanner CoV (x) vs EGFR AUC (y), one arrow per FM from baseline to ScanGen.

    `table` has one row per (fm, use_scangen) with `scanner_cov_mean` and `auc_mean`. Arrow heads are
    wedges rotated in pixel space, so the scales use fixed domains.
    """
    _require(table, ["fm", "use_scangen", "scanner_cov_mean", "auc_mean"], "Table 1")
    table = _clean(table)
    base = table.filter(~pl.col("use_scangen")).select("fm", x0="scanner_cov_mean", y0="auc_mean")
    sg = table.filter(pl.col("use_scangen")).select("fm", x1="scanner_cov_mean", y1="auc_mean")
    seg = base.join(sg, on="fm", how="inner", maintain_order="left")
    if seg.height == 0:
        raise ValueError("Table 1: no FM has both a baseline and a ScanGen row")
    xs = seg["x0"].to_list() + seg["x1"].to_list()
    ys = seg["y0"].to_list() + seg["y1"].to_list()
    xd, yd = _padded(min(xs), max(xs)), _padded(min(ys), max(ys))
    angles = [
        (90.0 - math.degrees(math.atan2((y1 - y0) / (yd[1] - yd[0]) * height, (x1 - x0) / (xd[1] - xd[0]) * width))) % 360.0
        for x0, y0, x1, y1 in seg.select("x0", "y0", "x1", "y1").iter_rows()
    ]
    seg = seg.with_columns(pl.Series("angle", angles), pl.col("fm").map_elements(_fm_label, return_dtype=pl.String).alias("model"))
    x = alt.X("x0:Q", scale=alt.Scale(domain=list(xd)), title="scanner CoV (lower is better)")
    y = alt.Y("y0:Q", scale=alt.Scale(domain=list(yd)), title="EGFR AUC (higher is better)")
    color = alt.Color("model:N", title="foundation model",
                      legend=alt.Legend(orient="bottom", direction="vertical", columns=2, labelLimit=0))
    rule = alt.Chart(seg).mark_rule(strokeWidth=2).encode(x=x, y=y, x2="x1:Q", y2="y1:Q", color=color)
    tips = [tooltip("model", "model"), tooltip("x0", "baseline scanner CoV", ".3f"), tooltip("y0", "baseline AUC", ".3f"),
            tooltip("x1", "ScanGen scanner CoV", ".3f"), tooltip("y1", "ScanGen AUC", ".3f")]
    start = alt.Chart(seg).mark_point(size=70, filled=False).encode(x=x, y=y, color=color, tooltip=tips)
    head = (
        alt.Chart(seg)
        .mark_point(shape="wedge", size=260, filled=True, opacity=1)
        .encode(x=alt.X("x1:Q", scale=alt.Scale(domain=list(xd))), y=alt.Y("y1:Q", scale=alt.Scale(domain=list(yd))),
                angle=alt.Angle("angle:Q", scale=None), color=color, tooltip=tips)
    )
    title = _sim("Scanner CoV vs EGFR AUC: baseline (circle) to ScanGen (arrow head)", simulated)
    return alt.layer(rule, start, head, title=title).properties(width=width, height=height)


def ablation_chart(subsets: pl.DataFrame, by_size: pl.DataFrame, *, simulated: bool, fm: str,
                   width: int = 420, height: int = 300) -> alt.LayerChart:
    """Fig. 4: CoV gain (%) over baseline per subset (points) and its mean per subset size (line)."""
    _require(subsets, ["size", "gain", "name"], "ablation subsets")
    _require(by_size, ["size", "gain_mean"], "ablation by size")
    subsets, by_size = _clean(subsets.drop("subset", strict=False)), _clean(by_size)
    x = alt.X("size:O", title="number of scanners in the ScanGen loss")
    tips = [tooltip("name", "scanners"), tooltip("gain", "CoV gain (%)", ".1f")]
    if "scanner_cov" in subsets.columns:
        tips.append(tooltip("scanner_cov", "scanner CoV", ".3f"))
    pts = alt.Chart(subsets).mark_circle(size=45, opacity=0.55, color="#4c78a8").encode(
        x=x, y=alt.Y("gain:Q", title="scanner CoV gain over baseline (%)"), tooltip=tips
    )
    line = alt.Chart(by_size).mark_line(point=True, color="#e45756", strokeWidth=2.5).encode(
        x=x, y="gain_mean:Q", tooltip=[tooltip("size", "scanners in the loss"), tooltip("gain_mean", "mean CoV gain (%)", ".1f")])
    zero = alt.Chart(pl.DataFrame({"z": [0.0]})).mark_rule(strokeDash=[4, 4], color="grey").encode(y="z:Q")
    title = _sim(f"ScanGen with limited scanners ({_fm_label(fm)}), tested on all six", simulated)
    return alt.layer(zero, pts, line, title=title).properties(width=width, height=height)


def mil_chart(table: pl.DataFrame, *, simulated: bool, fm: str,
              labels: dict[str, str] | None = None) -> alt.HConcatChart:
    """Table 2 as bars: AUC and scanner CoV per MIL head, baseline vs ScanGen, with CI whiskers.

    Heads are named by `labels` (e.g. `mil_table.HEAD_LABELS`; raw ids otherwise) and keep the
    table's order on the axis.
    """
    _require(table, ["head", "use_scangen", "auc_mean", "scanner_cov_mean"], "MIL table")
    labels = labels or {}
    data = _clean(table).with_columns(
        pl.when(pl.col("use_scangen")).then(pl.lit("EGFR + ScanGen")).otherwise(pl.lit("EGFR")).alias("training"),
        pl.col("head").replace_strict(labels, default=pl.col("head"), return_dtype=pl.String).alias("aggregator"),
    )
    order = data["aggregator"].unique(maintain_order=True).to_list()
    x = alt.X("aggregator:N", title=None, sort=order, axis=alt.Axis(labelAngle=0))
    panels = []
    for metric, label in (("auc", "EGFR AUC"), ("scanner_cov", "scanner CoV")):
        tips = [tooltip("aggregator", "MIL aggregator"), tooltip("training", "training"),
                tooltip(f"{metric}_mean", f"{label} (seed mean)", ".3f")]
        bars = alt.Chart(data).mark_bar().encode(
            x=x, xOffset="training:N", y=alt.Y(f"{metric}_mean:Q", title=label),
            color=alt.Color("training:N", title=None, legend=alt.Legend(orient="bottom")), tooltip=tips,
        )
        layers = [bars]
        if f"{metric}_lo" in data.columns:
            layers.append(alt.Chart(data.drop_nulls([f"{metric}_lo", f"{metric}_hi"])).mark_rule().encode(
                x=x, xOffset="training:N", y=f"{metric}_lo:Q", y2=f"{metric}_hi:Q"))
        panels.append(alt.layer(*layers).properties(width=220, height=200))
    return alt.hconcat(*panels, title=_sim(f"MIL heads on {_fm_label(fm)}, with and without ScanGen", simulated))


def sensitivity_chart(table: pl.DataFrame, baseline_cov: float, *, simulated: bool, fm: str) -> alt.HConcatChart:
    """Test scanner CoV of ScanGen as one setting at a time moves (one panel per setting); the dashed
    line is the baseline's CoV, the hollow point the default setting."""
    _require(table, ["parameter", "value", "scanner_cov"], "sensitivity table")
    data = _clean(table)
    default = data.filter(pl.col("parameter") == "default")
    panels = []
    for name in [p for p in data["parameter"].unique(maintain_order=True).to_list() if p != "default"]:
        part = data.filter(pl.col("parameter") == name)
        pts = alt.Chart(part).mark_point(filled=True, size=80).encode(
            x=alt.X("value:N", title=name, axis=alt.Axis(labelAngle=0)), y=alt.Y("scanner_cov:Q", title="test scanner CoV"),
            tooltip=[tooltip("value", name), tooltip("scanner_cov", "test scanner CoV", ".3f"), tooltip("auc", "test AUC", ".3f"),
                     tooltip("val_auc", "validation AUC", ".3f"), tooltip("val_scanner_cov", "validation scanner CoV", ".3f")])
        ref = alt.Chart(pl.DataFrame({"cov": [baseline_cov]})).mark_rule(strokeDash=[4, 4], color="grey").encode(y="cov:Q")
        layers = [ref, pts]
        if default.height:
            layers.append(alt.Chart(default).mark_rule(color="#e45756").encode(y="scanner_cov:Q"))
        panels.append(alt.layer(*layers).properties(width=130, height=200))
    title = _sim(f"ScanGen settings on {_fm_label(fm)}: test CoV (red: defaults, dashed: baseline)", simulated)
    return alt.hconcat(*panels, title=title)


def save_chart(chart: alt.TopLevelMixin, out_dir: Path, name: str, formats: Sequence[str] = ("png", "svg"),
               scale: float = 2.0) -> dict[str, Path]:
    """Export `chart` to `out_dir/<name>.<fmt>` for each format (png, svg) atomically; returns paths.

    The Vega-Lite spec is written beside them (`<name>.vl.json`, with the export scale). When the
    stored spec equals the new one and an export exists, its bytes are written again instead of a
    fresh rasterisation: the same chart always yields byte-identical files, whatever the renderer's
    environment (fonts, library build) in the kernel that re-ran the notebook.
    """
    for fmt in formats:
        if fmt not in ("png", "svg"):
            raise ValueError(f"formats: expected 'png' or 'svg', got {fmt!r}")
    spec = chart.to_json()
    record = json.dumps({"scale": scale, "spec": json.loads(spec)}, sort_keys=True, indent=1) + "\n"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / f"{name}.vl.json"
    unchanged = spec_path.is_file() and spec_path.read_text(encoding="utf-8") == record
    out: dict[str, Path] = {}
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        if unchanged and path.is_file():
            data = path.read_bytes()
        elif fmt == "png":
            data = vlc.vegalite_to_png(spec, scale=scale)
        else:
            data = vlc.vegalite_to_svg(spec).encode()
        atomic_write_bytes(path, data)
        out[fmt] = path
    atomic_write_bytes(spec_path, record.encode("utf-8"))
    return out


VEGALITE_V5_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
NOTEBOOK_RENDERER = "scangen"


def notebook_mimebundle(spec: dict, **_metadata) -> dict[str, object]:
    """Altair renderer: the spec as `application/vnd.vegalite.v5+json`, which JupyterLab renders with
    its bundled Vega (no network), plus a PNG (vl-convert) for viewers that cannot run Vega-Lite.

    The spec is altair's own with its `$schema` set to Vega-Lite 5; the charts of this module use
    nothing that Vega-Lite 5 lacks (the browser test renders every notebook chart in JupyterLab).
    """
    v5 = {**spec, "$schema": VEGALITE_V5_SCHEMA}
    png = base64.b64encode(vlc.vegalite_to_png(json.dumps(spec), scale=1.0)).decode("ascii")
    return {"application/vnd.vegalite.v5+json": v5, "image/png": png, "text/plain": "<altair chart>"}


def enable_notebook_charts() -> None:
    """Show altair charts in notebooks through `notebook_mimebundle` (call once per kernel)."""
    if NOTEBOOK_RENDERER not in alt.renderers.names():
        alt.renderers.register(NOTEBOOK_RENDERER, notebook_mimebundle)
    alt.renderers.enable(NOTEBOOK_RENDERER)
