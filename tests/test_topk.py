"""Exact top-K with the tie rule (score descending, then item index ascending): every fast path against a slow
Python reference that sorts by that rule."""

import pytest
import torch

from rankdistill.evaluation import topk as topk_module
from rankdistill.evaluation.topk import merge_topk, topk_blockmax, topk_ties_by_index


@pytest.fixture(autouse=True)
def prefilter_levels(monkeypatch):
    """Counts the prefilter levels applied, so each blockmax test can check that it took the fast path."""
    calls = []
    original = topk_module._prefilter

    def counting(scores, k, block, workspace, level):
        calls.append(block)
        return original(scores, k, block, workspace, level)

    monkeypatch.setattr(topk_module, "_prefilter", counting)
    return calls


def reference_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row's (score, index) pairs by (-score, index) and keep the first k — obviously right."""
    items = [sorted(range(len(row)), key=lambda i: (-row[i], i))[:k] for row in scores.tolist()]
    idx = torch.tensor(items, dtype=torch.int64)
    return scores.gather(1, idx), idx


def integer_scores(rows: int, cols: int, levels: int, seed: int = 0) -> torch.Tensor:
    """Scores with many ties: integers in [0, levels)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (rows, cols), generator=g).float()


def test_ties_at_the_kth_place_keep_the_lowest_indices():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0]])
    values, items = topk_ties_by_index(scores, 2)
    assert items.tolist() == [[1, 2]]
    assert values.tolist() == [[2.0, 2.0]]


def test_ties_inside_the_top_k_are_ordered_by_index():
    scores = torch.tensor([[5.0, 7.0, 5.0, 7.0, 1.0]])
    _, items = topk_ties_by_index(scores, 4)
    assert items.tolist() == [[1, 3, 0, 2]]


def test_plain_topk_matches_reference_with_many_ties():
    scores = integer_scores(40, 60, levels=5)
    for k in (1, 7, 30, 59):
        v, i = topk_ties_by_index(scores, k)
        rv, ri = reference_topk(scores, k)
        assert torch.equal(i, ri) and torch.equal(v, rv)


def test_k_larger_than_the_row_returns_every_column_in_order():
    scores = torch.tensor([[0.5, 2.0, 0.5]])
    values, items = topk_ties_by_index(scores, 10)
    assert items.tolist() == [[1, 0, 2]]
    assert values.shape == (1, 3)


def test_rows_with_fewer_finite_scores_than_k_end_with_minus_inf_in_index_order():
    inf = float("-inf")
    scores = torch.tensor([[inf, 3.0, inf, inf, 1.0, inf]])
    values, items = topk_ties_by_index(scores, 4)
    assert items.tolist() == [[1, 4, 0, 2]]
    assert values[0, 2:].tolist() == [inf, inf]


def test_blockmax_matches_plain_on_real_valued_scores(prefilter_levels):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(8, 20_000, generator=g)
    assert torch.equal(topk_blockmax(scores, 20, (200, 20))[1], topk_ties_by_index(scores, 20)[1])
    assert prefilter_levels == [200, 20]


def test_blockmax_matches_reference_with_ties_and_a_tail_block(prefilter_levels):
    scores = integer_scores(12, 3_001, levels=4, seed=2)  # 3001 = 30 blocks of 100 + a tail of 1
    for k in (1, 5, 7):
        v, i = topk_blockmax(scores, k, (100, 10))
        rv, ri = reference_topk(scores, k)
        assert torch.equal(i, ri) and torch.equal(v, rv)
    assert prefilter_levels == [100, 10] * 3


def test_blockmax_ties_straddling_blocks_keep_lowest_indices(prefilter_levels):
    scores = torch.zeros(2, 1000)
    scores[0, 997] = 1.0  # one clear winner in the tail block; every other score tied at 0
    scores[1] = float("-inf")
    scores[1, [5, 999]] = 0.0  # only two candidates: the rest must be masked items in index order
    v, i = topk_blockmax(scores, 6, (30,))
    rv, ri = reference_topk(scores, 6)
    assert torch.equal(i, ri) and torch.equal(v, rv)
    assert i[0].tolist() == [997, 0, 1, 2, 3, 4]
    assert prefilter_levels == [30]


def test_blockmax_with_masked_rows_matches_reference(prefilter_levels):
    scores = integer_scores(6, 2_000, levels=50, seed=3)
    scores[:, ::3] = float("-inf")
    scores[0, :1990] = float("-inf")  # fewer candidates than k
    v, i = topk_blockmax(scores, 5, (80, 8))
    rv, ri = reference_topk(scores, 5)
    assert torch.equal(i, ri) and torch.equal(v, rv)
    assert prefilter_levels == [80, 8]


def test_blockmax_workspace_reuse_gives_the_same_result():
    ws: dict = {}
    a = integer_scores(5, 4_000, levels=9, seed=4)
    b = integer_scores(3, 4_000, levels=9, seed=5)
    first = topk_blockmax(a, 10, (100, 10), ws)
    second = topk_blockmax(b, 10, (100, 10), ws)
    assert torch.equal(first[1], reference_topk(a, 10)[1])
    assert torch.equal(second[1], reference_topk(b, 10)[1])


def test_small_rows_fall_back_to_the_plain_top_k(prefilter_levels):
    scores = integer_scores(3, 50, levels=3)
    assert torch.equal(topk_blockmax(scores, 10)[1], reference_topk(scores, 10)[1])
    assert prefilter_levels == []


def test_merging_item_blocks_equals_one_pass():
    scores = integer_scores(7, 95, levels=6, seed=6)
    values = torch.empty(7, 0)
    items = torch.empty(7, 0, dtype=torch.int64)
    for start in range(0, 95, 20):
        values, items = merge_topk(values, items, scores[:, start : start + 20], start, 12)
    rv, ri = reference_topk(scores, 12)
    assert torch.equal(items, ri) and torch.equal(values, rv)
