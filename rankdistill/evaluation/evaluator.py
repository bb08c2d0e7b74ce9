"""Full-ranking evaluation: every item outside the user's history is a candidate.

Protocol (the same for every model): on ``valid`` the training items are masked; on ``test`` the training
and validation items are masked. Ties: score descending, then item index ascending
(:mod:`rankdistill.evaluation.topk`). Means are over users with at least one relevant item.

How it runs, and why memory is bounded:

- **Dot-product rankers on the CPU, one thread** (the CLI's default), when rows are long enough for the
  prefilter (I >= 128·K): passes of 512 users (fewer when the 4096-item tile would take over a quarter of
  the budget) through :func:`rankdistill.evaluation.streaming.stream_topk`, which scores a cache-sized tile
  of items at a time and keeps only the item blocks that can still reach the top K: no [C, I] buffer in
  main memory, the same result (about 1.3x faster than the whole-row path, see
  benchmarks/results/evaluation-cpu.md); a pass whose scores tie so much that the kept blocks would pass
  half the budget falls back to the whole-row path.
- **Dot-product rankers** otherwise (:class:`DotProductRanker`): the item matrix is computed once; users are
  scored in chunks of C by one matmul into a reused [C, I] buffer, the chunk's seen items are set to -inf with one
  ``index_put_``, and the exact top K is taken on the device with the block-maximum prefilter
  (:func:`topk_blockmax`). C follows from ``memory_budget`` (the buffer takes about half of it), so memory is
  set by the budget and the catalogue, not by the number of users.
- **Other rankers**: chunks of users through ``Ranker.score_all`` into the same kind of buffer. When even a
  few users' full rows do not fit the budget, items are scored in blocks too, through ``Ranker.score``, and
  each block is merged into a running top K (:func:`merge_topk`), so any catalogue size fits.
- The dot-product path also takes item blocks when a single row does not fit the budget.

A user with fewer than K candidates gets ``-inf`` scores at the tail of the list; :attr:`Ranking.valid`
is False there and those positions never count as hits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rankdistill.data.csr import Csr
from rankdistill.data.split import Split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation import streaming
from rankdistill.evaluation.metrics import DEFAULT_METRICS, METRICS, compute_metrics, mean_over_users
from rankdistill.evaluation.topk import merge_topk, topk_blockmax
from rankdistill.models.base import DotProductRanker, Ranker, as_ranker

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes for one chunk's score buffer and the top-K work on it (CPU)
CUDA_MEMORY_BUDGET = 4 * 2**30  # on a GPU, at most this, and at most a quarter of the free memory
MAX_CHUNK = 4096  # users per chunk at most (larger chunks stop helping the matmul)
DEFAULT_PAIR_BYTES = 64  # bytes a non-dot-product ranker is assumed to use per scored (user, item) pair


def default_memory_budget(device: torch.device | str) -> int:
    """Bytes for the score buffers when the caller gives no budget: 512 MiB on the CPU; on a GPU 4 GiB or a
    quarter of the free memory, whichever is less (bigger chunks: the H200 ran 10,000 × 500,000 3.4x faster
    with 4 GiB than with 512 MiB, see benchmarks/evaluation.py)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(64 * 2**20, min(CUDA_MEMORY_BUDGET, free // 4)))
    return DEFAULT_MEMORY_BUDGET


def chunk_shape(n_items: int, memory_budget: int = DEFAULT_MEMORY_BUDGET, pair_bytes: int = 8,
                cap: int = MAX_CHUNK) -> tuple[int, int]:
    """(users per chunk C, items per block L) such that C·L·pair_bytes <= memory_budget.

    ``pair_bytes`` = 8 for a dot product: the fp32 score buffer plus as much again for the top-K work.
    L is the whole catalogue unless fewer than 16 full rows fit the budget."""
    if memory_budget <= 0 or pair_bytes <= 0:
        raise ValueError(f"memory_budget and pair_bytes must be > 0, got {memory_budget} and {pair_bytes}")
    cells = max(1, memory_budget // pair_bytes)
    if cells >= 16 * n_items:
        return min(cap, cells // max(1, n_items)), n_items
    users = min(cap, 16)
    return users, max(1, cells // users)


def chunk_size(n_items: int, memory_budget: int = DEFAULT_MEMORY_BUDGET, cap: int = MAX_CHUNK) -> int:
    """Users per chunk of the dot-product path (see :func:`chunk_shape`)."""
    return chunk_shape(n_items, memory_budget, 8, cap)[0]


@dataclass
class Ranking:
    """Top-K lists of a set of users, best first.

    items int64 [U, K]; scores float [U, K], -inf where the user had fewer than K candidates (then ``items``
    holds masked items in index order there, never to be counted); users int64 [U] (None: rows are users
    0..U-1)."""

    items: torch.Tensor
    scores: torch.Tensor
    users: torch.Tensor | None = None

    @property
    def valid(self) -> torch.Tensor:
        """bool [U, K]: the position holds a real candidate (its score is above -inf)."""
        return self.scores > float("-inf")

    @property
    def k(self) -> int:
        return self.items.shape[1]


def rows_of(csr: Csr, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row offsets in ``users``, columns) of the CSR entries of ``users`` [C], both int64 [m], grouped by
    row in the order of ``users`` and sorted by column within each row."""
    lengths = csr.indptr[users + 1] - csr.indptr[users]
    rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
    starts = torch.repeat_interleave(csr.indptr[users], lengths)
    offsets = torch.arange(len(rows), device=users.device) - torch.repeat_interleave(lengths.cumsum(0) - lengths,
                                                                                     lengths)
    return rows, csr.indices[starts + offsets]


class _ChunkScorer:
    """Fills a reused [C, L] buffer with the scores of a chunk of users against items a..b-1."""

    def __init__(self, model: Ranker, n_items: int, chunk: int, block: int, device: torch.device) -> None:
        self.model, self.n_items, self.block = model, n_items, block
        self.dot = isinstance(model, DotProductRanker)
        self.device, self.chunk = device, chunk
        self._item_t = self._item_rows = self._buffer = None

    @property
    def item_t(self) -> torch.Tensor:
        """[D, I] contiguous: the whole-row matmul reads it once per chunk; computed once per evaluation."""
        if self._item_t is None:
            self._item_t = self.model.item_matrix().T.contiguous().to(self.device)
        return self._item_t

    @property
    def item_rows(self) -> torch.Tensor:
        """[I, D] contiguous: the item matrix as :func:`streaming.stream_topk` reads it, tile by tile."""
        if self._item_rows is None:
            self._item_rows = self.model.item_matrix().contiguous().to(self.device)
        return self._item_rows

    @property
    def buffer(self) -> torch.Tensor:
        """The reused [C·L] score buffer of the whole-row and item-block paths (allocated on first use)."""
        if self._buffer is None:
            self._buffer = torch.empty(self.chunk * self.block, device=self.device)
        return self._buffer

    def __call__(self, users: torch.Tensor, a: int, b: int, user_vectors: torch.Tensor | None) -> torch.Tensor:
        out = self.buffer[: len(users) * (b - a)].view(len(users), b - a)
        if self.dot:
            items = self.item_t if (a, b) == (0, self.n_items) else self.item_t[:, a:b]
            return torch.mm(user_vectors, items, out=out)
        if (a, b) == (0, self.n_items):
            return out.copy_(self.model.score_all(users))
        cand = torch.arange(a, b, device=users.device).expand(len(users), -1)
        return out.copy_(self.model.forward(users, cand).scores)  # score() less its index check: indices built here


@torch.no_grad()
def rank_all(
    model: Ranker,
    exclude: Csr,
    k: int,
    users: torch.Tensor | None = None,
    memory_budget: int | None = None,
    pair_bytes: int | None = None,
    item_block: int | None = None,
) -> Ranking:
    """Exact top-``k`` items of each user (default: every user) among the items not in ``exclude``.

    model: any Ranker, put in eval mode for the call; exclude: Csr [n_users rows, n_items cols] of items to
    mask per user; users int64 [U] in any order. memory_budget: bytes for the chunk's buffers (None:
    :func:`default_memory_budget` of the model's device). pair_bytes: memory per scored (user, item) pair,
    default 8 for dot products and ``model.score_bytes_per_pair`` or 64 otherwise. item_block: force item
    blocks of this size (normally derived from the budget). -> Ranking with K = min(k, n_items), on the
    model's device."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model = as_ranker(model)
    device = model_device(model)
    exclude = exclude.to(device)
    memory_budget = memory_budget or default_memory_budget(device)
    n_items = exclude.n_cols
    if model.n_items != n_items:
        raise ValueError(f"the model scores {model.n_items} items but the exclusion lists have {n_items} columns")
    users = torch.arange(exclude.n_rows, device=device) if users is None else users.to(device)
    dot = isinstance(model, DotProductRanker)
    if pair_bytes is None:
        pair_bytes = 8 if dot else int(getattr(model, "score_bytes_per_pair", DEFAULT_PAIR_BYTES))
    chunk, block = chunk_shape(n_items, memory_budget, pair_bytes)
    if item_block is not None:
        block = max(1, min(item_block, n_items))
        chunk = min(chunk, max(1, memory_budget // (pair_bytes * block)))
    was_training = model.training
    model.eval()
    try:
        scorer = _ChunkScorer(model, n_items, chunk, block, device)
        k_out = min(k, n_items)
        top_items = torch.empty(len(users), k_out, dtype=torch.int64, device=device)
        top_scores = torch.empty(len(users), k_out, device=device)
        workspace: dict = {}
        # One thread only: with two, on the 2-core CPU measured, streaming's many small ops each paid the
        # thread team's synchronisation and ran 1.9x slower than whole rows (benchmarks/results/evaluation-cpu.md).
        streamed = dot and device.type == "cpu" and item_block is None and torch.get_num_threads() == 1
        passes = streaming.tile_users(n_items, k_out, memory_budget) if streamed else 0
        step = passes or chunk
        for a in range(0, len(users), step):
            pass_users = users[a : a + step]
            result = _stream_pass(scorer, pass_users, exclude, k_out, memory_budget, workspace) if passes else None
            if result is not None:
                top_scores[a : a + len(pass_users)], top_items[a : a + len(pass_users)] = result
                continue
            for b in range(0, len(pass_users), chunk):  # the whole-row path
                chunk_users = pass_users[b : b + chunk]
                v, i = _rank_chunk(scorer, chunk_users, exclude, k_out, block, workspace)
                top_scores[a + b : a + b + len(chunk_users)], top_items[a + b : a + b + len(chunk_users)] = v, i
    finally:
        model.train(was_training)
    return Ranking(top_items, top_scores, users)


def _stream_pass(scorer: _ChunkScorer, users: torch.Tensor, exclude: Csr, k: int, memory_budget: int,
                 workspace: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Top-k of a pass of users through :func:`streaming.stream_topk` (None: too many ties, see there)."""
    rows, cols = rows_of(exclude, users)
    return streaming.stream_topk(scorer.model.user_vectors(users), scorer.item_rows, rows, cols, k,
                                 max_kept=max(1, memory_budget // 8), workspace=workspace)


def _rank_chunk(scorer: _ChunkScorer, users: torch.Tensor, exclude: Csr, k: int, block: int,
                workspace: dict) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = rows_of(exclude, users)
    vectors = scorer.model.user_vectors(users) if scorer.dot else None
    minus_inf = torch.tensor(float("-inf"), device=users.device)
    if block >= scorer.n_items:  # the common case: whole rows
        scores = scorer(users, 0, scorer.n_items, vectors)
        scores.index_put_((rows, cols), minus_inf)
        return topk_blockmax(scores, k, workspace=workspace)
    # Item blocks, merged into a running top-K; the seen items are sorted by column once per chunk.
    order = torch.argsort(cols)
    rows, cols = rows[order], cols[order]
    starts = range(0, scorer.n_items, block)
    bounds = torch.searchsorted(cols, torch.tensor([*starts, scorer.n_items], device=cols.device)).tolist()
    values = torch.empty(len(users), 0, device=users.device)
    items = torch.empty(len(users), 0, dtype=torch.int64, device=users.device)
    for j, s in enumerate(starts):
        e = min(s + block, scorer.n_items)
        scores = scorer(users, s, e, vectors)
        lo, hi = bounds[j], bounds[j + 1]
        scores.index_put_((rows[lo:hi], cols[lo:hi] - s), minus_inf)
        values, items = merge_topk(values, items, scores, s, k)
    return values, items


def hit_gains(ranking: Ranking, relevant: Csr, users: torch.Tensor | None = None,
              relevance: torch.Tensor | None = None) -> torch.Tensor:
    """Gains [U, K] of each ranked position: the item's relevance if it is in the user's relevant set (1 for
    binary judgements), else 0; 0 at invalid positions.

    relevant: Csr of judged items per user; relevance: float [relevant.nnz] aligned with ``relevant.indices``
    (None: binary); users int64 [U]: the row of ``relevant`` for each ranking row (default ``ranking.users``,
    else 0..U-1)."""
    device = ranking.items.device
    if users is None:
        users = ranking.users if ranking.users is not None else torch.arange(len(ranking.items), device=device)
    rows, cols, vals = _judged(relevant, users, relevance)
    n = max(relevant.n_cols, 1)
    keys = rows * n + cols  # sorted: rows ascending, columns ascending within a row
    ranked = torch.arange(len(users), device=device)[:, None] * n + ranking.items
    if len(keys) == 0:
        return torch.zeros(ranking.items.shape, device=device)
    pos = torch.searchsorted(keys, ranked).clamp_max(len(keys) - 1)
    found = (keys[pos] == ranked) & ranking.valid
    return torch.where(found, vals[pos], torch.zeros((), device=device))


def _judged(relevant: Csr, users: torch.Tensor, relevance: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, columns, gain float) of the judged items of ``users``: the relevance, with relevance <= 0
    (non-relevant) as gain 0 — one rule for the ranked gains, the ideal gains and the counts."""
    rows, cols = rows_of(relevant, users)
    if relevance is None:
        return rows, cols, torch.ones(len(rows), device=rows.device)
    lengths = relevant.indptr[users + 1] - relevant.indptr[users]
    starts = torch.repeat_interleave(relevant.indptr[users], lengths)
    offsets = torch.arange(len(rows), device=rows.device) - torch.repeat_interleave(lengths.cumsum(0) - lengths,
                                                                                    lengths)
    return rows, cols, relevance.to(rows.device, torch.float32)[starts + offsets].clamp_min(0)


def relevance_counts(relevant: Csr, users: torch.Tensor, relevance: torch.Tensor | None = None) -> torch.Tensor:
    """int64 [U]: how many judged items of each user have relevance > 0 (all of them when binary)."""
    rows, _, vals = _judged(relevant, users, relevance)
    out = torch.zeros(len(users), dtype=torch.int64, device=users.device)
    return out.index_add_(0, rows, (vals > 0).long())


def ideal_gains(relevant: Csr, users: torch.Tensor, k: int, relevance: torch.Tensor | None = None) -> torch.Tensor:
    """float [U, k]: each user's positive relevances sorted descending, padded with 0 — the gains of the
    ideal ranking, from which IDCG@k is computed for every k' <= k."""
    rows, _, vals = _judged(relevant, users, relevance)
    order = torch.argsort(vals, descending=True, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then relevance descending
    rows, vals = rows[order], vals[order]
    counts = torch.bincount(rows, minlength=len(users))
    first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    rank = torch.arange(len(rows), device=rows.device) - first
    keep = rank < k
    out = torch.zeros(len(users), k, device=users.device)
    out[rows[keep], rank[keep]] = vals[keep]
    return out


@dataclass
class PerUserMetrics:
    """Per-user metric values of one evaluation.

    users int64 [U]: user rows evaluated; n_relevant int64 [U]; values: ``name@k`` -> float [U], NaN for
    users with no relevant item (left out of means). ``sampled`` is set by sampled evaluation
    (:mod:`rankdistill.evaluation.sampled`): {"negatives": N, "seed": s}."""

    users: torch.Tensor
    n_relevant: torch.Tensor
    values: dict[str, torch.Tensor]
    sampled: dict | None = field(default=None)

    def means(self) -> dict[str, float]:
        """{"ndcg@10": mean over users with at least one relevant item, ...} in ``values`` order."""
        return {name: mean_over_users(v) for name, v in self.values.items()}

    def to_frame(self, user_ids: np.ndarray | list | None = None):
        """A pandas DataFrame: ``user`` (raw ids when ``user_ids`` maps rows to ids, else rows),
        ``n_relevant``, one column per metric; plus ``sampled``/``negatives`` columns when sampled."""
        import pandas as pd

        rows = self.users.cpu().numpy()
        user = np.asarray(user_ids)[rows] if user_ids is not None else rows
        frame = pd.DataFrame({"user": user, "n_relevant": self.n_relevant.cpu().numpy()})
        for name, v in self.values.items():
            frame[name] = v.double().cpu().numpy()
        if self.sampled is not None:
            frame["sampled"] = True
            frame["negatives"] = int(self.sampled["negatives"])
        return frame

    def write_parquet(self, path: str | Path, user_ids: np.ndarray | list | None = None) -> Path:
        """Write :meth:`to_frame` to ``path`` (parquet, fastparquet engine); the folder is created."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_frame(user_ids).to_parquet(path, engine="fastparquet", index=False)
        return path


def model_device(model: Ranker) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def targets(split: Split, on: str) -> tuple[Csr, Csr]:
    """(relevant items, items to mask) for evaluating on ``on``: valid masks train; test masks train+valid.
    Both on the CPU (the union is built there)."""
    if on == "test":
        return split.test.to("cpu"), split.seen_before_test
    if on == "valid":
        return split.valid.to("cpu"), split.train.to("cpu")
    raise ValueError(f"on must be 'test' or 'valid', got {on!r}")


def check_names(ks: tuple[int, ...], metrics: tuple[str, ...]) -> None:
    """Raise RankdistillError unless ``ks`` are positive cut-offs and ``metrics`` known metric names."""
    if not ks or any(int(k) < 1 for k in ks):
        raise RankdistillError(f"cut-offs k must be positive integers, got {', '.join(map(str, ks)) or 'none'}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise RankdistillError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                               f"choose from {', '.join(METRICS)}")


def evaluate_per_user(
    model: Ranker,
    split: Split,
    on: str = "test",
    ks: tuple[int, ...] = (10, 20),
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    memory_budget: int | None = None,
    relevance: torch.Tensor | None = None,
) -> PerUserMetrics:
    """Full-ranking metrics of every user with at least one ``on`` item.

    relevance: float [nnz of the ``on`` split], graded relevance aligned with its CSR indices (None: binary).
    ``.means()`` gives the reported numbers; ``.write_parquet(path, vocab)`` the per-user table."""
    check_names(ks, metrics)
    model = as_ranker(model)
    relevant, exclude = targets(split, on)
    device = model_device(model)
    relevant = relevant.to(device)
    users = (relevant.lengths() > 0).nonzero().squeeze(1)
    ranking = rank_all(model, exclude, max(ks), users, memory_budget)
    gains = hit_gains(ranking, relevant, users, relevance)
    n_relevant = relevance_counts(relevant, users, relevance)
    ideal = ideal_gains(relevant, users, max(ks), relevance) if relevance is not None else None
    return PerUserMetrics(users, n_relevant, compute_metrics(gains, n_relevant, ks, metrics, ideal))


def evaluate(
    model: Ranker,
    split: Split,
    on: str = "test",
    ks: tuple[int, ...] = (10, 20),
    metrics: tuple[str, ...] = ("ndcg", "recall", "mrr"),
    memory_budget: int | None = None,
    relevance: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean full-ranking metrics over users with at least one ``on`` item. -> {"ndcg@10": ..., ...}

    model: a Ranker, or a loaded model directory (``rankdistill.load``) or TrainedModel holding one."""
    return evaluate_per_user(model, split, on, ks, metrics, memory_budget, relevance).means()
