"""The paper's figures as altair charts, plus static PNG/SVG export with vl-convert.

Notebooks display the interactive chart and also export a static copy into
`results/<set>/figures/` (Quarto's PDF output cannot show altair's HTML). Every chart title says the
data are simulated when they are.

- `umap_chart`: Fig. 3, UMAP of mean WSI embeddings per FM, coloured by scanner and by specimen.
- `cov_auc_chart`: Fig. 1, scanner CoV vs EGFR AUC per FM, an arrow from baseline to ScanGen.
- `ablation_chart`: Fig. 4, CoV gain over baseline against the number of ScanGen scanners.
- `mil_chart`: Table 2 as a chart, AUC and CoV per MIL head with and without ScanGen.
"""

from __future__ import annotations

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


def _require(df: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}")


def umap_chart(coords: pl.DataFrame, *, simulated: bool, width: int = 170, height: int = 170) -> alt.VConcatChart:
    """Fig. 3: one column per FM; top row coloured by scanner (shape = magnification), bottom by specimen.

    `coords` columns: fm, umap_1, umap_2, scanner, magnification, specimen_id.
    """
    _require(coords, ["fm", "umap_1", "umap_2", "scanner", "magnification", "specimen_id"], "UMAP coordinates")
    data = _clean(coords).with_columns(
        scanner_label_expr().alias("scan")
    )
    scans = [*SCANNERS_40X, "GT450@20x"]
    scan_scale = alt.Scale(domain=scans, range=[*SCANNER_COLORS, "#7f7f7f"])
    rows = []
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
                    tooltip=["fm", "specimen_id", "scanner", "magnification"],
                )
                .properties(width=width, height=height)
            )
        rows.append(alt.hconcat(*panels))
    title = _sim("Mean WSI embeddings, UMAP (cosine): coloured by scanner (top) and by specimen (bottom)", simulated)
    return alt.vconcat(*rows, title=title).resolve_scale(color="independent", shape="shared")


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
    color = alt.Color("model:N", title="foundation model")
    rule = alt.Chart(seg).mark_rule(strokeWidth=2).encode(x=x, y=y, x2="x1:Q", y2="y1:Q", color=color)
    start = alt.Chart(seg).mark_point(size=70, filled=False).encode(x=x, y=y, color=color, tooltip=["model", "x0", "y0"])
    head = (
        alt.Chart(seg)
        .mark_point(shape="wedge", size=260, filled=True, opacity=1)
        .encode(x=alt.X("x1:Q", scale=alt.Scale(domain=list(xd))), y=alt.Y("y1:Q", scale=alt.Scale(domain=list(yd))),
                angle=alt.Angle("angle:Q", scale=None), color=color, tooltip=["model", "x1", "y1"])
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
    pts = alt.Chart(subsets).mark_circle(size=45, opacity=0.55, color="#4c78a8").encode(
        x=x, y=alt.Y("gain:Q", title="scanner CoV gain over baseline (%)"), tooltip=["name", "gain", "scanner_cov"]
        if "scanner_cov" in subsets.columns else ["name", "gain"]
    )
    line = alt.Chart(by_size).mark_line(point=True, color="#e45756", strokeWidth=2.5).encode(x=x, y="gain_mean:Q")
    zero = alt.Chart(pl.DataFrame({"z": [0.0]})).mark_rule(strokeDash=[4, 4], color="grey").encode(y="z:Q")
    title = _sim(f"ScanGen with limited scanners ({_fm_label(fm)}), tested on all six", simulated)
    return alt.layer(zero, pts, line, title=title).properties(width=width, height=height)


def mil_chart(table: pl.DataFrame, *, simulated: bool, fm: str) -> alt.HConcatChart:
    """Table 2 as bars: AUC and scanner CoV per MIL head, baseline vs ScanGen, with CI whiskers."""
    _require(table, ["head", "use_scangen", "auc_mean", "scanner_cov_mean"], "MIL table")
    data = _clean(table).with_columns(
        pl.when(pl.col("use_scangen")).then(pl.lit("EGFR + ScanGen")).otherwise(pl.lit("EGFR")).alias("training")
    )
    panels = []
    for metric, label in (("auc", "EGFR AUC"), ("scanner_cov", "scanner CoV")):
        bars = alt.Chart(data).mark_bar().encode(
            x=alt.X("head:N", title=None, sort=data["head"].unique(maintain_order=True).to_list()),
            xOffset="training:N", y=alt.Y(f"{metric}_mean:Q", title=label), color=alt.Color("training:N", title=None),
        )
        layers = [bars]
        if f"{metric}_lo" in data.columns:
            layers.append(alt.Chart(data.drop_nulls([f"{metric}_lo", f"{metric}_hi"])).mark_rule().encode(
                x="head:N", xOffset="training:N", y=f"{metric}_lo:Q", y2=f"{metric}_hi:Q"))
        panels.append(alt.layer(*layers).properties(width=240, height=220))
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
            tooltip=["value", "scanner_cov", "auc", "val_auc", "val_scanner_cov"])
        ref = alt.Chart(pl.DataFrame({"cov": [baseline_cov]})).mark_rule(strokeDash=[4, 4], color="grey").encode(y="cov:Q")
        layers = [ref, pts]
        if default.height:
            layers.append(alt.Chart(default).mark_rule(color="#e45756").encode(y="scanner_cov:Q"))
        panels.append(alt.layer(*layers).properties(width=130, height=200))
    title = _sim(f"ScanGen settings on {_fm_label(fm)}: test CoV (red: defaults, dashed: baseline)", simulated)
    return alt.hconcat(*panels, title=title)


def save_chart(chart: alt.TopLevelMixin, out_dir: Path, name: str, formats: Sequence[str] = ("png", "svg"),
               scale: float = 2.0) -> dict[str, Path]:
    """Export `chart` to `out_dir/<name>.<fmt>` for each format (png, svg) atomically; returns paths."""
    spec = chart.to_json()
    out: dict[str, Path] = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        if fmt == "png":
            data: bytes = vlc.vegalite_to_png(spec, scale=scale)
        elif fmt == "svg":
            data = vlc.vegalite_to_svg(spec).encode()
        else:
            raise ValueError(f"formats: expected 'png' or 'svg', got {fmt!r}")
        path = out_dir / f"{name}.{fmt}"
        atomic_write_bytes(path, data)
        out[fmt] = path
    return out
