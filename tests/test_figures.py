"""Figures and display tables on synthetic inputs: chart structure, arrow geometry, NaN handling,
static PNG/SVG export, and the paper-style number formatting."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from scangen import figures, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table1() -> pl.DataFrame:
    return pl.DataFrame({
        "fm": ["phikon-sim", "phikon-sim", "uni-sim", "uni-sim"],
        "use_scangen": [False, True, False, True],
        "auc_mean": [0.70, 0.70, 0.72, 0.80], "auc_lo": [0.6, 0.6, 0.6, 0.7], "auc_hi": [0.8, 0.8, 0.8, 0.9],
        "scanner_cov_mean": [0.4, 0.2, 0.3, 0.3], "scanner_cov_lo": [float("nan")] * 4, "scanner_cov_hi": [float("nan")] * 4,
        "mag_cov_mean": [0.1, 0.05, 0.2, 0.1], "scanner_cov_prob_mean": [0.12, 0.06, 0.1, 0.1], "scanner_share_mean": [2.0, 1.0, 1.5, 0.9], "flip_rate_mean": [0.2, 0.1, 0.3, 0.2], "n_seeds": [1] * 4,
        "scanner_cov_rel_change": [None, -50.0, None, 0.0], "mag_cov_rel_change": [None, -50.0, None, -50.0],
    })


def _layer_data(chart, index: int) -> list[dict]:
    spec = json.loads(chart.to_json())
    data = spec["layer"][index].get("data") or spec["data"]  # altair hoists data shared by all layers
    name = data["name"]
    return spec["datasets"][name]


def test_cov_auc_arrows_point_from_baseline_to_scangen():
    chart = figures.cov_auc_chart(_table1(), simulated=True)
    spec = json.loads(chart.to_json())
    assert "simulated" in spec["title"]
    rows = {r["fm"]: r for r in _layer_data(chart, 2)}
    # phikon: CoV 0.4 -> 0.2 at equal AUC: the arrow points left (270 degrees clockwise from up)
    assert rows["phikon-sim"]["angle"] == pytest.approx(270.0)
    # uni: equal CoV, AUC up: the arrow points up
    assert rows["uni-sim"]["angle"] % 360 == pytest.approx(0.0)
    assert rows["uni-sim"]["x0"] == 0.3 and rows["uni-sim"]["y1"] == 0.8
    with pytest.raises(ValueError, match="missing columns"):
        figures.cov_auc_chart(_table1().drop("auc_mean"), simulated=True)
    with pytest.raises(ValueError, match="both a baseline"):
        figures.cov_auc_chart(_table1().filter(pl.col("use_scangen")), simulated=True)


def test_umap_chart_panels_per_fm_and_colouring():
    coords = pl.DataFrame({
        "fm": ["phikon-sim"] * 4 + ["uni-sim"] * 4, "umap_1": [0.0, 1.0, 2.0, float("nan")] * 2,
        "umap_2": [1.0, 0.0, 2.0, 3.0] * 2, "scanner": ["AT2", "GT450", "GT450", "B300"] * 2,
        "magnification": [40, 40, 20, 40] * 2, "specimen_id": ["a", "a", "a", "b"] * 2,
    })
    chart = figures.umap_chart(coords, simulated=False)
    spec = json.loads(chart.to_json())
    assert "simulated" not in spec["title"]
    assert len(spec["vconcat"]) == 2 and all(len(row["hconcat"]) == 2 for row in spec["vconcat"])
    assert spec["vconcat"][0]["hconcat"][0]["encoding"]["color"]["field"] == "scan"
    assert spec["vconcat"][1]["hconcat"][0]["encoding"]["color"]["field"] == "specimen_id"
    scans = {r["scan"] for d in spec["datasets"].values() for r in d}
    assert "GT450@20x" in scans and None in {r["umap_1"] for d in spec["datasets"].values() for r in d}


def test_save_chart_writes_png_and_svg(tmp_path: Path):
    sub = pl.DataFrame({"name": ["AT2+GT450", "AT2+B300", "AT2+GT450+B300"], "size": [2, 2, 3],
                        "gain": [10.0, 30.0, float("nan")], "subset": [["AT2", "GT450"], ["AT2", "B300"], ["AT2", "GT450", "B300"]]})
    by_size = pl.DataFrame({"size": [2, 3], "gain_mean": [20.0, float("nan")]})
    chart = figures.ablation_chart(sub, by_size, simulated=True, fm="uni-sim")
    out = figures.save_chart(chart, tmp_path / "figs", "fig4")
    assert out["png"].read_bytes()[:8] == PNG_MAGIC
    assert out["svg"].read_text().lstrip().startswith("<svg")
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["fig4.png", "fig4.svg", "fig4.vl.json"]
    with pytest.raises(ValueError, match="formats"):
        figures.save_chart(chart, tmp_path, "x", formats=("pdf",))


def test_save_chart_keeps_bytes_for_an_unchanged_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Re-exporting the same chart (e.g. a notebook re-run in JupyterLab) rewrites identical bytes
    without rasterising again; a changed chart is rendered anew."""
    chart = figures.ablation_chart(pl.DataFrame({"name": ["A+B"], "size": [2], "gain": [1.0]}),
                                   pl.DataFrame({"size": [2], "gain_mean": [1.0]}), simulated=True, fm="uni-sim")
    first = {k: p.read_bytes() for k, p in figures.save_chart(chart, tmp_path, "f").items()}
    monkeypatch.setattr(figures.vlc, "vegalite_to_png", lambda *a, **k: pytest.fail("re-rasterised"))
    again = {k: p.read_bytes() for k, p in figures.save_chart(chart, tmp_path, "f").items()}
    assert again == first
    with pytest.raises(pytest.fail.Exception, match="re-rasterised"):
        figures.save_chart(chart.properties(width=100), tmp_path, "f")


