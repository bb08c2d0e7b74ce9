r"""Sampled evaluation, **off by default**: each held-out (user, item) pair is ranked against N negatives
drawn uniformly, without replacement, from the items the user never interacted with (train, valid or test).

This is the protocol of many recommender and ranking-distillation papers (NCF: 1 positive + 99 negatives;
RD, CD, DE-RRD: + 499 or 999), kept so their numbers can be reproduced. It is biased: sampled metrics can
rank models differently from full ranking (Krichene & Rendle, "On Sampled Metrics for Item
Recommendation", KDD 2020). Every output says so: the dict has ``"sampled": True`` and ``"negatives": N``,
and per-user tables carry ``sampled`` and ``negatives`` columns.

Per pair, the positive's 0-based rank among the N + 1 candidates follows the package's tie rule (score
descending, then item index ascending):

.. math:: r = |\{j : s_j > s_+\}| + |\{j : s_j = s_+,\ i_j < i_+\}|

and the pair's gains are 1 at position r. Metrics are computed per pair with one relevant item (so
recall@k = hit@k and map@k = mrr@k), averaged over each user's pairs, then over users.
"""

from __future__ import annotations

import torch

from rankdistill.data.csr import Csr
from rankdistill.data.split import Split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import (PerUserMetrics, check_names, default_memory_budget, model_device,
                                              rows_of, targets)
from rankdistill.evaluation.metrics import DEFAULT_METRICS, compute_metrics
from rankdistill.models.base import Ranker, as_ranker

DEFAULT_NEGATIVES = 99


def _in_csr(csr: Csr, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """bool [P, M]: items [P, M] is in the CSR row of users [P]."""
    rows, cols = rows_of(csr, users)
    keys = rows * csr.n_cols + cols  # sorted
    if len(keys) == 0:
        return torch.zeros(items.shape, dtype=torch.bool, device=items.device)
    query = torch.arange(len(users), device=items.device)[:, None] * csr.n_cols + items
    pos = torch.searchsorted(keys, query).clamp_max(len(keys) - 1)
    return keys[pos] == query


def _repeats(draws: torch.Tensor) -> torch.Tensor:
    """bool [P, M]: the value already occurred earlier in its row."""
    sorted_vals, perm = draws.sort(dim=1, stable=True)  # equal values keep their draw order
    dup_sorted = torch.zeros_like(draws, dtype=torch.bool)
    dup_sorted[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    return torch.zeros_like(dup_sorted).scatter_(1, perm, dup_sorted)


def sample_negatives(history: Csr, users: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """int64 [P, n]: for each of users [P], n distinct items outside the user's ``history`` row, uniformly
    (rejection sampling, seeded, the same for the same inputs on any device)."""
    n_items = history.n_cols
    free = n_items - history.lengths()[users.cpu()]
    short = (free < n).nonzero().squeeze(1)
    if len(short):
        u = int(users[short[0]])
        raise RankdistillError(f"user row {u} has only {int(free[short[0]])} items it never interacted with, "
                               f"fewer than the {n} sampled negatives asked for; lower the number of negatives")
    g = torch.Generator().manual_seed(seed)
    history = history.to("cpu")
    users_cpu = users.cpu()
    out = torch.empty(len(users), n, dtype=torch.int64)
    todo = torch.arange(len(users))
    m = n + n // 2 + 16
    while len(todo):
        draws = torch.randint(n_items, (len(todo), m), generator=g)
        good = ~(_in_csr(history, users_cpu[todo], draws) | _repeats(draws))
        done = good.sum(1) >= n
        keep = good[done] & (good[done].cumsum(1) <= n)
        out[todo[done]] = draws[done][keep].view(-1, n)
        todo = todo[~done]
        m = min(2 * m, 64 * n_items + n)
    return out.to(users.device)


def positive_ranks(pos_scores: torch.Tensor, neg_scores: torch.Tensor, pos_items: torch.Tensor,
                   neg_items: torch.Tensor) -> torch.Tensor:
    r"""0-based rank of each positive among its candidates, ties by item index.

    pos_scores [P], neg_scores [P, N], pos_items int64 [P], neg_items int64 [P, N] -> int64 [P]:
    r = |{j: s_j > s+}| + |{j: s_j = s+, i_j < i+}|."""
    above = neg_scores > pos_scores[:, None]
    tied_before = (neg_scores == pos_scores[:, None]) & (neg_items < pos_items[:, None])
    return (above | tied_before).sum(1)


def rank_gains(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """ranks int64 [P] -> gains [P, k]: 1 at the positive's position when it is within the top k."""
    return (torch.arange(k, device=ranks.device)[None, :] == ranks[:, None]).float()


@torch.no_grad()
def evaluate_sampled_per_user(
    model: Ranker,
    split: Split,
    on: str = "test",
    ks: tuple[int, ...] = (10, 20),
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    negatives: int = DEFAULT_NEGATIVES,
    seed: int = 0,
    memory_budget: int | None = None,
) -> PerUserMetrics:
    """Sampled metrics per user (mean over the user's held-out pairs); ``.sampled`` = {negatives, seed}."""
    check_names(ks, metrics)
    if negatives < 1:
        raise RankdistillError(f"negatives must be >= 1, got {negatives}")
    relevant, _ = targets(split, on)
    history = split.seen_before_test.union(split.test.to("cpu"))
    users = (relevant.lengths() > 0).nonzero().squeeze(1)
    pair_rows, pos_items = rows_of(relevant, users)  # one pair per held-out item, on the CPU
    pair_users = users[pair_rows]
    neg_items = sample_negatives(history, pair_users, negatives, seed)
    device = model_device(model)
    users, pair_rows, pair_users = users.to(device), pair_rows.to(device), pair_users.to(device)
    pos_items, neg_items = pos_items.to(device), neg_items.to(device)
    cand = torch.cat([pos_items[:, None], neg_items], 1)  # [P, 1 + N]
    chunk = max(1, (memory_budget or default_memory_budget(device)) // (64 * (negatives + 1)))
    was_training = model.training
    model.eval()
    try:
        scores = torch.cat([model.score(pair_users[a : a + chunk], cand[a : a + chunk])
                            for a in range(0, len(cand), chunk)]) if len(cand) else cand.float()
    finally:
        model.train(was_training)
    ranks = positive_ranks(scores[:, 0], scores[:, 1:], pos_items, neg_items)
    per_pair = compute_metrics(rank_gains(ranks, max(ks)), torch.ones_like(ranks), ks, metrics)
    counts = torch.bincount(pair_rows, minlength=len(users)).clamp_min(1)
    values = {name: torch.zeros(len(users), device=device).index_add_(0, pair_rows, v) / counts
              for name, v in per_pair.items()}
    n_relevant = relevant.lengths().to(device)[users]
    return PerUserMetrics(users, n_relevant, values, sampled={"negatives": negatives, "seed": seed})


def evaluate_sampled(
    model: Ranker,
    split: Split,
    on: str = "test",
    ks: tuple[int, ...] = (10, 20),
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    negatives: int = DEFAULT_NEGATIVES,
    seed: int = 0,
    memory_budget: int | None = None,
) -> dict:
    """Sampled evaluation, labelled: {"sampled": True, "negatives": N, "seed": s, "ndcg@10": ..., ...}."""
    per_user = evaluate_sampled_per_user(as_ranker(model), split, on, ks, metrics, negatives, seed, memory_budget)
    return {"sampled": True, "negatives": negatives, "seed": seed, **per_user.means()}
