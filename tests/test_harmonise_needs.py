"""What each method needs at inference (Table 3's column)."""

from __future__ import annotations

import pytest

from scangen.harmonise import METHODS, inference_needs, needs_at_test_time


def test_fitted_maps_need_the_scanner_label_and_training_only_methods_nothing() -> None:
    for method in METHODS:
        assert inference_needs(method).scanner_label and inference_needs(method).new_scanner_batch
        assert "scanner label" in needs_at_test_time(method)
    for method in ("none", "dann", "scangen"):
        assert not inference_needs(method).scanner_label
        assert needs_at_test_time(method) == "the slide only"


def test_combinations_need_what_any_part_needs() -> None:
    assert inference_needs("scangen+standardize") == inference_needs("standardize")
    assert inference_needs("scangen+dann") == inference_needs("scangen")
    with pytest.raises(ValueError, match="unknown part"):
        needs_at_test_time("scangen+harmony")
