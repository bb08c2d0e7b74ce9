"""Metrics as pure functions of a top-K gain matrix: hand-computed cases with the terms written out, one test
per edge case, and agreement with scikit-learn's ndcg_score where the conventions coincide."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from rankdistill.evaluation.metrics import (DEFAULT_METRICS, HIGHER_IS_BETTER, average_precision, compute_metrics,
                                            dcg, hit_rate, higher_is_better, mean_over_users, mrr, ndcg, precision,
                                            recall)
from rankdistill.evaluation.topk import topk_ties_by_index

L2 = math.log2


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def test_ndcg_binary_hand_computed():
    # ranked: miss, hit, miss, hit; the user has 3 relevant items
    gains, n_rel = t([[0, 1, 0, 1]]), torch.tensor([3])
    dcg4 = 1 / L2(3) + 1 / L2(5)
    idcg4 = 1 / L2(2) + 1 / L2(3) + 1 / L2(4)
    assert ndcg(gains, n_rel, 4).item() == pytest.approx(dcg4 / idcg4)
    # at k=2 the ideal list holds two relevant items
    assert ndcg(gains, n_rel, 2).item() == pytest.approx((1 / L2(3)) / (1 / L2(2) + 1 / L2(3)))


def test_ndcg_graded_hand_computed():
    # relevances of the user's items: 3, 2, 1; the ranking puts 3 first, a non-relevant item second, 1 third
    gains, n_rel, ideal = t([[3, 0, 1]]), torch.tensor([3]), t([[3, 2, 1]])
    dcg3 = 3 / L2(2) + 0 / L2(3) + 1 / L2(4)
    idcg3 = 3 / L2(2) + 2 / L2(3) + 1 / L2(4)
    assert ndcg(gains, n_rel, 3, ideal).item() == pytest.approx(dcg3 / idcg3)


def test_recall_precision_hit_mrr_map_hand_computed():
    gains, n_rel = t([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0]]), torch.tensor([4, 2])
    assert recall(gains, n_rel, 5).tolist() == pytest.approx([3 / 4, 0.0])
    assert precision(gains, n_rel, 5).tolist() == pytest.approx([3 / 5, 0.0])
    assert hit_rate(gains, n_rel, 5).tolist() == [1.0, 0.0]
    assert mrr(gains, n_rel, 5).tolist() == pytest.approx([1 / 2, 0.0])
    # AP@5 = (P@2 + P@4 + P@5) / |relevant| = (1/2 + 2/4 + 3/5) / 4
    assert average_precision(gains, n_rel, 5).tolist() == pytest.approx([(1 / 2 + 2 / 4 + 3 / 5) / 4, 0.0])
    assert mrr(gains, n_rel, 1).tolist() == [0.0, 0.0]


def test_dcg_terms():
    assert dcg(t([[1, 1, 1]]), 3).item() == pytest.approx(1 + 1 / L2(3) + 1 / L2(4))


def test_negative_gains_count_as_zero_in_every_metric():
    # relevance <= 0 is non-relevant: a gain of -2 at rank 1 adds nothing (not -2) to DCG and is no hit
    gains, n_rel = t([[-2, 1]]), torch.tensor([1])
    assert dcg(gains, 2).item() == pytest.approx(1 / L2(3))
    assert ndcg(gains, n_rel, 2).item() == pytest.approx(1 / L2(3))
    assert ndcg(gains, n_rel, 2, ideal=t([[1, -2]])).item() == pytest.approx(1 / L2(3))
    assert mrr(gains, n_rel, 2).item() == 0.5 and precision(gains, n_rel, 2).item() == 0.5


def test_users_without_relevant_items_are_nan_and_left_out_of_means():
    gains, n_rel = t([[1, 0], [0, 0], [0, 1]]), torch.tensor([1, 0, 1])
    values = ndcg(gains, n_rel, 2)
    assert torch.isnan(values[1]) and not torch.isnan(values[[0, 2]]).any()
    assert mean_over_users(values) == pytest.approx((1.0 + 1 / L2(3)) / 2)


def test_mean_is_zero_when_no_user_has_a_relevant_item():
    assert mean_over_users(recall(t([[0, 0]]), torch.tensor([0]), 2)) == 0.0


def test_fewer_candidates_than_k_count_as_misses():
    # the list holds 2 items (the catalogue had only 2 candidates); k = 5
    gains, n_rel = t([[1, 0]]), torch.tensor([2])
    assert precision(gains, n_rel, 5).item() == pytest.approx(1 / 5)  # divided by k, not by the list length
    assert recall(gains, n_rel, 5).item() == pytest.approx(1 / 2)
    assert ndcg(gains, n_rel, 5).item() == pytest.approx(1 / (1 + 1 / L2(3)))
    assert average_precision(gains, n_rel, 5).item() == pytest.approx(1 / 2)


def test_more_relevant_items_than_k_cap_the_ideal_dcg_at_k():
    gains, n_rel = t([[1, 1]]), torch.tensor([10])
    assert ndcg(gains, n_rel, 2).item() == pytest.approx(1.0)
    assert recall(gains, n_rel, 2).item() == pytest.approx(2 / 10)


def test_compute_metrics_orders_keys_by_k_then_metric():
    out = compute_metrics(t([[1, 0, 0]]), torch.tensor([1]), (1, 3))
    assert list(out) == [f"{m}@{k}" for k in (1, 3) for m in DEFAULT_METRICS]


def test_every_metric_says_higher_is_better():
    assert set(HIGHER_IS_BETTER) == set(DEFAULT_METRICS) and all(HIGHER_IS_BETTER.values())
    assert higher_is_better("ndcg@10") and higher_is_better("overlap@20") and higher_is_better("kendall_tau@10")
    with pytest.raises(KeyError):
        higher_is_better("loss@10")


def _gains_and_ideal(relevance: np.ndarray, scores: np.ndarray, k: int):
    rel = torch.from_numpy(relevance).double()
    _, items = topk_ties_by_index(torch.from_numpy(scores), k)
    gains = rel.gather(1, items)
    ideal = rel.sort(1, descending=True).values[:, :k]
    return gains, (rel > 0).sum(1), ideal


def test_graded_ndcg_agrees_with_sklearn_ndcg_score():
    # sklearn: gain = relevance, discount log2(r + 1), ideal over all items cut at k — the same conventions
    # when scores have no ties (sklearn averages tied gains, we order ties by index).
    rng = np.random.default_rng(0)
    relevance = rng.integers(0, 4, size=(30, 40)).astype(float)
    relevance[:, 0] = 1.0  # every user has a relevant item (sklearn scores all-zero rows differently)
    scores = rng.normal(size=(30, 40))
    for k in (1, 5, 10, 40):
        gains, n_rel, ideal = _gains_and_ideal(relevance, scores, k)
        ours = ndcg(gains, n_rel, k, ideal)
        theirs = [ndcg_score(relevance[u : u + 1], scores[u : u + 1], k=k) for u in range(30)]
        assert ours.tolist() == pytest.approx(theirs, abs=1e-12)


def test_binary_ndcg_agrees_with_sklearn_ndcg_score():
    rng = np.random.default_rng(1)
    relevance = (rng.random((25, 50)) < 0.1).astype(float)
    relevance[:, 3] = 1.0
    scores = rng.normal(size=(25, 50))
    gains, n_rel, _ = _gains_and_ideal(relevance, scores, 10)
    ours = mean_over_users(ndcg(gains, n_rel, 10))
    assert ours == pytest.approx(ndcg_score(relevance, scores, k=10), abs=1e-12)
