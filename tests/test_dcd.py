"""DCD (Lee & Kim, CIKM 2021, user side) against the paper: the under- and over-estimated sets, the teacher
rank of over-estimated items beyond K online, no item in both sets, the student's ranks without a full sort.
A one-user example is worked out by hand."""

import math

import numpy as np
import pytest
import torch

from rankdistill.config import DistillConfig, ModelConfig
from rankdistill.data.csr import Csr
from rankdistill.losses.topk import discrepancy_weights
from rankdistill.models.factory import build_model
from rankdistill.train.discrepancy import SATURATION, list_positions, saturation_depth
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective
from helpers import tiny_batch, tiny_student


def _ranker(scores: list[float]):
    """A dim-4 two-tower model of one user whose scores of the items are ``scores``."""
    model = build_model(ModelConfig(embedding_dim=4), 1, len(scores), seed=0)
    with torch.no_grad():
        model.user_table.weight.zero_()
        model.user_table.weight[0, 0] = 1.0
        model.item_table.weight.zero_()
        model.item_table.weight[:, 0] = torch.tensor(scores)
    return model


# one user, 7 items; item 6 is its training item (left out of both rankings)
#   teacher ranking: 0, 1, 2, 4, 3, 5         top-3 (K = 3): 0, 1, 2
#   student ranking: 2, 3, 0, 4, 5, 1         top-3: 2, 3, 0
TEACHER = [6.0, 5.0, 4.0, 2.0, 3.0, 1.0, -9.0]
STUDENT = [4.0, 1.0, 6.0, 5.0, 3.0, 2.0, -9.0]
EXCLUDE = Csr.from_pairs(np.array([0]), np.array([6]), 1, 7)


def _one_user(online: bool):
    teacher = _ranker(TEACHER)
    knowledge = TeacherKnowledge(torch.tensor([[0, 1, 2]]), torch.tensor([[6.0, 5.0, 4.0]]), 7, exclude=EXCLUDE)
    config = DistillConfig(kd="dcd", topk=3, topk_samples=2, dcd_samples=2, dcd_mu=1.0)
    return DistillationObjective(teacher if online else None, knowledge, config, seed=3)


@pytest.mark.parametrize("online", [True, False])
def test_dcd_one_user_by_hand(online):
    objective, student = _one_user(online), _ranker(STUDENT)
    seen = []
    term = objective.terms["dcd"]
    original = term.forward
    term.forward = lambda b: (seen.append(b), original(b))[1]
    _, parts = objective(student, torch.tensor([0]), torch.tensor([6]), torch.tensor([3, 4, 5]))
    log_under, student_top, teacher_rank, log_over = objective.dcd_state
    t = math.tanh
    # under-estimated, over the teacher's top-3 (items 0, 1, 2 at teacher ranks 0, 1, 2; student ranks 2, 5, 0):
    # tanh(max(μ (r_s - r_t), 0)) with μ = 1 -> tanh 2, tanh 4, 0
    assert torch.allclose(log_under.exp(), torch.tensor([[t(2), t(4), 0.0]]))
    # over-estimated, over the student's top-3 (items 2, 3, 0 at student ranks 0, 1, 2): teacher ranks 2, 4, 0
    # online (item 3 is the teacher's 5th); cached only "outside the top-3" is known and K = 3 stands for it
    assert student_top.tolist() == [[2, 3, 0]]
    assert teacher_rank.tolist() == ([[2, 4, 0]] if online else [[2, 3, 0]])
    assert torch.allclose(log_over.exp(), torch.tensor([[t(2), t(3) if online else t(2), 0.0]]))
    # D = 2 draws every item of positive weight: under {0, 1}, over {2, 3} (item 2 is in the teacher's top-3,
    # but over-estimated: it goes below the under-estimated items all the same)
    b = seen[0]
    s = b.student[0, b.dcd].tolist()
    assert sorted(s[:2]) == [1.0, 4.0] and sorted(s[2:]) == [5.0, 6.0]
    e = math.exp  # the paper's relaxed permutation probability: 0 then 1 (teacher order) above {2, 3}
    expected = -(4 - math.log(e(4) + e(1) + e(6) + e(5))) - (1 - math.log(e(1) + e(6) + e(5)))
    assert math.isclose(float(parts["dcd"]), expected, rel_tol=1e-6)


