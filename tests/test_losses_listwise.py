"""Listwise distillation losses: softmax KL (ListNet-style), ListMLE and relaxed ranking (RRD)."""

import math

import pytest
import torch

from rankdistill.losses.listwise import listmle, listwise_kl, listwise_kl_reference, relaxed_ranking


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _finite_with_grad(loss, x):
    loss.backward()
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(x.grad).all())


# -- listwise_kl ---------------------------------------------------------------------------------------
def test_listkl_hand_computed():
    # teacher (0, ln 3) -> p_t = (1/4, 3/4); student (0, 0) -> p_s = (1/2, 1/2)
    # KL = 1/4 ln((1/4)/(1/2)) + 3/4 ln((3/4)/(1/2))
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert torch.isclose(listwise_kl(torch.zeros(1, 2), torch.tensor([[0.0, math.log(3)]])), torch.tensor(expected))


def test_listkl_temperature_scales_logits_and_multiplies_by_t_squared():
    s, t = torch.randn(2, 4, generator=_gen(1)), torch.randn(2, 4, generator=_gen(2))
    assert torch.isclose(listwise_kl(s, t, temperature=2.0), 4 * listwise_kl(s / 2, t / 2), rtol=1e-5)


def test_listkl_is_zero_when_student_equals_teacher():
    t = torch.randn(3, 5, generator=_gen())
    assert torch.isclose(listwise_kl(t.clone(), t, temperature=2.0), torch.tensor(0.0), atol=1e-6)


def test_listkl_invariant_to_a_constant_per_row():
    s, t = torch.randn(2, 5, generator=_gen(1)), torch.randn(2, 5, generator=_gen(2))
    shift = torch.tensor([[100.0], [-7.0]])
    assert torch.isclose(listwise_kl(s + shift, t), listwise_kl(s, t), rtol=1e-4)
    assert torch.isclose(listwise_kl(s, t + shift), listwise_kl(s, t), rtol=1e-4)


def test_listkl_ignores_padded_positions():
    s = torch.tensor([[0.0, 0.0, 30.0]], requires_grad=True)
    t = torch.tensor([[0.0, math.log(3), -30.0]])
    loss = listwise_kl(s, t, torch.tensor([[True, True, False]]))
    assert torch.isclose(loss, listwise_kl(s[:, :2], t[:, :2]))
    loss.backward()
    assert s.grad[0, 2] == 0


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_listkl_closed_form_gradient_equals_autograd(temperature):
    """The frozen-teacher path (closed-form gradient) against the autograd reference: same loss, same gradient
    in the student, with padding, an all-padded row and an upstream gradient other than 1."""
    s0, t = torch.randn(4, 7, generator=_gen(3)) * 3, torch.randn(4, 7, generator=_gen(4)) * 3
    mask = torch.rand(4, 7, generator=_gen(5)) > 0.3
    mask[2] = False
    for m in (None, mask):
        fast, slow = s0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
        a = listwise_kl(fast, t, m, temperature=temperature)
        b = listwise_kl_reference(slow, t, m, temperature=temperature)
        torch.testing.assert_close(a, b)
        (2.5 * a).backward()
        (2.5 * b).backward()
        torch.testing.assert_close(fast.grad, slow.grad)
        assert fast.grad.abs().sum() > 0


def test_listkl_all_padded_row_contributes_zero():
    s, t = torch.randn(2, 3, generator=_gen(1)), torch.randn(2, 3, generator=_gen(2))
    mask = torch.tensor([[True, True, True], [False, False, False]])
    # the mean is over rows: row 0's KL / 2
    assert torch.isclose(listwise_kl(s, t, mask), listwise_kl(s[:1], t[:1]) / 2)


def test_listkl_finite_at_extreme_logits():
    s = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    loss = listwise_kl(s, torch.tensor([[-1e4, 1e4, 0.0]]), torch.tensor([[True, True, False]]))
    assert _finite_with_grad(loss, s)


# -- listmle -------------------------------------------------------------------------------------------
def test_listmle_hand_computed():
    s = torch.tensor([[2.0, 1.0, 0.0]])
    # order 0, 1, 2: [ln(e² + e + 1) - 2] + [ln(e + 1) - 1] + [ln(1) - 0]
    e = math.e
    expected = (math.log(e**2 + e + 1) - 2) + (math.log(e + 1) - 1)
    assert torch.isclose(listmle(s, torch.tensor([[0, 1, 2]])), torch.tensor(expected))


