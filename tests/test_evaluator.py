"""Full-ranking evaluator: chunked scoring paths against a per-user Python reference, masking, the tie rule,
graded relevance end to end, per-user parquet output and bounded memory."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import MatrixRanker
from rankdistill.data.csr import Csr
from rankdistill.data.split import Split
from rankdistill.evaluation.evaluator import (Ranking, chunk_shape, evaluate, evaluate_per_user, hit_gains,
                                              ideal_gains, rank_all)
from rankdistill.models.base import Forward, Ranker

L2 = math.log2


class TableRanker(Ranker):
    """A ranker that is not a dot product: scores read from a table [n_users, n_items]."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.n_users, self.n_items, self.embedding_dim = table.shape[0], table.shape[1], 0
        self.register_buffer("table", table.float())

    def forward(self, users, items, shared=None):
        return Forward(self.table[users[:, None], items], None, None, None, None, None, None)

    def score_all(self, users):
        return self.table[users].clone()


def csr(pairs, n_rows, n_cols) -> Csr:
    rows = np.array([p[0] for p in pairs], dtype=np.int64)
    cols = np.array([p[1] for p in pairs], dtype=np.int64)
    return Csr.from_pairs(rows, cols, n_rows, n_cols)


def reference_ranking(scores: torch.Tensor, exclude: Csr, k: int, users) -> list[list[int]]:
    """Per user, in Python: every item not excluded, sorted by (-score, index), first k."""
    out = []
    for u in users:
        seen = set(exclude.indices[exclude.indptr[u] : exclude.indptr[u + 1]].tolist())
        row = scores[u].tolist()
        out.append(sorted((i for i in range(len(row)) if i not in seen), key=lambda i: (-row[i], i))[:k])
    return out


def valid_items(ranking: Ranking) -> list[list[int]]:
    return [[i for i, ok in zip(r, v) if ok] for r, v in zip(ranking.items.tolist(), ranking.valid.tolist())]


def random_exclude(n_users, n_items, per_user, seed=0) -> Csr:
    rng = np.random.default_rng(seed)
    pairs = [(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False)]
    return csr(pairs, n_users, n_items)


@pytest.fixture()
def integer_model():
    g = torch.Generator().manual_seed(0)
    return MatrixRanker(torch.randint(-2, 3, (23, 4), generator=g), torch.randint(-2, 3, (3_000, 4), generator=g))


def test_dot_product_path_matches_reference_with_ties_and_masking(integer_model):
    exclude = random_exclude(23, 3_000, 40)
    ranking = rank_all(integer_model, exclude, 15, memory_budget=8 * 3_000 * 5)  # 5 users per chunk
    scores = integer_model.U @ integer_model.I.T
    assert valid_items(ranking) == reference_ranking(scores, exclude, 15, range(23))
    assert ranking.valid.all()


def test_dot_product_path_with_block_prefilter_matches_reference():
    g = torch.Generator().manual_seed(5)
    model = MatrixRanker(torch.randint(-2, 3, (9, 3), generator=g), torch.randint(-2, 3, (10_123, 3), generator=g))
    exclude = random_exclude(9, 10_123, 200, seed=5)
    ranking = rank_all(model, exclude, 4)  # 20 blocks of 500 + a tail >= 4 * k: the prefilter runs
    assert valid_items(ranking) == reference_ranking(model.U @ model.I.T, exclude, 4, range(9))


def test_users_in_any_order_and_subset(integer_model):
    exclude = random_exclude(23, 3_000, 10, seed=1)
    users = torch.tensor([17, 2, 9])
    ranking = rank_all(integer_model, exclude, 8, users)
    assert valid_items(ranking) == reference_ranking(integer_model.U @ integer_model.I.T, exclude, 8, [17, 2, 9])
    assert ranking.users.tolist() == [17, 2, 9]