def test_dcd_online_ranks_the_over_estimated_items_beyond_k():
    online, cached = _one_user(True), _one_user(False)
    student = _ranker(STUDENT)
    online._refresh_dcd(student)
    cached._refresh_dcd(student)
    assert online.dcd_state[2][0, 1] == 4 and cached.dcd_state[2][0, 1] == 3


def test_dcd_never_draws_an_item_in_both_sets(tiny_split):
    teacher = build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, k=20)
    for t in (teacher, None):
        objective = DistillationObjective(t, knowledge, DistillConfig(kd="dcd", topk=20, dcd_samples=8))
        student = tiny_student(tiny_split)
        objective._refresh_dcd(student)
        log_under, top, _, log_over = objective.dcd_state
        for u in range(tiny_split.n_users):
            under = set(knowledge.items[u][torch.isfinite(log_under[u])].tolist())
            over = set(top[u][torch.isfinite(log_over[u])].tolist())
            assert not under & over
        users = tiny_batch(tiny_split)[0]
        items, _, ok = objective._sample_dcd(student, users)
        for row, real in zip(items.tolist(), ok.tolist()):
            drawn_under = {i for i, r in zip(row[:8], real[:8]) if r}
            drawn_over = {i for i, r in zip(row[8:], real[8:]) if r}
            assert not drawn_under & drawn_over


def test_dcd_student_ranks_match_a_full_sort_within_epsilon(tiny_split):
    teacher = build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, k=20)
    mu = 0.5
    objective = DistillationObjective(None, knowledge, DistillConfig(kd="dcd", topk=20, dcd_mu=mu))
    student = tiny_student(tiny_split)
    objective._refresh_dcd(student)
    # the exact weights from the student's whole ranking (sorted; training items left out)
    with torch.no_grad():
        scores = student.user_vectors(torch.arange(tiny_split.n_users)) @ student.item_matrix().T
    rows = torch.repeat_interleave(torch.arange(tiny_split.n_users), torch.diff(tiny_split.train.indptr))
    scores[rows, tiny_split.train.indices] = float("-inf")
    exact_rank = (scores[:, None, :] > scores.gather(1, knowledge.items)[:, :, None]).sum(-1)
    exact = discrepancy_weights(torch.arange(20), exact_rank, mu) * knowledge.valid
    approx = objective.dcd_state[0].exp()
    assert saturation_depth(20, mu, tiny_split.n_items) < tiny_split.n_items  # some ranks are cut at P
    assert (approx - exact).abs().max() <= SATURATION
    assert (exact_rank >= saturation_depth(20, mu, tiny_split.n_items)).any()


def test_saturation_depth_bounds_the_weight_error():
    k, mu = 100, 0.1
    p = saturation_depth(k, mu, 10**6)
    assert p == k + math.ceil(math.atanh(1 - SATURATION) / mu) == 139
    assert 1 - math.tanh(mu * (p - (k - 1))) <= SATURATION  # the least saturated item: teacher rank K - 1
    assert saturation_depth(k, mu, 120) == 120


def test_list_positions_finds_each_item_or_gives_the_width():
    items = torch.tensor([[5, 7, 1, 9], [2, 2, 3, 4]])
    valid = torch.tensor([[True, True, True, True], [True, False, True, True]])
    reference = torch.tensor([[9, 1, 5], [4, 3, 8]])
    reference_valid = torch.tensor([[True, True, True], [True, False, True]])
    assert list_positions(items, valid, reference, reference_valid).tolist() == [[2, 3, 1, 0], [3, 3, 3, 0]]
