"""Full-ranking evaluation: every item outside the user's history is a candidate.

For a dot-product model the item matrix is computed once; users are scored in chunks by one matmul into a
reused buffer, the history is masked with -inf, and the top K is taken on the device. Other rankers fill
the same buffer through ``score_all``. The chunk size follows from a memory budget, so the catalogue size
bounds memory, not the number of users.

Protocol (the same for every model): on ``valid`` the training items are masked; on ``test`` the training
and validation items are masked. Ties: score descending, then item index ascending.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankdistill.data.csr import Csr
from rankdistill.data.split import Split
from rankdistill.evaluation.metrics import compute_metrics, mean_over_users
from rankdistill.evaluation.topk import topk_ties_by_index
from rankdistill.models.base import DotProductRanker, Ranker

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes for the score buffers of one chunk


def chunk_size(n_items: int, memory_budget: int = DEFAULT_MEMORY_BUDGET, cap: int = 4096) -> int:
    """Users per chunk so that the score and relevance buffers ([C, n_items] fp32 each) fit the budget."""
    return max(1, min(cap, memory_budget // max(1, 8 * n_items)))


@dataclass
class Ranking:
    items: torch.Tensor  # int64 [U, K] top-K item indices per user, best first
    scores: torch.Tensor  # float [U, K]


class _Scorer:
    """Scores a chunk of users against every item into a reused buffer."""

    def __init__(self, model: Ranker, n_items: int, chunk: int, device: torch.device) -> None:
        self.model = model
        self.items = model.item_matrix().T.contiguous() if isinstance(model, DotProductRanker) else None
        self.buffer = torch.empty(chunk, n_items, device=device)

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        out = self.buffer[: len(users)]
        if self.items is not None:
            return torch.mm(self.model.user_vectors(users), self.items, out=out)
        out.copy_(self.model.score_all(users))
        return out


@torch.no_grad()
def rank_all(
    model: Ranker,
    exclude: Csr,
    k: int,
    users: torch.Tensor | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Ranking:
    """Top-``k`` items for each user (default: all users), items in ``exclude`` masked. Users are scored in
    contiguous chunks; ``users`` must be sorted ascending when given."""
    was_training = model.training
    model.eval()
    device = exclude.indptr.device
    n_items = exclude.n_cols
    all_users = users if users is not None else torch.arange(exclude.n_rows, device=device)
    c = chunk_size(n_items, memory_budget)
    scorer = _Scorer(model, n_items, c, device)
    k_out = min(k, n_items)
    top_items = torch.empty(len(all_users), k_out, dtype=torch.int64, device=device)
    top_scores = torch.empty(len(all_users), k_out, device=device)
    minus_inf = torch.tensor(float("-inf"), device=device)
    for a in range(0, len(all_users), c):
        chunk = all_users[a : a + c]
        scores = scorer(chunk)
        rows, cols = _rows_of(exclude, chunk)
        scores.index_put_((rows, cols), minus_inf)
        top_scores[a : a + len(chunk)], top_items[a : a + len(chunk)] = topk_ties_by_index(scores, k_out)
    model.train(was_training)
    return Ranking(top_items, top_scores)


def _rows_of(csr: Csr, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row offsets in the chunk, columns) of the CSR entries of ``users`` [C]."""
    lengths = csr.indptr[users + 1] - csr.indptr[users]
    rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
    starts = torch.repeat_interleave(csr.indptr[users], lengths)
    offsets = torch.arange(len(rows), device=users.device) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    return rows, csr.indices[starts + offsets]


def hit_gains(ranking: Ranking, relevant: Csr, users: torch.Tensor | None = None) -> torch.Tensor:
    """Binary gains [U, K]: 1 where the ranked item is in the user's relevant set."""
    users = users if users is not None else torch.arange(relevant.n_rows, device=relevant.indptr.device)
    rows, cols = _rows_of(relevant, users)
    # (user, item) keys; isin over int64 keys is exact and vectorised.
    n = relevant.n_cols
    ranked_keys = torch.arange(len(users), device=users.device)[:, None] * n + ranking.items
    relevant_keys = rows * n + cols
    return torch.isin(ranked_keys, relevant_keys).float()


def evaluate(
    model: Ranker,
    split: Split,
    on: str = "test",
    ks: tuple[int, ...] = (10, 20),
    metrics: tuple[str, ...] = ("ndcg", "recall", "mrr"),
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, float]:
    """Mean full-ranking metrics over users with at least one ``on`` item. -> {"ndcg@10": ..., ...}"""
    per_user = evaluate_per_user(model, split, on, ks, metrics, memory_budget)
    return {name: mean_over_users(v) for name, v in per_user.items()}


def evaluate_per_user(
    model: Ranker,
    split: Split,
    on: str = "test",
    ks: tuple[int, ...] = (10, 20),
    metrics: tuple[str, ...] = ("ndcg", "recall", "mrr"),
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, torch.Tensor]:
    if on == "test":
        target, exclude = split.test, split.train.union(split.valid)
    elif on == "valid":
        target, exclude = split.valid, split.train
    else:
        raise ValueError(f"on must be 'test' or 'valid', got {on!r}")
    users = (target.lengths() > 0).nonzero().squeeze(1)
    ranking = rank_all(model, exclude, max(ks), users, memory_budget)
    gains = hit_gains(ranking, target, users)
    return compute_metrics(gains, target.lengths()[users], ks, metrics)
