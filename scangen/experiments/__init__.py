"""The compendium's experiments, one module each; the numbered notebooks only orchestrate these.

- `data`: prepare (simulate / import / reuse) the store and describe the cohort (notebook 01);
- `scanner_bias`: UMAP of raw mean WSI embeddings and embedding-level robustness numbers (02);
- `table1`: five FMs x {baseline, ScanGen} x seeds, Fig. 1 (03);
- `ablation`: ScanGen on every subset of 2..6 of the six 40x scanners, Fig. 4 (04);
- `mil_table`: MIL heads with and without ScanGen on the strongest FM, Table 2 (05);
- shared parts: `session` (store + settings + preloaded bags), `cache` (runs keyed by config hash),
  `stats` (seed means, CIs, relative change), `results` (atomic Parquet/JSON result files).
Submodules are imported on use, so `import scangen.experiments` stays cheap.
"""
