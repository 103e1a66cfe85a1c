"""Standard scanner-harmonisation methods, the comparators of ScanGen (Table 3).

Feature maps fitted on training slides and applied to every slide (`harmonise_bags`):
per-scanner standardisation, ComBat, CORAL. DANN's scanner adversary (`dann.ScannerAdversary`,
imports torch) trains jointly with the model. `needs_at_test_time` says what each needs at inference.
"""

from scangen.harmonise.api import METHODS, check_method, fit_harmoniser, harmonise_bags
from scangen.harmonise.maps import ScannerMaps
from scangen.harmonise.needs import InferenceNeeds, inference_needs, needs_at_test_time

__all__ = [
    "METHODS",
    "InferenceNeeds",
    "ScannerMaps",
    "check_method",
    "fit_harmoniser",
    "harmonise_bags",
    "inference_needs",
    "needs_at_test_time",
]
