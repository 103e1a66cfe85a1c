"""Cross-scanner retrieval: does an embedding find the same tissue scanned on another scanner?

Tile level, after plismbench (Owkin, "PLISM" robustness benchmark, top-k accuracy and cosine
similarity): registered tiles share a `tile_id` across every scan of one specimen. For a scanner pair (a, b)
with m twinned tiles, pool the 2m tile embeddings of both scanners, and for each tile look at
its k most cosine-similar tiles of the pool (itself excluded):

    top-k(a -> b) = (1/m) sum_t 1[twin_b(t) in kNN(tile_a(t))],   and symmetrically b -> a,
    top-k(a, b)   = (top-k(a -> b) + top-k(b -> a)) / 2,
    cos(a, b)     = (1/m) sum_t cos(e_a(t), e_b(t)).

By default the pool of (a, b) holds the twinned tiles of every specimen (the cohort scanned on
a vs on b, like two PLISM slide scans of thousands of tiles); `pool="specimen"` restricts it to
the two scans of the query's specimen. The summary is the mean over scanner pairs (plismbench
reports the top-10 accuracy and the mean cosine).

WSI level (no registration): one embedding per WSI; a query is a hit at k when another scan of
the same specimen is among its k nearest WSIs (self excluded). Queries whose specimen has a
single scan cannot hit and are counted separately, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import polars as pl
import torch

from scangen.metrics.robustness_index import check_features, cosine_topk, metric_device

DEFAULT_TOP_K: tuple[int, ...] = (1, 3, 5, 10)


def _check_lengths(n: int, **columns: np.ndarray) -> None:
    for name, col in columns.items():
        if len(col) != n:
            raise ValueError(f"{name} has {len(col)} entries but features has {n} rows")


def _index(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """A (copied, writable) int64 index tensor on `device`."""
    return torch.as_tensor(np.array(values, dtype=np.int64), device=device)


def _twin_ranks(
    x: torch.Tensor,
    query: np.ndarray,
    pool: np.ndarray,
    self_pos: np.ndarray,
    twin_pos: np.ndarray,
    same_specimen: np.ndarray | None,
    chunk: int = 1024,
) -> np.ndarray:
    """Rank of each query's twin among the pool, self excluded (0 = nearest).

    x (N, D) L2-normalised; `query` row ids; `pool` column ids; `self_pos` / `twin_pos` the query's
    own and twin's positions in `pool`; `same_specimen` (N,) specimen codes to restrict the pool to
    the query's specimen, or None. rank = #{j in pool, j != self : cos(q, j) > cos(q, twin)}.
    """
    ranks = np.empty(len(query), dtype=np.int64)
    xp = x[_index(pool, x.device)]
    for start in range(0, len(query), chunk):
        stop = min(start + chunk, len(query))
        q = x[_index(query[start:stop], x.device)]
        sim = q @ xp.T
        rows = torch.arange(stop - start, device=x.device)
        t = sim[rows, _index(twin_pos[start:stop], x.device)]
        sim[rows, _index(self_pos[start:stop], x.device)] = -torch.inf
        if same_specimen is not None:
            other = same_specimen[pool][None, :] != same_specimen[query[start:stop]][:, None]
            sim[torch.as_tensor(other, device=x.device)] = -torch.inf
        ranks[start:stop] = (sim > t[:, None]).sum(dim=1).cpu().numpy()
    return ranks


@dataclass(frozen=True)
class TileRetrievalResult:
    """Cross-scanner tile retrieval: a per scanner-pair table and its means over pairs."""

    pairs: pl.DataFrame
    """Columns scanner_a, scanner_b, n_specimens, n_tiles, n_queries, top_<k> ..., cosine."""
    mean_top_k: dict[int, float] = field(default_factory=dict)
    mean_cosine: float = float("nan")
    pool: str = "scanner"


def _twin_table(tid: np.ndarray, sc: np.ndarray, sp: np.ndarray) -> pl.DataFrame:
    """One row per tile: row id, scanner, specimen, tile id; errors on duplicate tiles of a scan."""
    table = pl.DataFrame({"row": np.arange(len(tid)), "sc": sc, "sp": sp, "t": tid})
    dup = table.filter(pl.struct("sp", "sc", "t").is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        raise ValueError(
            f"tile_id {first['t']} appears more than once for specimen {first['sp']} on scanner "
            f"{first['sc']}: each (specimen, scanner, tile_id) must be unique"
        )
    return table


def cross_scanner_retrieval(
    features: np.ndarray,
    tile_ids: Sequence | np.ndarray,
    scanners: Sequence | np.ndarray,
    specimens: Sequence | np.ndarray,
    ks: Sequence[int] = DEFAULT_TOP_K,
    pool: str = "scanner",
    max_queries: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> TileRetrievalResult:
    """plismbench-style twin-tile retrieval between every pair of scanners.

    features (n, D): registered tile embeddings; `tile_ids` name the tissue position (twins share
    it within a specimen); `scanners` and `specimens` (n,) say which scan a row belongs to.
    pool="scanner" (default): the pool of pair (a, b) is every twinned tile of scanner a and of
    scanner b over all specimens, i.e. the two "scans" of the whole cohort, as plismbench pools the
    thousands of tiles of two whole-slide scans. pool="specimen": only the two scans of one
    specimen (a small pool, so an easier task). `max_queries` caps the queries per pair and
    direction (a seeded random subset; the pool is never subsampled, so difficulty is unchanged).
    """
    if pool not in ("scanner", "specimen"):
        raise ValueError(f"pool must be 'scanner' or 'specimen', got {pool!r}")
    x = check_features(features)
    n = x.shape[0]
    tid, sc, sp = np.asarray(tile_ids), np.asarray(scanners).astype(str), np.asarray(specimens)
    _check_lengths(n, tile_ids=tid, scanners=sc, specimens=sp)
    if not ks or min(int(k) for k in ks) < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    if np.unique(sc).size < 2:
        raise ValueError(
            f"cross-scanner retrieval needs registered tiles from at least two scanners, got {sorted(set(sc.tolist()))}"
        )
    table = _twin_table(tid, sc, sp.astype(str))
    sp_codes = np.unique(sp.astype(str), return_inverse=True)[1]
    dev = metric_device(device)
    xt = torch.nn.functional.normalize(torch.as_tensor(x, device=dev), dim=1)
    rng = np.random.default_rng(seed)
    rows = []
    for sa, sb in combinations(sorted(set(sc.tolist())), 2):
        twins = table.filter(pl.col("sc") == sa).join(
            table.filter(pl.col("sc") == sb), on=["sp", "t"], how="inner", suffix="_b"
        ).sort("sp", "t")
        m = twins.height
        if m < 2:
            continue
        ra, rb = twins["row"].to_numpy(), twins["row_b"].to_numpy()
        pool_rows = np.concatenate([ra, rb])
        hits = {int(k): [] for k in ks}
        n_q = 0
        for own, offset_self, offset_twin in ((ra, 0, m), (rb, m, 0)):
            pos = np.arange(m)
            if max_queries is not None and m > max_queries:
                pos = np.sort(rng.choice(m, size=max_queries, replace=False))
            ranks = _twin_ranks(
                xt, own[pos], pool_rows, pos + offset_self, pos + offset_twin,
                sp_codes if pool == "specimen" else None,
            )
            n_q += len(pos)
            for k in ks:
                hits[int(k)].append(float((ranks < int(k)).mean()))
        cos = (xt[_index(ra, dev)] * xt[_index(rb, dev)]).sum(1)
        row = {"scanner_a": sa, "scanner_b": sb, "n_specimens": twins["sp"].n_unique(),
               "n_tiles": m, "n_queries": n_q}
        row.update({f"top_{k}": float(np.mean(v)) for k, v in hits.items()})
        row["cosine"] = float(cos.mean())
        rows.append(row)
    if not rows:
        raise ValueError("no two scanners share at least two registered tiles of a specimen")
    out = pl.DataFrame(rows)
    mean_top = {int(k): float(out[f"top_{int(k)}"].mean()) for k in ks}
    return TileRetrievalResult(out, mean_top, float(out["cosine"].mean()), pool)


@dataclass(frozen=True)
class WsiRetrievalResult:
    """WSI-level same-specimen retrieval."""

    top_k: dict[int, float]
    n_queries: int
    n_without_other_scan: int
    """WSIs whose specimen has no other scan (not queries: they cannot hit)."""


def wsi_retrieval(
    features: np.ndarray,
    specimens: Sequence | np.ndarray,
    ks: Sequence[int] = DEFAULT_TOP_K,
    device: str | torch.device | None = None,
) -> WsiRetrievalResult:
    """Share of WSIs with another scan of their specimen among their k nearest WSIs (cosine).

    features (n, D): one embedding per WSI (e.g. the mean patch embedding, or phi of it).
    """
    x = check_features(features)
    sp = np.asarray(specimens).astype(str)
    _check_lengths(x.shape[0], specimens=sp)
    if not ks or min(int(k) for k in ks) < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    _, inverse, counts = np.unique(sp, return_inverse=True, return_counts=True)
    if counts.size < 2:
        raise ValueError(
            f"WSI retrieval needs at least two specimens (with one, every neighbour is a hit), got {counts.size}"
        )
    query = counts[inverse] >= 2
    if not query.any():
        raise ValueError("no specimen has two or more WSIs: WSI retrieval is undefined")
    neigh, _ = cosine_topk(x, max(int(k) for k in ks), device=device)
    same = (neigh >= 0) & (sp[np.where(neigh >= 0, neigh, 0)] == sp[:, None])
    out = {}
    for k in ks:
        kk = min(int(k), neigh.shape[1])
        out[int(k)] = float(same[query, :kk].any(axis=1).mean())
    return WsiRetrievalResult(out, int(query.sum()), int((~query).sum()))
