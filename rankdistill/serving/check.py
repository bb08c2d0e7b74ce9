"""serve-check: how well and how fast an export's index answers top-k queries on this CPU.

- **recall@k against exact scoring**: for each measured user, the share of the k items the index returns
  whose exact inner product (the exported vectors, float32) is at least the exact k-th best score, so ties
  at the cut-off count either way; the mean over users (and the worst user). 1.0 for the flat index; an
  HNSW index is approximate and its ``ef_search`` trades recall for time.
- **per-user query latency**: each user's query alone (batch of one, as a service answers a request),
  timed with ``time.perf_counter`` after warm-up queries; p50 and p99 in milliseconds, next to the same
  for exact brute-force scoring (one matmul over every item and a top-k) for comparison.

Queries are over every item (no history excluded: that is the service's filter, after the index).
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from rankdistill.errors import RankdistillError
from rankdistill.serving.export import INDEX, Export
from rankdistill.serving.index import read_index, require_faiss

WARMUP = 10


def sample_users(n_users: int, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` distinct user rows [n'], sorted, drawn uniformly (every user when n >= n_users)."""
    if n >= n_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(seed).choice(n_users, n, replace=False))


def recall_against_exact(found: np.ndarray, exact_scores: np.ndarray, k: int) -> np.ndarray:
    """found int64 [U, k] (the index's ids, -1 for none), exact_scores float32 [U, I] -> recall [U]: the share
    of the k returned items whose exact score is >= the exact k-th best score of the user."""
    kth = -np.partition(-exact_scores, k - 1, axis=1)[:, k - 1]  # [U]
    valid = found >= 0
    got = np.take_along_axis(exact_scores, np.where(valid, found, 0), axis=1)  # [U, k]
    return ((got >= kth[:, None]) & valid).sum(1) / k


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50": round(float(np.percentile(ms, 50)), 4), "p99": round(float(np.percentile(ms, 99)), 4),
            "mean": round(float(ms.mean()), 4)}


def _timed(query, vectors: np.ndarray) -> list[float]:
    for row in vectors[:WARMUP]:
        query(row[None])
    times = []
    for row in vectors:
        start = time.perf_counter()
        query(row[None])
        times.append(time.perf_counter() - start)
    return times


def serve_check(export: Export, k: int = 100, users: int = 1000, ef_search: int | None = None,
                threads: int = 1, seed: int = 0) -> dict:
    """Recall@k of the export's index against exact scoring and per-user latency (module docstring)."""
    faiss = require_faiss()
    index_config = dict(export.manifest.get("index") or {})
    if not index_config.get("file"):
        raise RankdistillError(f"export {export.path} has no index ({index_config.get('missing', 'none written')}); "
                               "export it again with faiss installed")
    if ef_search is not None:
        index_config["ef_search"] = ef_search
    faiss.omp_set_num_threads(threads)
    index = read_index(export.path / INDEX, index_config)
    u, items = export.users.dequantize().numpy(), export.items.dequantize().numpy()
    k = min(k, len(items))
    rows = sample_users(len(u), users, seed)
    queries = np.ascontiguousarray(u[rows])
    _, found = index.search(queries, k)
    recall = recall_against_exact(found, queries @ items.T, k)
    items_t = torch.from_numpy(items)

    def exact(q: np.ndarray):
        return torch.topk(torch.from_numpy(q) @ items_t.T, k)

    return {
        "export": str(export.path), "index": index_config, "precision": export.manifest["precision"],
        "k": k, "users_measured": len(rows), "items": len(items), "dim": int(items.shape[1]),
        f"recall@{k}": round(float(recall.mean()), 6), f"recall@{k}_min": round(float(recall.min()), 6),
        "latency_ms": percentiles_ms(_timed(lambda q: index.search(q, k), queries)),
        "exact_latency_ms": percentiles_ms(_timed(exact, queries)),
        "environment": {"threads": threads, "faiss": faiss.__version__, "torch": torch.__version__,
                        "cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