def test_non_dot_product_ranker_in_user_chunks_matches_reference():
    g = torch.Generator().manual_seed(1)
    table = torch.randint(0, 7, (11, 90), generator=g).float()
    exclude = random_exclude(11, 90, 5, seed=2)
    ranking = rank_all(TableRanker(table), exclude, 12, memory_budget=64 * 90 * 3)
    assert valid_items(ranking) == reference_ranking(table, exclude, 12, range(11))


def test_non_dot_product_ranker_in_item_blocks_matches_reference():
    g = torch.Generator().manual_seed(2)
    table = torch.randint(0, 7, (11, 90), generator=g).float()
    exclude = random_exclude(11, 90, 5, seed=3)
    ranking = rank_all(TableRanker(table), exclude, 12, item_block=13)  # 7 blocks, the last one short
    assert valid_items(ranking) == reference_ranking(table, exclude, 12, range(11))


def test_dot_product_path_in_item_blocks_matches_reference(integer_model):
    exclude = random_exclude(23, 3_000, 30, seed=4)
    ranking = rank_all(integer_model, exclude, 10, item_block=700)
    assert valid_items(ranking) == reference_ranking(integer_model.U @ integer_model.I.T, exclude, 10, range(23))


def test_fewer_candidates_than_k_leaves_invalid_positions():
    model = MatrixRanker(torch.ones(2, 1), torch.arange(6.0)[:, None])
    exclude = csr([(0, 0), (0, 1), (0, 2), (0, 3)], 2, 6)  # user 0 has 2 candidates left
    ranking = rank_all(model, exclude, 4)
    assert valid_items(ranking) == [[5, 4], [5, 4, 3, 2]]
    assert ranking.valid.tolist() == [[True, True, False, False], [True] * 4]


def test_masked_relevant_item_never_counts_as_a_hit():
    # user 0's relevant item 1 is also in its history: masked, it may fill an invalid position but is no hit
    model = MatrixRanker(torch.ones(1, 1), torch.arange(3.0)[:, None])
    ranking = rank_all(model, csr([(0, 0), (0, 1)], 1, 3), 3)
    gains = hit_gains(ranking, csr([(0, 1)], 1, 3))
    assert ranking.items.tolist() == [[2, 0, 1]] and gains.tolist() == [[0.0, 0.0, 0.0]]


def test_k_larger_than_the_catalogue_returns_every_candidate():
    model = MatrixRanker(torch.ones(1, 1), torch.tensor([[1.0], [3.0], [2.0]]))
    ranking = rank_all(model, csr([], 1, 3), 10)
    assert ranking.items.tolist() == [[1, 2, 0]]


def tiny_split() -> tuple[Split, MatrixRanker]:
    """3 users, 6 items; item scores 6..1 for everyone (item 0 best), so rankings are easy to write out."""
    model = MatrixRanker(torch.ones(3, 1), torch.tensor([[6.0], [5.0], [4.0], [3.0], [2.0], [1.0]]))
    train = csr([(0, 0), (1, 1), (2, 0)], 3, 6)
    valid = csr([(0, 1), (1, 2), (2, 5)], 3, 6)
    test = csr([(0, 3), (0, 5), (1, 0)], 3, 6)  # user 2 has no test item
    return Split("manual", 3, 6, train, valid, test), model


