"""Pointwise distillation losses: score MSE and soft-label BCE."""

import math

import torch

from rankdistill.losses.pointwise import score_mse, soft_label_bce


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- score_mse -----------------------------------------------------------------------------------------
def test_score_mse_hand_computed():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    # ((1-0)² + (2-2)² + (0-1)² + (0+1)²) / 4 = 3 / 4
    assert torch.isclose(score_mse(s, t), torch.tensor(0.75))


def test_score_mse_is_zero_when_student_equals_teacher():
    t = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    assert score_mse(t.clone(), t) == 0


def test_score_mse_ignores_padded_positions():
    s = torch.tensor([[1.0, 5.0], [3.0, -7.0]], requires_grad=True)
    t = torch.tensor([[0.0, 9.0], [1.0, 2.0]])
    mask = torch.tensor([[True, False], [True, False]])
    loss = score_mse(s, t, mask)
    # only (1-0)² and (3-1)²: (1 + 4) / 2
    assert torch.isclose(loss, torch.tensor(2.5))
    loss.backward()
    assert (s.grad[~mask] == 0).all()


def test_score_mse_all_padded_is_zero():
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    assert score_mse(s, t, torch.zeros(2, 3, dtype=torch.bool)) == 0


def test_score_mse_finite_at_extreme_logits():
    s = torch.tensor([[1e4, -1e4]], requires_grad=True)
    loss = score_mse(s, torch.tensor([[-1e4, 1e4]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


# -- soft_label_bce ------------------------------------------------------------------------------------
def test_soft_bce_hand_computed_with_temperature():
    # T = 2, student 0, teacher 0: target σ(0) = 1/2, BCE(σ(0), 1/2) = ln 2, times T² = 4
    assert torch.isclose(soft_label_bce(torch.zeros(1, 1), torch.zeros(1, 1), temperature=2.0),
                         torch.tensor(4 * math.log(2)))
    # T = 1, student 2, teacher -2: y = σ(-2); BCE = -(y ln σ(2) + (1-y) ln(1-σ(2)))
    y = _sigmoid(-2.0)
    expected = -(y * math.log(_sigmoid(2.0)) + (1 - y) * math.log(1 - _sigmoid(2.0)))
    assert torch.isclose(soft_label_bce(torch.tensor([[2.0]]), torch.tensor([[-2.0]])), torch.tensor(expected))


def test_soft_bce_minimum_is_at_student_equal_teacher():
    t = torch.tensor([[0.3, -1.2, 2.0]])
    s = t.clone().requires_grad_(True)
    at_teacher = soft_label_bce(s, t, temperature=2.0)
    at_teacher.backward()
    assert torch.allclose(s.grad, torch.zeros_like(s), atol=1e-7)  # stationary point
    for delta in (0.1, -0.1):
        assert soft_label_bce(t + delta, t, temperature=2.0) > at_teacher


def test_soft_bce_ignores_padded_positions():
    s = torch.tensor([[0.5, 100.0]], requires_grad=True)
    t = torch.tensor([[1.0, -100.0]])
    mask = torch.tensor([[True, False]])
    loss = soft_label_bce(s, t, mask)
    assert torch.isclose(loss, soft_label_bce(s[:, :1], t[:, :1]))
    loss.backward()
    assert s.grad[0, 1] == 0


def test_soft_bce_finite_at_extreme_logits():
    s = torch.tensor([[1e4, -1e4, 1e4]], requires_grad=True)
    loss = soft_label_bce(s, torch.tensor([[-1e4, 1e4, 1e4]]), temperature=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