def test_notebook_renderer_is_offline_vegalite5_with_png():
    chart = figures.cov_auc_chart(_table1(), simulated=True)
    bundle = figures.notebook_mimebundle(chart.to_dict())
    assert bundle["application/vnd.vegalite.v5+json"]["$schema"].endswith("/vega-lite/v5.json")
    assert __import__("base64").b64decode(bundle["image/png"])[:8] == PNG_MAGIC
    figures.enable_notebook_charts()
    assert "application/vnd.vegalite.v5+json" in chart._repr_mimebundle_()


def test_tooltips_have_readable_titles_and_rounded_numbers():
    spec = json.loads(figures.cov_auc_chart(_table1(), simulated=True).to_json())
    tips = spec["layer"][1]["encoding"]["tooltip"]
    assert {t["title"] for t in tips} >= {"model", "baseline scanner CoV", "ScanGen AUC"}
    assert all(t.get("format") == ".3f" for t in tips if t["field"] != "model")


def test_mil_chart_names_heads_in_table_order():
    t = pl.DataFrame({"head": ["gap", "gap", "dsmil", "dsmil", "abmil", "abmil"], "use_scangen": [False, True] * 3,
                      "auc_mean": [0.7] * 6, "scanner_cov_mean": [0.3] * 6})
    spec = json.loads(figures.mil_chart(t, simulated=True, fm="uni-sim", labels={"gap": "GAP", "dsmil": "DS-MIL"}).to_json())
    x = spec["hconcat"][0]["layer"][0]["encoding"]["x"]
    assert x["field"] == "aggregator" and x["sort"] == ["GAP", "DS-MIL", "abmil"]


def test_mil_chart_exports_with_missing_intervals(tmp_path: Path):
    t = pl.DataFrame({"head": ["gap", "gap", "abmil", "abmil"], "use_scangen": [False, True, False, True],
                      "auc_mean": [0.7, 0.72, 0.71, 0.7], "auc_lo": [0.6, 0.6, float("nan"), 0.6], "auc_hi": [0.8, 0.8, float("nan"), 0.8],
                      "scanner_cov_mean": [0.3, 0.2, 0.25, 0.2], "scanner_cov_lo": [float("nan")] * 4, "scanner_cov_hi": [float("nan")] * 4})
    out = figures.save_chart(figures.mil_chart(t, simulated=True, fm="uni-sim"), tmp_path, "mil", formats=("png",))
    assert out["png"].read_bytes()[:8] == PNG_MAGIC


def test_number_formatting():
    assert tables.fmt_change(0.121, -68.89) == "0.121 (-68.9%)"
    assert tables.fmt_change(0.193, 10.9) == "0.193 (+10.9%)"
    assert tables.fmt_change(0.3, None) == "0.300"
    assert tables.fmt_ci(0.768, 0.70, 0.83) == "0.768 [0.70, 0.83]"
    assert tables.fmt_ci(0.768, float("nan"), float("nan")) == "0.768"
    assert tables.fmt(float("nan")) == "–" and tables.fmt(None) == "–"


