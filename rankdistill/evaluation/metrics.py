r"""Ranking metrics as pure functions of a top-K gain matrix.

Inputs shared by every metric:

- ``gains`` [U, K] float: relevance of the item ranked at position r (0-based) for user u, 0 when the item
  is not relevant. Binary relevance is gains in {0, 1}.
- ``n_relevant`` [U] int: how many items are relevant for the user (in total, not just in the top K).
- ``ideal`` [U, K] float (NDCG only): the user's relevances sorted descending, padded with 0 — the gains of
  the ideal ranking. For binary relevance, ``ideal[u, r] = 1 if r < n_relevant[u]``.

Each function returns per-user values [U] for cut-off ``k`` (k <= K); users with no relevant item get NaN
and are left out of means (:func:`mean_over_users`). Conventions follow trec_eval and ranx:
NDCG uses gain = relevance and log2(rank + 1) discounts, ideal DCG over all relevant items truncated at k;
Recall@k = hits / relevant; Precision@k = hits / k; MAP@k divides by the number relevant.
"""

from __future__ import annotations

import torch

HIGHER_IS_BETTER = {"ndcg": True, "recall": True, "precision": True, "hit": True, "mrr": True, "map": True}


def _discounts(k: int, like: torch.Tensor) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=like.dtype, device=like.device))


def _valid(values: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return values.masked_fill(n_relevant <= 0, float("nan"))


def binary_ideal(n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Ideal gains [U, k] for binary relevance: 1 for the first n_relevant positions."""
    return (torch.arange(k, device=n_relevant.device)[None, :] < n_relevant[:, None]).float()


def dcg(gains: torch.Tensor, k: int) -> torch.Tensor:
    r"""DCG@k = \sum_{r=1}^{k} g_r / \log_2(r + 1).  gains [U, K] -> [U]."""
    return (gains[:, :k] * _discounts(min(k, gains.shape[1]), gains)).sum(1)


def ndcg(gains: torch.Tensor, n_relevant: torch.Tensor, k: int, ideal: torch.Tensor | None = None) -> torch.Tensor:
    r"""NDCG@k = DCG@k / IDCG@k (Järvelin & Kekäläinen, TOIS 2002).  -> [U]"""
    if ideal is None:
        ideal = binary_ideal(n_relevant, k)
    idcg = dcg(ideal, k)
    return _valid(dcg(gains, k) / idcg.clamp_min(1e-12), n_relevant)


def _hits(gains: torch.Tensor, k: int) -> torch.Tensor:
    return (gains[:, :k] > 0).to(gains.dtype)


def recall(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""Recall@k = |relevant ∩ top-k| / |relevant|.  -> [U]"""
    return _valid(_hits(gains, k).sum(1) / n_relevant.clamp_min(1), n_relevant)


def precision(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""Precision@k = |relevant ∩ top-k| / k (k, not the list length, even when fewer than k candidates).  -> [U]"""
    return _valid(_hits(gains, k).sum(1) / k, n_relevant)


def hit_rate(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""HitRate@k = 1 if any relevant item is in the top k.  -> [U]"""
    return _valid((_hits(gains, k).sum(1) > 0).to(gains.dtype), n_relevant)


def mrr(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""MRR@k = 1 / rank of the first relevant item in the top k, 0 if none.  -> [U]"""
    hits = _hits(gains, k)
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=gains.dtype, device=gains.device)
    return _valid((hits / ranks).amax(1) if hits.shape[1] else hits.sum(1), n_relevant)


def average_precision(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""AP@k = \frac{1}{|relevant|} \sum_{r=1}^{k} rel_r \cdot Precision@r.  -> [U]"""
    hits = _hits(gains, k)
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=gains.dtype, device=gains.device)
    prec_at_r = hits.cumsum(1) / ranks
    return _valid((hits * prec_at_r).sum(1) / n_relevant.clamp_min(1), n_relevant)


METRICS = {"ndcg": ndcg, "recall": recall, "precision": precision, "hit": hit_rate, "mrr": mrr, "map": average_precision}


def compute_metrics(
    gains: torch.Tensor,
    n_relevant: torch.Tensor,
    ks: tuple[int, ...],
    names: tuple[str, ...] = tuple(METRICS),
    ideal: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-user values [U] of every ``name@k``; ``ideal`` [U, >=max(ks)] for graded NDCG."""
    out = {}
    for k in ks:
        for name in names:
            if name == "ndcg":
                out[f"ndcg@{k}"] = ndcg(gains, n_relevant, k, None if ideal is None else ideal)
            else:
                out[f"{name}@{k}"] = METRICS[name](gains, n_relevant, k)
    return out


def mean_over_users(per_user: torch.Tensor) -> float:
    """Mean over users with at least one relevant item (NaN entries are left out); 0.0 if there are none."""
    valid = ~torch.isnan(per_user)
    return float(per_user[valid].double().mean()) if valid.any() else 0.0
