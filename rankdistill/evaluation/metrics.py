r"""Ranking metrics as pure functions of a top-K gain matrix.

Inputs shared by every metric:

- ``gains`` [U, K] float: relevance of the item ranked at position r (0-based) for user u, 0 when the item
  is not relevant or the position holds no candidate. Binary relevance is gains in {0, 1}. An item counts as
  a hit when its gain is > 0; a relevance <= 0 is non-relevant, so every metric (DCG included) takes a
  negative gain as 0.
- ``n_relevant`` [U] int: how many items are relevant (relevance > 0) for the user in total, not just in
  the top K.
- ``ideal`` [U, >= k] float (NDCG only): the user's relevances sorted descending, padded with 0 — the gains
  of the ideal ranking. None means binary: ``ideal[u, r] = 1 if r < n_relevant[u]``.

Each function returns per-user values [U] for cut-off ``k``. When the list is shorter than k (fewer
candidates than k, or k larger than the catalogue) the missing positions count as misses. Users with no
relevant item get NaN and are left out of means (:func:`mean_over_users`). Conventions follow trec_eval and
ranx (and the LightGCN evaluation code for recall):

.. math::
    \mathrm{DCG@k} = \sum_{r=1}^{k} \frac{g_r}{\log_2(r + 1)}, \quad
    \mathrm{NDCG@k} = \frac{\mathrm{DCG@k}}{\mathrm{IDCG@k}} \quad \text{(gain = relevance; IDCG over all
    the user's relevant items, truncated at k)}

    \mathrm{Recall@k} = \frac{\mathrm{hits@k}}{|R|}, \quad \mathrm{Precision@k} = \frac{\mathrm{hits@k}}{k},
    \quad \mathrm{HitRate@k} = [\mathrm{hits@k} > 0], \quad \mathrm{MRR@k} = \frac{1}{r_1} \text{ (0 if none)},
    \quad \mathrm{AP@k} = \frac{1}{|R|} \sum_{r=1}^{k} [g_r > 0]\, \mathrm{Precision@r}

References: Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", TOIS 2002 (NDCG);
trec_eval (``ndcg_cut``, ``recall``, ``P``, ``recip_rank``, ``map_cut``); Bassani, "ranx", ECIR 2022.
Every metric here is better when higher (:data:`HIGHER_IS_BETTER`).
"""

from __future__ import annotations

import torch

HIGHER_IS_BETTER = {"ndcg": True, "recall": True, "precision": True, "hit": True, "mrr": True, "map": True}
DEFAULT_METRICS = ("ndcg", "recall", "precision", "hit", "mrr", "map")
# the fidelity metrics of rankdistill.evaluation.fidelity (student against teacher); their direction lives here
# so that this module stays free of the evaluator and the models
FIDELITY_HIGHER_IS_BETTER = {"overlap": True, "kendall_tau": True, "spearman": True}


def _discounts(k: int, like: torch.Tensor) -> torch.Tensor:
    """[k]: 1 / log2(r + 1) for ranks r = 1..k."""
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=like.dtype, device=like.device))


def _valid(values: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return values.masked_fill(n_relevant <= 0, float("nan"))


def binary_ideal(n_relevant: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ideal gains [U, k] for binary relevance: 1 for the first n_relevant [U] positions."""
    return (torch.arange(k, device=n_relevant.device)[None, :] < n_relevant[:, None]).to(dtype)


def dcg(gains: torch.Tensor, k: int) -> torch.Tensor:
    r"""DCG@k = \sum_{r=1}^{k} \max(g_r, 0) / \log_2(r + 1).  gains [U, K] -> [U]; positions beyond K count 0,
    and so do negative gains (non-relevant, not penalised)."""
    g = gains[:, :k].clamp_min(0)
    return (g * _discounts(g.shape[1], gains)).sum(1)


def ndcg(gains: torch.Tensor, n_relevant: torch.Tensor, k: int, ideal: torch.Tensor | None = None) -> torch.Tensor:
    r"""NDCG@k = DCG@k / IDCG@k (Järvelin & Kekäläinen, TOIS 2002).  gains [U, K], n_relevant [U],
    ideal [U, >=k] or None (binary) -> [U]"""
    if ideal is None:
        ideal = binary_ideal(n_relevant, k, gains.dtype)
    return _valid(dcg(gains, k) / dcg(ideal, k).clamp_min(1e-12), n_relevant)


def _hits(gains: torch.Tensor, k: int) -> torch.Tensor:
    """[U, min(k, K)]: 1 where the ranked item is relevant."""
    return (gains[:, :k] > 0).to(gains.dtype)


def recall(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""Recall@k = |relevant ∩ top-k| / |relevant|.  -> [U]"""
    return _valid(_hits(gains, k).sum(1) / n_relevant.clamp_min(1), n_relevant)


def precision(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""Precision@k = |relevant ∩ top-k| / k (k, not the list length, even when fewer than k candidates).  -> [U]"""
    return _valid(_hits(gains, k).sum(1) / k, n_relevant)


def hit_rate(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""HitRate@k = 1 if any relevant item is in the top k, else 0.  -> [U]"""
    return _valid((_hits(gains, k).sum(1) > 0).to(gains.dtype), n_relevant)


def mrr(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""MRR@k = 1 / rank of the first relevant item in the top k, 0 if none.  -> [U]"""
    hits = _hits(gains, k)
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=gains.dtype, device=gains.device)
    first = (hits / ranks).amax(1) if hits.shape[1] else hits.sum(1)  # the first hit has the largest 1/rank
    return _valid(first, n_relevant)


def average_precision(gains: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    r"""AP@k = \frac{1}{|relevant|} \sum_{r=1}^{k} [g_r > 0] \cdot Precision@r (trec_eval's map_cut).  -> [U]"""
    hits = _hits(gains, k)
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=gains.dtype, device=gains.device)
    prec_at_r = hits.cumsum(1) / ranks
    return _valid((hits * prec_at_r).sum(1) / n_relevant.clamp_min(1), n_relevant)


METRICS = {"ndcg": ndcg, "recall": recall, "precision": precision, "hit": hit_rate, "mrr": mrr,
           "map": average_precision}


def compute_metrics(
    gains: torch.Tensor,
    n_relevant: torch.Tensor,
    ks: tuple[int, ...],
    names: tuple[str, ...] = DEFAULT_METRICS,
    ideal: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-user values [U] of every ``name@k``, ordered by k then by ``names``.

    gains [U, K]; n_relevant [U]; ideal [U, >= max(ks)] for graded NDCG (None: binary)."""
    out = {}
    for k in ks:
        for name in names:
            if name == "ndcg":
                out[f"ndcg@{k}"] = ndcg(gains, n_relevant, k, ideal)
            else:
                out[f"{name}@{k}"] = METRICS[name](gains, n_relevant, k)
    return out


def mean_over_users(per_user: torch.Tensor) -> float:
    """Mean over users with at least one relevant item (NaN entries are left out); 0.0 if there are none."""
    valid = ~torch.isnan(per_user)
    return float(per_user[valid].double().mean()) if valid.any() else 0.0


def higher_is_better(name: str) -> bool:
    """Direction of a metric named ``name`` or ``name@k`` (ranking and fidelity metrics)."""
    base = name.partition("@")[0]
    table = {**HIGHER_IS_BETTER, **FIDELITY_HIGHER_IS_BETTER}
    if base not in table:
        raise KeyError(f"unknown metric {name!r}")
    return table[base]
