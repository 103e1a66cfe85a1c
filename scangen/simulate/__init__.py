"""Simulated multi-scanner cohort: the embedded default dataset of the compendium.

The real multi-scanner cohort is private and foundation-model weights cannot be downloaded, so scangen
simulates specimens with tissue maps, scans them with scanner-specific image pipelines and embeds the
patches with five fixed nonlinear "foundation models". See scangen/simulate/README.md.

Public API: `simulate_cohort(out_dir, size="quick", seed=0, models=None, registered_tiles=True) -> Path`,
`generate_cohort(config, seed) -> SimCohort` (in memory), `SimConfig` (`SimConfig.from_size(name)`).
"""

from __future__ import annotations

from scangen.simulate.cohort import SimCohort, generate_cohort, simulate_cohort
from scangen.simulate.config import SIZES, Site, SimConfig
from scangen.simulate.foundation_models import SimulatedFM, load_fm_params, load_models
from scangen.simulate.tissue import TISSUE_CLASSES

__all__ = [
    "SIZES",
    "SimCohort",
    "SimConfig",
    "SimulatedFM",
    "Site",
    "TISSUE_CLASSES",
    "generate_cohort",
    "load_fm_params",
    "load_models",
    "simulate_cohort",
]
