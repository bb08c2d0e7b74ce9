"""Tile-by-tile top-K of dot products (rankdistill.evaluation.streaming) against the dense reference: the
seen items masked in a full score matrix, then topk_ties_by_index (score descending, item index ascending);
and the evaluator's use of it against its whole-row path."""

import numpy as np
import torch

from helpers import MatrixRanker
from rankdistill.data.csr import Csr
from rankdistill.evaluation import evaluator, streaming
from rankdistill.evaluation.evaluator import rank_all, rows_of
from rankdistill.evaluation.topk import topk_ties_by_index


def random_seen(n_users: int, n_items: int, per_user: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.arange(n_users).repeat_interleave(per_user), torch.randint(0, n_items, (n_users * per_user,),
                                                                           generator=g)


def dense_reference(users, items, rows, cols, k):
    scores = users @ items.T
    scores[rows, cols] = float("-inf")
    return topk_ties_by_index(scores, k)


def assert_same(result, expected):
    assert result is not None
    assert torch.equal(result[1], expected[1])
    assert torch.equal(result[0], expected[0])


def test_real_valued_scores_over_many_tiles_match_the_dense_top_k():
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(7, 8, generator=g), torch.randn(5_003, 8, generator=g)  # a short last tile
    rows, cols = random_seen(7, 5_003, 30)
    result = streaming.stream_topk(users, items, rows, cols, 12, max_kept=1 << 20, tile=256, block=16)
    assert_same(result, dense_reference(users, items, rows, cols, 12))


def test_integer_scores_with_many_ties_keep_the_lowest_indices():
    g = torch.Generator().manual_seed(1)
    users = torch.randint(-2, 3, (9, 3), generator=g).float()
    items = torch.randint(-2, 3, (2_000, 3), generator=g).float()
    rows, cols = random_seen(9, 2_000, 50, seed=1)
    result = streaming.stream_topk(users, items, rows, cols, 15, max_kept=1 << 20, tile=200, block=8)
    assert_same(result, dense_reference(users, items, rows, cols, 15))


def test_tile_not_a_multiple_of_the_block_is_rounded_down():
    g = torch.Generator().manual_seed(2)
    users, items = torch.randn(3, 4, generator=g), torch.randn(999, 4, generator=g)
    rows, cols = random_seen(3, 999, 5, seed=2)
    result = streaming.stream_topk(users, items, rows, cols, 5, max_kept=1 << 20, tile=100, block=7)
    assert_same(result, dense_reference(users, items, rows, cols, 5))


def test_rows_with_fewer_candidates_than_k_end_with_minus_inf_in_index_order():
    users, items = torch.ones(2, 1), torch.arange(300.0)[:, None]
    rows = torch.zeros(297, dtype=torch.int64)
    cols = torch.arange(297)  # user 0: only items 297, 298, 299 left
    result = streaming.stream_topk(users, items, rows, cols, 5, max_kept=1 << 20, tile=64, block=4)
    assert_same(result, dense_reference(users, items, rows, cols, 5))
    assert result[1][0].tolist() == [299, 298, 297, 0, 1]
    assert result[0][0, 3:].tolist() == [float("-inf")] * 2


def test_gives_up_when_ties_would_keep_more_than_max_kept():
    users, items = torch.ones(4, 1), torch.ones(1_000, 1)  # every score tied: every block is kept
    none = torch.empty(0, dtype=torch.int64)
    assert streaming.stream_topk(users, items, none, none, 3, max_kept=500, tile=100, block=10) is None
    assert_same(streaming.stream_topk(users, items, none, none, 3, max_kept=4_000, tile=100, block=10),
                dense_reference(users, items, none, none, 3))


def test_fewer_blocks_than_k_is_left_to_the_caller():
    users, items = torch.ones(1, 1), torch.arange(20.0)[:, None]
    none = torch.empty(0, dtype=torch.int64)
    assert streaming.stream_topk(users, items, none, none, 6, max_kept=1 << 20, tile=8, block=4) is None


def exclude_csr(n_users, n_items, per_user, seed=0) -> Csr:
    rows, cols = random_seen(n_users, n_items, per_user, seed)
    return Csr.from_pairs(rows.numpy(), cols.numpy(), n_users, n_items)


def whole_rows(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(streaming, "tile_users", lambda n_items, k, memory_budget: 0)
        return rank_all(*args, **kwargs)


def test_rank_all_streams_and_equals_its_whole_row_path_bit_for_bit(monkeypatch):
    g = torch.Generator().manual_seed(3)
    model = MatrixRanker(torch.randn(40, 16, generator=g), torch.randn(20_000, 16, generator=g))
    exclude = exclude_csr(40, 20_000, 60, seed=3)
    calls = []
    original = streaming.stream_topk
    monkeypatch.setattr(streaming, "stream_topk", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    monkeypatch.setattr(streaming, "TILE_USERS", 16)  # three passes, the last one short
    ranking = rank_all(model, exclude, 20)
    assert len(calls) == 3
    reference = whole_rows(monkeypatch, model, exclude, 20)
    assert torch.equal(ranking.items, reference.items) and torch.equal(ranking.scores, reference.scores)


def test_rank_all_falls_back_to_whole_rows_when_ties_keep_too_much(monkeypatch):
    model = MatrixRanker(torch.ones(6, 1), torch.ones(4_000, 1))  # all tied
    exclude = exclude_csr(6, 4_000, 10, seed=4)
    streamed, fallbacks = [], []
    stream, whole = streaming.stream_topk, evaluator._rank_chunk
    monkeypatch.setattr(streaming, "stream_topk", lambda *a, **kw: streamed.append(stream(*a, **kw))
                        or streamed[-1])
    monkeypatch.setattr(evaluator, "_rank_chunk", lambda *a: fallbacks.append(1) or whole(*a))
    monkeypatch.setattr(streaming, "TILE_ITEMS", 256)  # so that a pass of 6 users fits the small budget
    ranking = rank_all(model, exclude, 5, memory_budget=8 * 4_000 * 2)  # max_kept 8,000 < 6 × 4,000 tied
    assert streamed == [None] and fallbacks  # streaming gave up, the whole-row path ranked them
    rows, cols = rows_of(exclude, torch.arange(6))
    expected = dense_reference(model.U, model.I, rows, cols, 5)
    assert torch.equal(ranking.items, expected[1])


def test_rank_all_keeps_whole_rows_with_more_than_one_thread(monkeypatch):
    g = torch.Generator().manual_seed(5)
    model = MatrixRanker(torch.randn(4, 8, generator=g), torch.randn(5_000, 8, generator=g))
    exclude = exclude_csr(4, 5_000, 10, seed=5)
    calls = []
    monkeypatch.setattr(streaming, "stream_topk", lambda *a, **kw: calls.append(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ranking = rank_all(model, exclude, 10)
    finally:
        torch.set_num_threads(threads)
    assert calls == []
    rows, cols = rows_of(exclude, torch.arange(4))
    assert torch.equal(ranking.items, dense_reference(model.U, model.I, rows, cols, 10)[1])
