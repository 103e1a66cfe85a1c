"""scangen: scanner sensitivity of pathology foundation models, and the ScanGen contrastive loss.

A reproducible compendium reimplementing *Pathology Foundation Models are Scanner Sensitive:
Benchmark and Mitigation with Contrastive ScanGen Loss*. See DESIGN.md for the module contracts.
"""

__version__ = "0.1.0"
