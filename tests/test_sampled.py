"""Sampled evaluation (1 positive against N sampled negatives): off by default, labelled in every output,
negatives drawn outside the user's history, ranks with the package's tie rule."""

import math

import numpy as np
import pytest
import torch

from helpers import MatrixRanker
from rankdistill.data.csr import Csr
from rankdistill.data.split import Split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.evaluation.sampled import (evaluate_sampled, evaluate_sampled_per_user, positive_ranks, rank_gains,
                                            sample_negatives)


def csr(pairs, n_rows, n_cols) -> Csr:
    return Csr.from_pairs(np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64),
                          n_rows, n_cols)


def test_negatives_are_distinct_outside_the_history_and_seeded():
    history = csr([(0, i) for i in range(0, 50, 2)] + [(1, 3)], 2, 50)
    users = torch.tensor([0, 1, 0])
    neg = sample_negatives(history, users, 20, seed=7)
    assert neg.shape == (3, 20)
    for row, u in zip(neg.tolist(), users.tolist()):
        seen = set(history.indices[history.indptr[u] : history.indptr[u + 1]].tolist())
        assert len(set(row)) == 20 and not set(row) & seen
    assert torch.equal(neg, sample_negatives(history, users, 20, seed=7))
    assert not torch.equal(neg, sample_negatives(history, users, 20, seed=8))


def test_every_unseen_item_is_drawn_when_n_equals_the_unseen_count():
    history = csr([(0, 1), (0, 4)], 1, 6)
    assert sorted(sample_negatives(history, torch.tensor([0]), 4).tolist()[0]) == [0, 2, 3, 5]


def test_too_few_unseen_items_is_an_error_naming_the_numbers():
    history = csr([(0, i) for i in range(8)], 1, 10)
    with pytest.raises(RankdistillError, match="only 2 items .* fewer than the 5"):
        sample_negatives(history, torch.tensor([0]), 5)


def test_positive_rank_counts_higher_scores_and_lower_index_ties():
    pos_scores, pos_items = torch.tensor([2.0, 2.0]), torch.tensor([5, 5])
    neg_scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 2.0]])
    neg_items = torch.tensor([[9, 4, 0], [1, 6, 7]])
    # row 0: 3.0 above, and 2.0 on item 4 < 5 ties before it -> rank 2; row 1: ties on 6, 7 come after -> 0
    assert positive_ranks(pos_scores, neg_scores, pos_items, neg_items).tolist() == [2, 0]
    assert rank_gains(torch.tensor([2, 0, 7]), 3).tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]


def sampled_split():
    # 2 users, 8 items; item i scores i for everyone (item 7 best)
    model = MatrixRanker(torch.ones(2, 1), torch.arange(8.0)[:, None])
    train = csr([(0, 0), (1, 1)], 2, 8)
    valid = csr([(0, 2), (1, 2)], 2, 8)
    test = csr([(0, 7), (1, 3)], 2, 8)
    return Split("manual", 2, 8, train, valid, test), model


def test_sampled_metrics_hand_computed_with_all_unseen_items_as_negatives():
    split, model = sampled_split()
    # user 0: unseen {1, 3, 4, 5, 6}: the positive 7 beats all -> rank 0
    # user 1: unseen {0, 4, 5, 6, 7}: the positive 3 is beaten by 4, 5, 6, 7 -> rank 4
    out = evaluate_sampled(model, split, "test", (1, 5), ("ndcg", "hit", "mrr"), negatives=5)
    assert out["sampled"] is True and out["negatives"] == 5
    assert out["hit@1"] == pytest.approx(0.5)
    assert out["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(6)) / 2)
    assert out["mrr@5"] == pytest.approx((1.0 + 1 / 5) / 2)


def test_sampled_per_user_table_is_labelled():
    split, model = sampled_split()
    frame = evaluate_sampled_per_user(model, split, "test", (1,), ("hit",), negatives=3).to_frame()
    assert frame["sampled"].all() and (frame["negatives"] == 3).all()


def test_full_ranking_is_the_default_and_carries_no_sampled_label():
    split, model = sampled_split()
    out = evaluate(model, split, "test", (1,), ("hit",))
    assert "sampled" not in out and list(out) == ["hit@1"]