def test_ablation_display_adds_share_gain_when_present():
    by_size = pl.DataFrame({"size": [2], "n_subsets": [15], "gain_mean": [-12.5], "gain_sd": [3.0],
                            "gain_min": [-20.0], "gain_max": [-5.0]})
    plain = tables.ablation_display(by_size)
    assert plain.columns == ["Scanners in ScanGen", "Subsets", "Mean CoV gain (%)", "SD (%)", "Range (%)"]
    assert plain.row(0) == ("2", "15", "-12.5", "3.0", "-20.0 to -5.0")
    with_share = tables.ablation_display(by_size.with_columns(share_gain_mean=pl.lit(22.4)))
    assert with_share["Mean share gain (%)"].to_list() == ["22.4"]


def test_table_layouts_and_markdown():
    disp = tables.table1_display(_table1())
    assert disp.height == 4 and disp["ScanGen"].to_list() == ["no", "yes", "no", "yes"]
    assert disp["Model"].to_list() == ["phikon-sim (Phikon)", "", "uni-sim (UNI)", ""]
    assert disp["Scanner CoV ↓"][1] == "0.200" and disp["Scanner CoV change"].to_list() == ["", "-50.0%", "", "+0.0%"]
    agree = tables.table1_agreement_display(_table1())
    assert agree["Scanner CoV on probabilities ↓"].to_list() == ["0.120", "0.060", "0.100", "0.100"]
    assert agree["Scanner share ↓"].to_list() == ["2.000", "1.000", "1.500", "0.900"]
    md = tables.to_markdown(tables.origin(disp, True))
    lines = md.splitlines()
    assert lines[0].startswith("| Model (simulated data) |") and len(lines) == 2 + 4
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    with pytest.raises(ValueError, match="align"):
        tables.to_markdown(disp, align=["l"])
    mil = tables.mil_display(_table1().rename({"fm": "head"}), {"phikon-sim": "P"})
    assert mil["MIL aggregator"].to_list() == ["P", "", "uni-sim", ""]
    assert mil["Training"].to_list() == ["EGFR", "EGFR + ScanGen"] * 2 and mil.width == 5
    bw = {"scanner_counts": {"best": {"GT450": 2, "AT2": 0}, "worst": {"GT450": 0, "AT2": 2}}, "sizes_counted": [2, 3]}
    counts = tables.best_worst_display(bw)
    assert counts["Scanner"].to_list() == ["GT450", "AT2"]
    assert counts.columns[1] == "In best subsets (sizes 2, 3)"


def test_human_headers_and_rounding():
    assert tables.human_header("egfr_positive_share") == "EGFR-positive share"
    assert tables.human_header("n_slides") == "Slides" and tables.human_header("mag_cov") == "Magnification CoV"
    assert tables.human_header("Scanner CoV ↓") == "Scanner CoV ↓"
    df = pl.DataFrame({"cohort": ["task"], "n_slides": [12], "egfr_positive_share": [0.16666666666666666],
                       "auc": [float("nan")]})
    assert tables.display(df).row(0) == ("task", "12", "0.167", "–")
    assert tables.display(df).columns == ["Cohort", "Slides", "EGFR-positive share", "AUC"]
    assert tables.readable(df)["EGFR-positive share"].to_list() == [0.167]


def test_pipe_table_widths_follow_content_and_fit_the_page():
    """Wide tables get relative widths (separator dashes) in which every column holds its longest
    unbreakable token; narrow tables keep content-sized columns; numbers are right-aligned."""
    header = ["Model", "AUC", "Note"]
    rows = [["hoptimus0-sim (H-Optimus-0)", "0.806", "a long free text note " * 6]]
    sep = tables.pipe_table(header, rows).splitlines()[1]
    dashes = [len(c.strip(":")) for c in sep.strip("|").split("|")]
    assert sum(dashes) > 72 and sep.split("|")[2].endswith(":")  # relative widths; AUC right-aligned
    widths = tables.column_widths(header, rows)
    assert widths[0] >= len("hoptimus0-sim") * tables.CHAR_PT + tables.INSET_PT
    assert sum(widths) <= tables.TEXT_WIDTH_PT + 1e-6
    narrow = tables.pipe_table(["a", "b"], [["1", "2"]]).splitlines()[1]
    assert narrow == "|--:|--:|"
    assert not tables.fits_page(["x"] * 12, [["unbreakable-token-here"] * 12])
