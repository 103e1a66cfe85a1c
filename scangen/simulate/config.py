"""Sizes and documented parameters of the simulated multi-scanner cohort.

`SimConfig.from_size(name)` gives the three prepared sizes:
- ``tiny``  : unit tests (seconds for all five models);
- ``quick`` : the default compendium run on 2 CPU cores;
- ``paper`` : GPU-sized, paper-like counts and larger bags.
Every field is written into ``meta.json["generator"]`` so a store says how it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from scangen.constants import SCANNERS_40X

SCANNER_EFFECTS: tuple[str, ...] = ("image", "feature")
"""Declared data-generating scenarios: where scanner effects enter (see SimConfig.scanner_effect)."""


@dataclass(frozen=True)
class Site:
    """One contributing centre of the task cohort.

    scanner: the scanner the site digitised on. egfr_prevalence: share of EGFR-mutant specimens
    (differs between sites: the confound). weight: share of task slides from this site.
    stain_h / stain_e: multiplicative haematoxylin / eosin staining intensity of the site's lab.
    stain_hue: rotation (radians, small) of the site's stain colour vectors (reagent batch / protocol).
    """

    name: str
    scanner: str
    egfr_prevalence: float
    weight: float
    stain_h: float = 1.0
    stain_e: float = 1.0
    stain_hue: float = 0.0


DEFAULT_SITES: tuple[Site, ...] = (
    Site("tcga-a", "AT2", 0.10, 0.22, 1.00, 1.00, 0.00),
    Site("tcga-b", "AT2", 0.14, 0.18, 1.12, 0.92, 0.04),
    Site("tcga-c", "AT2", 0.20, 0.15, 0.90, 1.10, -0.05),
    Site("tcga-d", "AT2", 0.28, 0.15, 1.05, 1.18, 0.07),
    Site("cptac-e", "GT450", 0.45, 0.30, 1.20, 0.85, -0.08),
)
"""TCGA/CPTAC-like sites: mostly Aperio AT2; the GT450 site has the highest EGFR prevalence and its own
staining, so site, stain, scanner and label are confounded as in a real public cohort."""


@dataclass(frozen=True)
class SimConfig:
    """All knobs of the generator (sizes, biology, staining, scanning).

    Sizes: n_task_slides (one slide per specimen), n_ms_specimens (each scanned 7 times), bag sizes
    (40x patches per slide, lognormal with median bag_median and log-sd bag_sigma, clipped to
    [bag_min, bag_max]; a 20x scan of the same tissue yields about a quarter as many patches),
    n_registered (registered tiles per multiscanner scan), grid_cells (side of the specimen tissue map
    in cells of `cell_px` level-0 pixels; must hold enough tissue for bag_max tiles).
    Biology: egfr_composition_effect scales how much an EGFR mutation shifts tissue composition
    (fewer lymphocytes and less necrosis, more lepidic/alveolar-pattern tissue);
    egfr_morphology_effect scales the change of tumour-cell appearance (lower nuclear density, more
    eosinophilic cytoplasm, more air space in tumour areas); composition_concentration is the Dirichlet
    concentration of a specimen's composition around its prior (smaller: more heterogeneous patients);
    phenotype_sd scales the specimen-to-specimen spread of tissue appearance (tissue.PHENOTYPE_SCALE).
    Staining: stain_jitter is the specimen-level log-sd of staining intensity within a lab.
    Scanning: scanner_strength scales how far every scanner's settings depart from a neutral device
    (0: identical scanners, 1: the profiles as tabulated in scanners.py; the default 1.5 makes the
    between-scanner spread of slide embeddings about equal to the between-specimen spread, so scans
    cluster by scanner as in the paper's Fig. 3); scan_jitter scales per-scan variation of a scanner's
    settings (focus, white balance).
    Multiscanner cohort: ms_prevalence is its EGFR prevalence; it is stained in one lab (ms_site).
    chunk_patches bounds memory while rendering (patches per chunk); it does not change results.
    Scenario: scanner_effect "image" (default, the calibrated simulator: scanner pipelines act on the
    image before the nonlinear FM) or "feature" (the FM embeds the neutral rendering and each scanner
    adds a tissue-independent offset in feature space; see feature_effects.py). "image" is left out of
    `to_dict`, so stores of the default scenario are byte-identical to those written before the option.
    """

    size: str = "custom"
    n_task_slides: int = 300
    n_ms_specimens: int = 72
    bag_median: float = 90.0
    bag_sigma: float = 0.5
    bag_min: int = 40
    bag_max: int = 200
    n_registered: int = 32
    grid_cells: int = 36
    cell_px: int = 224
    egfr_composition_effect: float = 1.0
    egfr_morphology_effect: float = 1.0
    composition_concentration: float = 30.0
    phenotype_sd: float = 0.9
    stain_jitter: float = 0.08
    scanner_strength: float = 1.5
    scan_jitter: float = 1.0
    ms_prevalence: float = 0.4
    ms_site: str = "ms-lab"
    task_sites: tuple[Site, ...] = field(default=DEFAULT_SITES)
    chunk_patches: int = 4096
    scanner_effect: str = "image"

    def __post_init__(self) -> None:
        if self.scanner_effect not in SCANNER_EFFECTS:
            raise ValueError(f"SimConfig.scanner_effect must be one of {SCANNER_EFFECTS}, got {self.scanner_effect!r}")
        for name in ("n_task_slides", "n_ms_specimens", "bag_min", "bag_max", "n_registered", "grid_cells"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.bag_min > self.bag_max:
            raise ValueError(f"SimConfig.bag_min ({self.bag_min}) must be <= bag_max ({self.bag_max})")
        if not 0.0 < self.ms_prevalence < 1.0:
            raise ValueError(f"SimConfig.ms_prevalence must be in (0, 1), got {self.ms_prevalence}")
        if not self.task_sites:
            raise ValueError("SimConfig.task_sites must name at least one site")
        for site in self.task_sites:
            if site.scanner not in SCANNERS_40X:
                raise ValueError(f"SimConfig.task_sites: site {site.name!r} has scanner {site.scanner!r}, "
                                 f"expected one of {SCANNERS_40X}")
            if not 0.0 <= site.egfr_prevalence <= 1.0 or site.weight <= 0:
                raise ValueError(f"SimConfig.task_sites: site {site.name!r} needs prevalence in [0, 1] "
                                 f"and weight > 0")

    @classmethod
    def from_size(cls, name: str, **overrides: Any) -> "SimConfig":
        """The prepared configuration `name` ("tiny", "quick", "paper"), with optional field overrides."""
        if name not in SIZES:
            raise ValueError(f"unknown simulator size {name!r}; expected one of {sorted(SIZES)}")
        return dataclasses.replace(cls(size=name, **SIZES[name]), **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (for meta.json); `scanner_effect` only when not "image"."""
        out = dataclasses.asdict(self)
        if out["scanner_effect"] == "image":
            del out["scanner_effect"]
        return out


SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(n_task_slides=12, n_ms_specimens=8, bag_median=20.0, bag_sigma=0.4, bag_min=10,
                 bag_max=40, n_registered=8, grid_cells=16),
    "quick": dict(n_task_slides=300, n_ms_specimens=72, bag_median=90.0, bag_sigma=0.5, bag_min=40,
                  bag_max=200, n_registered=32, grid_cells=36),
    "paper": dict(n_task_slides=900, n_ms_specimens=180, bag_median=256.0, bag_sigma=0.6, bag_min=64,
                  bag_max=1024, n_registered=64, grid_cells=72),
}