def test_listmle_follows_the_given_order():
    s = torch.tensor([[0.0, 1.0, 2.0]])
    assert torch.isclose(listmle(s, torch.tensor([[2, 1, 0]])), listmle(s.flip(1), torch.tensor([[0, 1, 2]])))
    assert listmle(s, torch.tensor([[2, 1, 0]])) < listmle(s, torch.tensor([[0, 1, 2]]))


def test_listmle_invariant_to_a_constant_per_row():
    s = torch.randn(2, 4, generator=_gen(3))
    order = torch.tensor([[3, 1, 0, 2], [0, 1, 2, 3]])
    assert torch.isclose(listmle(s + torch.tensor([[50.0], [-5.0]]), order), listmle(s, order), rtol=1e-4)


def test_listmle_ignores_padded_positions():
    s = torch.tensor([[2.0, 1.0, 9.0]], requires_grad=True)
    order, mask = torch.tensor([[0, 1, 2]]), torch.tensor([[True, True, False]])
    loss = listmle(s, order, mask)
    assert torch.isclose(loss, listmle(s[:, :2], order[:, :2]))
    loss.backward()
    assert s.grad[0, 2] == 0


def test_listmle_finite_at_extreme_logits():
    s = torch.tensor([[-1e4, 1e4, 0.0]], requires_grad=True)
    assert _finite_with_grad(listmle(s, torch.tensor([[0, 1, 2]])), s)


# -- relaxed_ranking (RRD) -----------------------------------------------------------------------------
def test_rrd_hand_computed():
    a, b, c = 1.0, 0.5, 2.0  # interesting a then b (teacher's order), one uninteresting c
    # -[a - ln(e^a + e^b + e^c)] - [b - ln(e^b + e^c)]
    expected = -(a - math.log(math.exp(a) + math.exp(b) + math.exp(c))) - (b - math.log(math.exp(b) + math.exp(c)))
    assert torch.isclose(relaxed_ranking(torch.tensor([[a, b]]), torch.tensor([[c]])), torch.tensor(expected))


def test_rrd_without_uninteresting_items_is_listmle():
    s = torch.randn(3, 5, generator=_gen(4))
    order = torch.arange(5).expand(3, -1)
    assert torch.isclose(relaxed_ranking(s, s[:, :0]), listmle(s, order))


def test_rrd_ignores_the_order_of_uninteresting_items():
    i, u = torch.randn(2, 3, generator=_gen(5)), torch.randn(2, 6, generator=_gen(6))
    assert torch.isclose(relaxed_ranking(i, u), relaxed_ranking(i, u.flip(1)))


def test_rrd_invariant_to_a_constant_per_row():
    i, u = torch.randn(2, 3, generator=_gen(5)), torch.randn(2, 6, generator=_gen(6))
    shift = torch.tensor([[20.0], [-4.0]])
    assert torch.isclose(relaxed_ranking(i + shift, u + shift), relaxed_ranking(i, u), rtol=1e-4)


def test_rrd_ignores_padded_positions():
    i = torch.tensor([[1.0, 0.5, 7.0]], requires_grad=True)
    u = torch.tensor([[2.0, 50.0]], requires_grad=True)
    loss = relaxed_ranking(i, u, torch.tensor([[True, True, False]]), torch.tensor([[True, False]]))
    assert torch.isclose(loss, relaxed_ranking(i[:, :2], u[:, :1]))
    loss.backward()
    assert i.grad[0, 2] == 0 and u.grad[0, 1] == 0


def test_rrd_all_uninteresting_padded_is_listmle_of_the_interesting():
    i, u = torch.randn(1, 3, generator=_gen(7)), torch.randn(1, 4, generator=_gen(8))
    loss = relaxed_ranking(i, u, None, torch.zeros(1, 4, dtype=torch.bool))
    assert torch.isclose(loss, listmle(i, torch.tensor([[0, 1, 2]])))


def test_rrd_all_padded_row_is_zero():
    i, u = torch.randn(1, 3), torch.randn(1, 4)
    assert relaxed_ranking(i, u, torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool)) == 0


def test_rrd_finite_at_extreme_logits():
    i = torch.tensor([[1e4, -1e4]], requires_grad=True)
    u = torch.tensor([[-1e4, 1e4, 0.0]], requires_grad=True)
    loss = relaxed_ranking(i, u)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(i.grad).all() and torch.isfinite(u.grad).all()
