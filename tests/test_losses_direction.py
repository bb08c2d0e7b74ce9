"""One gradient step of every score-based distillation loss moves the student towards the teacher's order.

The two-item case: the teacher prefers item a to item b (t = [1, 0], teacher ranks a: 0, b: 1) and the student
has them the other way round (s = [0, 1]). Each loss gets the two items in the form it reads (scores, the
teacher's order, or the teacher's top-1 and what lies outside it); after one plain gradient step the student's
margin s_a - s_b must have grown. ``hint`` and ``de`` match representations, not scores: they are tested in
test_losses_representation.py.
"""

import math

import pytest
import torch

from rankdistill.losses.listwise import listmle, listwise_kl, relaxed_ranking
from rankdistill.losses.pairwise import margin_mse, ranknet
from rankdistill.losses.pointwise import score_mse, soft_label_bce
from rankdistill.losses.rce import rce_kd
from rankdistill.losses.registry import KD_LOSSES
from rankdistill.losses.topk import discrepancy_correction, ranking_distillation

T = torch.tensor([[1.0, 0.0]])  # teacher scores of [a, b]
A, B = 0, 1
TRUE = torch.ones(1, 1, dtype=torch.bool)


def _rce(s: torch.Tensor) -> torch.Tensor:
    # teacher top-1 T = {a}; the student's top list is [b, a] (its top-1 S = {b}); the closure drew b.
    # L_T runs over I ∪ (T \ S) = {b, a} with the teacher's scores; γ = exp(-β·|T ∩ I| / |T|) = 1.
    return rce_kd(s[:, [A]], T[:, [A]], TRUE, s[:, [B, A]], T[:, [B, A]], torch.ones(1, 2, dtype=torch.bool),
                  torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1, 0]]), torch.tensor([[0]]), TRUE, beta=1.0)


LOSSES = {  # s [1, 2] student scores of [a, b] -> the loss as the objective's term computes it
    "mse": lambda s: score_mse(s, T),
    "soft_bce": lambda s: soft_label_bce(s, T),
    "margin_mse": lambda s: margin_mse(s, T),
    "ranknet": lambda s: ranknet(s, T),
    "listkl": lambda s: listwise_kl(s, T),
    "listmle": lambda s: listmle(s, torch.tensor([[A, B]])),  # the teacher's order: a, then b
    "rrd": lambda s: relaxed_ranking(s[:, [A]], s[:, [B]]),  # a from the teacher's top, b uninteresting
    "rd": lambda s: ranking_distillation(s[:, [A]], torch.ones(1)),  # a: the teacher's top-1, a weighted positive
    "dcd": lambda s: discrepancy_correction(s[:, [A]], torch.tensor([[0]]), s[:, [B]]),  # a under-, b over-estimated
    "rce": _rce,
}


def _gradient(name: str, s: torch.Tensor) -> torch.Tensor:
    s = s.clone().requires_grad_(True)
    LOSSES[name](s).backward()
    return s.grad


def test_every_score_based_loss_is_covered():
    assert set(LOSSES) == set(KD_LOSSES) - {"hint", "de"}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_one_step_moves_the_student_towards_the_teachers_order(name):
    s = torch.tensor([[0.0, 1.0]])
    stepped = s - 0.1 * _gradient(name, s)
    margin = lambda x: float(x[0, A] - x[0, B])  # noqa: E731
    assert margin(stepped) > margin(s)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_step_once_the_student_has_the_teachers_scores_for_losses_with_that_minimum(name):
    # the losses whose minimum is student == teacher stop there; the others keep widening the margin
    g = _gradient(name, T.clone())
    at_minimum = name in ("mse", "soft_bce", "margin_mse", "listkl", "rce")  # rce: cross-entropies
    assert torch.allclose(g, torch.zeros_like(g), atol=1e-7) == at_minimum
    if not at_minimum:
        assert float(g[0, A] - g[0, B]) < 0  # still pushes a up relative to b


def test_listkl_gradient_is_the_softmax_difference():
    # dL/ds = p^s - p^t with p = softmax: p^s = softmax([0, 1]), p^t = softmax([1, 0])
    e = math.e
    p_s = torch.tensor([[1 / (1 + e), e / (1 + e)]])
    assert torch.allclose(_gradient("listkl", torch.tensor([[0.0, 1.0]])), p_s - p_s.flip(1))


def test_ranknet_gradient_is_the_logistic_of_the_wrong_margin():
    # one pair (a, b) ordered by the teacher: L = log(1 + exp(-(s_a - s_b))), dL/ds_a = -σ(-(s_a - s_b)) = -σ(1)
    sig = 1 / (1 + math.exp(-1))
    assert torch.allclose(_gradient("ranknet", torch.tensor([[0.0, 1.0]])), torch.tensor([[-sig, sig]]))


def test_mse_gradient_is_the_score_difference():
    # L = ((s_a - 1)² + (s_b - 0)²) / 2: dL/ds = s - t = [-1, 1]
    assert torch.allclose(_gradient("mse", torch.tensor([[0.0, 1.0]])), torch.tensor([[-1.0, 1.0]]))
