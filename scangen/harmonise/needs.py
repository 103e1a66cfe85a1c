"""What each scanner-correction method needs at inference, for Table 3's column.

A feature map fitted per scanner (standardize, combat, coral) needs the test slide's scanner label,
and that scanner must be one it was fitted on; with the fitted parameters it needs no other slide.
A scanner it never saw needs a batch of that scanner's slides to fit its parameters first (classic
ComBat refits on the pooled batch, which is this case). DANN and ScanGen act only in training: the
deployed model reads the slide alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InferenceNeeds:
    """scanner_label: the slide's scanner must be known; new_scanner_batch: a scanner unseen in fitting
    needs a batch of its own slides before use; text: the short description for the table."""

    scanner_label: bool
    new_scanner_batch: bool
    text: str


_NOTHING = InferenceNeeds(False, False, "the slide only")
_FITTED = InferenceNeeds(
    True, True, "the slide's scanner label (a scanner seen in fitting; a new scanner needs a batch of its slides)"
)
NEEDS: dict[str, InferenceNeeds] = {
    "none": _NOTHING,
    "standardize": _FITTED,
    "combat": _FITTED,
    "coral": _FITTED,
    "dann": _NOTHING,
    "scangen": _NOTHING,
}


def inference_needs(method: str) -> InferenceNeeds:
    """Needs of `method`; combinations joined by '+' ("scangen+standardize") need what any part needs."""
    parts = [p.strip() for p in method.split("+")]
    unknown = [p for p in parts if p not in NEEDS]
    if unknown:
        raise ValueError(f"method: unknown part(s) {unknown} in {method!r}; expected parts from {sorted(NEEDS)}")
    return _FITTED if any(NEEDS[p].scanner_label for p in parts) else _NOTHING


def needs_at_test_time(method: str) -> str:
    """Short text of what `method` needs at inference (Table 3's column)."""
    return inference_needs(method).text
