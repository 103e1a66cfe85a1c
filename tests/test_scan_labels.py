"""One scanner-label convention for the sampler, the robustness metrics and the scanner-bias experiment."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.scan_labels import scanner_label, scanner_label_expr, scanner_labels


def test_scanner_label_tags_only_non_40x_scans() -> None:
    assert scanner_label("AT2", 40) == "AT2"
    assert scanner_label("GT450", 20) == "GT450@20x"
    assert scanner_label("GT450", np.int16(20)) == "GT450@20x"


def test_table_labels_match_the_scalar_helper() -> None:
    slides = pl.DataFrame({"scanner": ["AT2", "GT450", "GT450"], "magnification": [40, 40, 20]},
                          schema_overrides={"magnification": pl.Int16})
    labels = scanner_labels(slides)
    assert labels.tolist() == ["AT2", "GT450", "GT450@20x"]
    assert labels.tolist() == [scanner_label(s, m) for s, m in slides.iter_rows()]
    assert slides.select(scanner_label_expr())["scanner"].to_list() == labels.tolist()


def test_table_without_magnification_is_40x_and_bad_tables_fail() -> None:
    assert scanner_labels(pl.DataFrame({"scanner": ["AT2", "B300"]})).tolist() == ["AT2", "B300"]
    with pytest.raises(ValueError, match="'scanner' column"):
        scanner_labels(pl.DataFrame({"magnification": [40]}))
    with pytest.raises(ValueError, match=r"\['magnification'\] hold nulls"):
        scanner_labels(pl.DataFrame({"scanner": ["AT2"], "magnification": [None]},
                                    schema_overrides={"magnification": pl.Int16}))


def test_primary_scanners_highest_magnification_in_order():
    from scangen.scan_labels import primary_scanners
    slides = pl.DataFrame({
        "scanner": ["CS2", "S210", "GT450", "CS2", "X"],
        "magnification": [40, 40, 20, 40, 40],
        "cohort": ["multiscanner", "multiscanner", "multiscanner", "multiscanner", "task"],
    })
    assert primary_scanners(slides) == ("CS2", "S210")
    assert primary_scanners(slides, cohort=None) == ("CS2", "S210", "X")
    with pytest.raises(ValueError, match="magnification"):
        primary_scanners(slides.drop("magnification"))


def test_base_magnification_is_bare() -> None:
    slides = pl.DataFrame({"scanner": ["CS2", "CS2"], "magnification": [25, 10]})
    assert scanner_labels(slides, base=25).tolist() == ["CS2", "CS2@10x"]
    assert scanner_labels(slides).tolist() == ["CS2@25x", "CS2@10x"]
    assert scanner_label("CS2", 25, base=25) == "CS2"