def test_evaluate_hand_computed_on_a_tiny_split():
    split, model = tiny_split()
    out = evaluate(model, split, "test", (3,), ("ndcg", "recall", "mrr", "precision"))
    # user 0: train 0 and valid 1 masked -> ranking 2, 3, 4 (5 is 4th); relevant {3, 5}: hit at rank 2
    u0_ndcg = (1 / L2(3)) / (1 / L2(2) + 1 / L2(3))
    # user 1: masked 1, 2 -> ranking 0, 3, 4; relevant {0}: hit at rank 1
    u1_ndcg = 1.0
    assert out["ndcg@3"] == pytest.approx((u0_ndcg + u1_ndcg) / 2)  # user 2 has no test item: left out
    assert out["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert out["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert out["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)


def test_evaluate_on_valid_masks_only_training_items():
    split, model = tiny_split()
    out = evaluate(model, split, "valid", (1,), ("hit",))
    # user 0: masked 0 -> top item 1 = its valid item; user 1: masked 1 -> top 0, valid 2 missed;
    # user 2: masked 0 -> top 1, valid 5 missed
    assert out["hit@1"] == pytest.approx(1 / 3)


def test_graded_relevance_end_to_end():
    split, model = tiny_split()
    relevance = torch.tensor([1.0, 3.0, 2.0])  # aligned with split.test.indices: (0,3)=1, (0,5)=3, (1,0)=2
    per_user = evaluate_per_user(model, split, "test", (5,), ("ndcg",), relevance=relevance)
    # user 0: ranking 2, 3, 4, 5 -> gains 0, 1, 0, 3; ideal 3, 1
    dcg = 1 / L2(3) + 3 / L2(5)
    idcg = 3 / L2(2) + 1 / L2(3)
    assert per_user.values["ndcg@5"].tolist() == pytest.approx([dcg / idcg, 1.0])
    assert per_user.n_relevant.tolist() == [2, 1]


def test_negative_relevance_gains_zero_in_the_ranking_and_the_ideal():
    model = MatrixRanker(torch.ones(1, 1), torch.tensor([[3.0], [2.0], [1.0]]))
    ranking = rank_all(model, csr([], 1, 3), 3)  # items 0, 1, 2
    judged = csr([(0, 0), (0, 1)], 1, 3)
    relevance = torch.tensor([-1.0, 2.0])  # item 0: -1 (non-relevant), item 1: 2
    assert hit_gains(ranking, judged, None, relevance).tolist() == [[0.0, 2.0, 0.0]]
    assert ideal_gains(judged, torch.arange(1), 2, relevance).tolist() == [[2.0, 0.0]]


def test_ideal_gains_sort_relevances_per_user():
    judged = csr([(0, 4), (0, 1), (0, 2), (2, 0)], 3, 5)  # indices sorted per row: (0,1), (0,2), (0,4), (2,0)
    relevance = torch.tensor([2.0, 0.0, 5.0, 1.0])
    ideal = ideal_gains(judged, torch.arange(3), 2, relevance)
    assert ideal.tolist() == [[5.0, 2.0], [0.0, 0.0], [1.0, 0.0]]


def test_per_user_results_write_to_parquet(tmp_path):
    split, model = tiny_split()
    per_user = evaluate_per_user(model, split, "test", (3,), ("ndcg", "recall"))
    path = per_user.write_parquet(tmp_path / "out" / "per_user.parquet", user_ids=np.array(["a", "b", "c"]))
    frame = pd.read_parquet(path, engine="fastparquet")
    assert list(frame.columns) == ["user", "n_relevant", "ndcg@3", "recall@3"]
    assert frame["user"].tolist() == ["a", "b"] and frame["n_relevant"].tolist() == [2, 1]
    assert frame["recall@3"].tolist() == pytest.approx([0.5, 1.0])


def test_chunk_shape_bounds_memory_for_a_million_items():
    budget = 512 * 2**20
    users, items = chunk_shape(1_000_000, budget)
    assert items == 1_000_000 and users * items * 8 <= budget and users >= 16
    users, items = chunk_shape(10**9, budget)  # not even 16 full rows fit: items come in blocks
    assert items < 10**9 and users * items * 8 <= budget


def test_rank_all_restores_training_mode(integer_model):
    integer_model.train()
    rank_all(integer_model, random_exclude(23, 3_000, 1), 3)
    assert integer_model.training


def test_mismatched_catalogue_is_an_error(integer_model):
    with pytest.raises(ValueError, match="3000 items"):
        rank_all(integer_model, csr([], 23, 10), 3)
