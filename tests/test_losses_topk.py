"""Top-K ranking distillation: Tang & Wang's weighted extra positives and DCD's discrepancy correction."""

import math

import torch

from rankdistill.losses.listwise import relaxed_ranking
from rankdistill.losses.topk import (
    discrepancy_correction,
    discrepancy_weights,
    estimate_rank,
    position_weights,
    ranking_distillation,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# -- weights -------------------------------------------------------------------------------------------
def test_position_weights_hand_computed():
    z = math.exp(-1) + math.exp(-2) + math.exp(-3)  # λ = 1, ranks 1..3 (1-based in the paper)
    expected = torch.tensor([math.exp(-1) / z, math.exp(-2) / z, math.exp(-3) / z])
    assert torch.allclose(position_weights(3, 1.0), expected)


def test_position_weights_flatten_with_large_lambda():
    assert torch.allclose(position_weights(4, 1e6), torch.full((4,), 0.25), atol=1e-5)


def test_estimate_rank_hand_computed():
    # item score 0.5; samples 1.0, 0.0, 0.7, 0.2: two of four above -> floor(100 · 2 / 4) = 50
    r = estimate_rank(torch.tensor([[0.5]]), torch.tensor([[1.0, 0.0, 0.7, 0.2]]), n_items=100)
    assert r.item() == 50


def test_estimate_rank_counts_only_real_samples():
    r = estimate_rank(torch.tensor([[0.5]]), torch.tensor([[1.0, 0.0, 0.7, 0.2]]), 100,
                      torch.tensor([[True, True, False, False]]))
    assert r.item() == 50  # one of two real samples above


def test_estimate_rank_ties_do_not_count_as_above():
    assert estimate_rank(torch.tensor([[0.5]]), torch.tensor([[0.5, 0.5]]), 10).item() == 0


def test_discrepancy_weights_hand_computed():
    teacher, student = torch.tensor([2, 5, 0]), torch.tensor([12.0, 3.0, 0.0])
    # tanh(max(0.1 · (12 - 2), 0)) = tanh(1); the student ranks item 2 higher: 0; equal ranks: 0
    assert torch.allclose(discrepancy_weights(teacher, student, 0.1), torch.tensor([math.tanh(1.0), 0.0, 0.0]))


# -- ranking_distillation (Tang & Wang) ----------------------------------------------------------------
def test_ranking_distillation_hand_computed():
    s, w = torch.tensor([[0.0, math.log(3)]]), torch.tensor([0.5, 0.5])
    # -(1/2 ln σ(0) + 1/2 ln σ(ln 3)) = 1/2 ln 2 + 1/2 ln(4/3)
    expected = 0.5 * math.log(2) + 0.5 * math.log(4 / 3)
    assert torch.isclose(ranking_distillation(s, w), torch.tensor(expected))


def test_ranking_distillation_decreases_as_top_items_rise():
    w = position_weights(3, 1.0)
    assert ranking_distillation(torch.full((1, 3), 2.0), w) < ranking_distillation(torch.zeros(1, 3), w)


def test_ranking_distillation_zero_weights_give_zero_and_no_gradient():
    s = torch.randn(2, 3, generator=_gen(), requires_grad=True)
    loss = ranking_distillation(s, torch.zeros(2, 3))
    loss.backward()
    assert loss == 0 and (s.grad == 0).all()


def test_ranking_distillation_weights_get_no_gradient():
    w = torch.tensor([0.3, 0.7], requires_grad=True)
    ranking_distillation(torch.randn(1, 2, requires_grad=True), w).backward()
    assert w.grad is None


def test_ranking_distillation_ignores_padded_positions():
    s = torch.tensor([[1.0, -50.0]], requires_grad=True)
    loss = ranking_distillation(s, torch.tensor([0.5, 0.5]), torch.tensor([[True, False]]))
    assert torch.isclose(loss, torch.tensor(-0.5 * _log_sigmoid(1.0)))
    loss.backward()
    assert s.grad[0, 1] == 0


def test_ranking_distillation_finite_at_extreme_logits():
    s = torch.tensor([[1e4, -1e4]], requires_grad=True)
    loss = ranking_distillation(s, torch.tensor([0.5, 0.5]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert torch.isclose(loss, torch.tensor(0.5e4))  # -1/2 ln σ(-1e4) = 1/2 · 1e4


# -- discrepancy_correction (DCD) ----------------------------------------------------------------------
def test_dcd_hand_computed():
    a, b, c = 0.2, 1.0, 3.0
    under, ranks, over = torch.tensor([[a, b]]), torch.tensor([[3, 0]]), torch.tensor([[c]])
    e = math.exp  # b (teacher rank 0) then a (rank 3), both above c
    expected = -(b - math.log(e(a) + e(b) + e(c))) - (a - math.log(e(a) + e(c)))
    assert torch.isclose(discrepancy_correction(under, ranks, over), torch.tensor(expected))


def test_dcd_puts_an_over_estimated_item_below_even_inside_the_teachers_top():
    # the sets are told apart by where they were drawn from: an over-estimated item of teacher rank 1 still
    # goes below the under-estimated item of teacher rank 5 (the teacher's rank orders the under set alone)
    s = torch.randn(1, 2, generator=_gen(3))
    loss = discrepancy_correction(s[:, :1], torch.tensor([[5]]), s[:, 1:])
    assert torch.isclose(loss, relaxed_ranking(s[:, :1], s[:, 1:]))


def test_dcd_equals_rrd_on_the_teacher_sorted_under_items():
    s = torch.randn(1, 5, generator=_gen(1))
    ranks = torch.tensor([[7, 2, 4]])  # under: columns 0..2 -> teacher order 1, 2, 0; over: columns 3, 4
    expected = relaxed_ranking(s[:, [1, 2, 0]], s[:, [3, 4]])
    assert torch.isclose(discrepancy_correction(s[:, :3], ranks, s[:, 3:]), expected)


def test_dcd_invariant_to_a_constant_per_row():
    s = torch.randn(2, 4, generator=_gen(2))
    ranks = torch.tensor([[1, 3], [6, 5]])
    base = discrepancy_correction(s[:, :2], ranks, s[:, 2:])
    shifted = s + torch.tensor([[9.0], [-9.0]])
    assert torch.isclose(discrepancy_correction(shifted[:, :2], ranks, shifted[:, 2:]), base, rtol=1e-4)


def test_dcd_ignores_padded_positions():
    s = torch.tensor([[0.2, 1.0, 40.0, 3.0, 50.0]], requires_grad=True)
    ranks = torch.tensor([[3, 0, 1]])
    loss = discrepancy_correction(s[:, :3], ranks, s[:, 3:], torch.tensor([[True, True, False]]),
                                  torch.tensor([[True, False]]))
    assert torch.isclose(loss, discrepancy_correction(s[:, :2], ranks[:, :2], s[:, 3:4]))
    loss.backward()
    assert s.grad[0, 2] == 0 and s.grad[0, 4] == 0


def test_dcd_finite_at_extreme_logits():
    s = torch.tensor([[1e4, -1e4, 1e4, -1e4]], requires_grad=True)
    loss = discrepancy_correction(s[:, :2], torch.tensor([[0, 1]]), s[:, 2:])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
