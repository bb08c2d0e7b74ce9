"""Representation distillation: FitNets hint loss and Distillation Experts."""

import math

import torch

from rankdistill.losses.representation import (
    DistillationExperts,
    HintProjection,
    anneal,
    experts_loss,
    hint_loss,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- hint_loss -----------------------------------------------------------------------------------------
def test_hint_hand_computed():
    # ½ ‖(1, 2) - (0, 0)‖² = 2.5 and ½ ‖(1, 1) - (1, 0)‖² = 0.5 -> mean 1.5
    p, t = torch.tensor([[1.0, 2.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert torch.isclose(hint_loss(p, t), torch.tensor(1.5))


def test_hint_is_zero_when_projection_reproduces_teacher():
    t = torch.randn(4, 6, generator=_gen())
    assert hint_loss(t.clone(), t) == 0


def test_hint_ignores_padded_entities():
    p = torch.tensor([[1.0, 2.0], [100.0, 100.0]], requires_grad=True)
    t = torch.zeros(2, 2)
    loss = hint_loss(p, t, torch.tensor([True, False]))
    assert torch.isclose(loss, torch.tensor(2.5))
    loss.backward()
    assert (p.grad[1] == 0).all()


def test_hint_finite_at_extreme_values():
    p = torch.tensor([[1e4, -1e4]], requires_grad=True)
    loss = hint_loss(p, torch.tensor([[-1e4, 1e4]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()


def test_hint_projection_infers_the_student_width():
    proj = HintProjection(teacher_dim=8)
    assert proj(torch.randn(3, 5)).shape == (3, 8)
    assert proj.proj.weight.shape == (8, 5)


# -- experts_loss --------------------------------------------------------------------------------------
def test_experts_hand_computed_hard_selection():
    out = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])  # [N=1, E=2, D=2]
    gate = torch.tensor([[10.0, 0.0]])  # the gate picks expert 0
    t = torch.tensor([[0.0, 0.0]])
    # τ small and no noise: α ≈ (1, 0), reconstruction (1, 0), ‖(0, 0) - (1, 0)‖² = 1
    loss = experts_loss(out, gate, t, torch.zeros(1, 2), tau=1e-3)
    assert torch.isclose(loss, torch.tensor(1.0), atol=1e-5)


def test_experts_hand_computed_soft_selection():
    out = torch.tensor([[[2.0], [0.0]]])
    # equal gate logits, τ = 1, no noise: α = (1/2, 1/2), reconstruction 1, target 3: (3 - 1)² = 4
    loss = experts_loss(out, torch.zeros(1, 2), torch.tensor([[3.0]]), torch.zeros(1, 2), tau=1.0)
    assert torch.isclose(loss, torch.tensor(4.0))


def test_experts_zero_when_the_selected_expert_reproduces_teacher():
    t = torch.randn(3, 4, generator=_gen(1))
    out = torch.stack([t, torch.randn(3, 4, generator=_gen(2))], dim=1)
    gate = torch.tensor([[20.0, 0.0]]).expand(3, -1)
    assert torch.isclose(experts_loss(out, gate, t, torch.zeros(3, 2), tau=0.01), torch.tensor(0.0), atol=1e-6)


def test_experts_gate_logits_invariant_to_a_constant():
    out, t = torch.randn(2, 3, 4, generator=_gen(3)), torch.randn(2, 4, generator=_gen(4))
    gate, noise = torch.randn(2, 3, generator=_gen(5)), torch.randn(2, 3, generator=_gen(6))
    assert torch.isclose(experts_loss(out, gate + 100.0, t, noise, tau=0.5), experts_loss(out, gate, t, noise, tau=0.5))


def test_experts_ignore_padded_entities():
    out = torch.randn(2, 2, 3, generator=_gen(7), requires_grad=True)
    t = torch.randn(2, 3, generator=_gen(8))
    mask = torch.tensor([True, False])
    loss = experts_loss(out, torch.zeros(2, 2), t, torch.zeros(2, 2), mask, tau=1.0)
    assert torch.isclose(loss, experts_loss(out[:1], torch.zeros(1, 2), t[:1], torch.zeros(1, 2), tau=1.0))
    loss.backward()
    assert (out.grad[1] == 0).all()


def test_experts_finite_at_extreme_values():
    out = torch.tensor([[[1e4, -1e4], [-1e4, 1e4]]], requires_grad=True)
    gate = torch.tensor([[1e4, -1e4]], requires_grad=True)
    loss = experts_loss(out, gate, torch.tensor([[0.0, 0.0]]), torch.zeros(1, 2), tau=1e-10)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(out.grad).all() and torch.isfinite(gate.grad).all()


def test_distillation_experts_module_shapes_and_gradients():
    de = DistillationExperts(teacher_dim=8, n_experts=3)
    s, t = torch.randn(5, 4, generator=_gen(9)), torch.randn(5, 8, generator=_gen(10))
    out, gate = de(s, t)
    assert out.shape == (5, 3, 8) and gate.shape == (5, 3)
    experts_loss(out, gate, t, torch.zeros(5, 3), tau=1.0).backward()
    assert all(p.grad is not None for p in de.parameters())


def test_anneal_is_geometric_from_start_to_end():
    assert anneal(1.0, 0.01, 1, 3) == 1.0
    assert math.isclose(anneal(1.0, 0.01, 2, 3), 0.1)
    assert math.isclose(anneal(1.0, 0.01, 3, 3), 0.01)
    assert math.isclose(anneal(1.0, 0.01, 30, 3), 0.01)  # held after the last epoch
