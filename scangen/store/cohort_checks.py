"""Warnings about a real cohort that is valid but limits what can be measured on it.

- specimens of the multiscanner cohort scanned on one scanner only (at the primary magnification):
  usable for the task branch, not for the scanner CoV or ScanGen (they have no cross-scanner pair);
- scanners with fewer than `min_specimens` specimens (their per-scanner numbers are noisy).

The importer records the result in meta.json (imports[<fm>]["checks"]) and issues one warning per
finding, naming the file, the column and the ids.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import polars as pl

from .schema import format_ids

MIN_SPECIMENS_PER_SCANNER = 10
"""Default threshold below which a scanner is reported as having few specimens."""


@dataclass(frozen=True)
class CohortCheck:
    """Findings on a slides table (empty tuples/dicts when all is well)."""

    single_scanner_specimens: tuple[str, ...]
    small_scanners: dict[str, int] = field(default_factory=dict)
    min_specimens: int = MIN_SPECIMENS_PER_SCANNER

    def messages(self, source: str) -> list[str]:
        """One message per finding, naming `source`, the column and the ids."""
        out = []
        if self.single_scanner_specimens:
            out.append(
                f"{source}: column 'specimen_id': {len(self.single_scanner_specimens)} multiscanner specimen(s) scanned on "
                f"one scanner only (usable for the task, not for the scanner CoV or ScanGen): "
                f"{format_ids(self.single_scanner_specimens)}"
            )
        if self.small_scanners:
            shown = ", ".join(f"{s!r}: {n}" for s, n in self.small_scanners.items())
            out.append(
                f"{source}: column 'scanner': scanner(s) with fewer than {self.min_specimens} specimens ({shown}); "
                f"their per-scanner numbers are noisy"
            )
        return out

    def to_json(self) -> dict:
        return {"single_scanner_specimens": list(self.single_scanner_specimens),
                "small_scanners": dict(self.small_scanners), "min_specimens_per_scanner": self.min_specimens}


def check_cohort(slides: pl.DataFrame, min_specimens: int = MIN_SPECIMENS_PER_SCANNER) -> CohortCheck:
    """Findings on the multiscanner cohort at its highest magnification (all rows when it has none)."""
    if min_specimens < 1:
        raise ValueError(f"min_specimens: expected a positive integer, got {min_specimens}")
    multi = slides.filter(pl.col("cohort") == "multiscanner")
    rows = multi if multi.height else slides
    rows = rows.filter(pl.col("magnification") == rows["magnification"].max())
    per_spec = rows.group_by("specimen_id").agg(pl.col("scanner").n_unique().alias("n"))
    single = tuple(sorted(per_spec.filter(pl.col("n") < 2)["specimen_id"].to_list())) if multi.height else ()
    per_scanner = rows.group_by("scanner", maintain_order=True).agg(pl.col("specimen_id").n_unique().alias("n"))
    small = {r["scanner"]: int(r["n"]) for r in per_scanner.iter_rows(named=True) if r["n"] < min_specimens}
    return CohortCheck(single, small, min_specimens)


def warn_cohort(check: CohortCheck, source: str) -> None:
    """Issue one UserWarning per finding."""
    for message in check.messages(source):
        warnings.warn(message, UserWarning, stacklevel=3)
