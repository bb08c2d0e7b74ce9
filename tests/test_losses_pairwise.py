"""Pairwise distillation losses: Margin-MSE and the logistic (RankNet/BPR) loss on teacher-ordered pairs."""

import math

import torch

from rankdistill.losses.pairwise import margin_mse, ranknet


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def margin_mse_reference(s, t, mask):
    """Every ordered pair (i, j), i != j, of real candidates, one by one."""
    total, n = 0.0, 0
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            for j in range(s.shape[1]):
                if i != j and mask[b, i] and mask[b, j]:
                    total += float(((s[b, i] - s[b, j]) - (t[b, i] - t[b, j])) ** 2)
                    n += 1
    return total / max(n, 1)


def ranknet_reference(s, t, mask, n_anchor):
    total, n = 0.0, 0
    for b in range(s.shape[0]):
        for i in range(n_anchor):
            for j in range(i + 1, s.shape[1]):
                if mask[b, i] and mask[b, j] and t[b, i] != t[b, j]:
                    sign = 1.0 if t[b, i] > t[b, j] else -1.0
                    total += math.log1p(math.exp(-sign * float(s[b, i] - s[b, j])))
                    n += 1
    return total / max(n, 1)


# -- margin_mse ----------------------------------------------------------------------------------------
def test_margin_mse_hand_computed_triple():
    # (positive, negative): margins Δs = 3 - 1 = 2, Δt = 2 - 1 = 1 -> (2 - 1)² = 1
    assert torch.isclose(margin_mse(torch.tensor([[3.0, 1.0]]), torch.tensor([[2.0, 1.0]])), torch.tensor(1.0))


def test_margin_mse_hand_computed_three_candidates():
    s, t = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    # d = s - t = (1, 0, 0); ordered pairs: (0,1),(0,2),(1,0),(2,0) give 1 each, (1,2),(2,1) give 0 -> 4 / 6
    assert torch.isclose(margin_mse(s, t), torch.tensor(4 / 6))


def test_margin_mse_matches_pair_by_pair_reference():
    s, t = torch.randn(3, 6, generator=_gen(1)), torch.randn(3, 6, generator=_gen(2))
    mask = torch.rand(3, 6, generator=_gen(3)) > 0.3
    assert math.isclose(float(margin_mse(s, t, mask)), margin_mse_reference(s, t, mask), rel_tol=1e-5)


def test_margin_mse_is_zero_when_student_equals_teacher():
    t = torch.randn(4, 5, generator=_gen())
    assert margin_mse(t.clone(), t) == 0


def test_margin_mse_invariant_to_a_constant_per_row():
    s, t = torch.randn(3, 5, generator=_gen(1)), torch.randn(3, 5, generator=_gen(2))
    shift = torch.tensor([[10.0], [-3.0], [0.5]])
    assert torch.isclose(margin_mse(s + shift, t), margin_mse(s, t), rtol=1e-4)
    assert torch.isclose(margin_mse(s, t - shift), margin_mse(s, t), rtol=1e-4)
    assert torch.isclose(margin_mse(t + shift, t), torch.tensor(0.0), atol=1e-5)


def test_margin_mse_ignores_padded_positions():
    s = torch.tensor([[3.0, 1.0, 50.0]], requires_grad=True)
    t = torch.tensor([[2.0, 1.0, -50.0]])
    mask = torch.tensor([[True, True, False]])
    loss = margin_mse(s, t, mask)
    assert torch.isclose(loss, torch.tensor(1.0))
    loss.backward()
    assert s.grad[0, 2] == 0


def test_margin_mse_single_real_candidate_is_zero():
    mask = torch.tensor([[True, False, False]])
    assert margin_mse(torch.randn(1, 3), torch.randn(1, 3), mask) == 0


def test_margin_mse_finite_at_extreme_logits():
    s = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    loss = margin_mse(s, torch.tensor([[-1e4, 1e4, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


# -- ranknet -------------------------------------------------------------------------------------------
def test_ranknet_hand_computed_pair():
    # the teacher prefers column 0 (1 > 0); the student's margin is 2: log(1 + e^-2)
    assert torch.isclose(ranknet(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])),
                         torch.tensor(math.log1p(math.exp(-2.0))))
    # the teacher prefers column 1: the student's margin counts against it, log(1 + e^2)
    assert torch.isclose(ranknet(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])),
                         torch.tensor(math.log1p(math.exp(2.0))))


def test_ranknet_matches_pair_by_pair_reference():
    s, t = torch.randn(3, 7, generator=_gen(1)), torch.randn(3, 7, generator=_gen(2))
    t[0, 3] = t[0, 5]  # a tie: no pair
    mask = torch.rand(3, 7, generator=_gen(3)) > 0.2
    for n_anchor in (7, 3):
        expected = ranknet_reference(s, t, mask, n_anchor)
        assert math.isclose(float(ranknet(s, t, mask, n_anchor=n_anchor)), expected, rel_tol=1e-5)


def test_ranknet_teacher_ties_carry_no_pair():
    assert ranknet(torch.tensor([[5.0, -3.0]]), torch.tensor([[1.0, 1.0]])) == 0


def test_ranknet_lower_when_student_agrees_with_teacher():
    t = torch.tensor([[3.0, 2.0, 1.0]])
    assert ranknet(t.clone(), t) < ranknet(-t, t)


def test_ranknet_invariances():
    s, t = torch.randn(2, 6, generator=_gen(4)), torch.randn(2, 6, generator=_gen(5))
    base = ranknet(s, t)
    assert torch.isclose(ranknet(s + torch.tensor([[7.0], [-2.0]]), t), base)  # constant per student row
    assert torch.isclose(ranknet(s, torch.exp(t) * 3 + 1), base)  # strictly increasing map of the teacher


def test_ranknet_pairs_outside_the_anchors_are_ignored():
    s, t = torch.randn(1, 5, generator=_gen(6)), torch.randn(1, 5, generator=_gen(7))
    swapped = s.clone()
    swapped[0, 3], swapped[0, 4] = s[0, 4], s[0, 3]  # reorder two non-anchor columns among themselves ...
    t2 = t.clone()
    t2[0, 3], t2[0, 4] = t[0, 4], t[0, 3]  # ... together with their teacher scores: the same anchor pairs
    assert torch.isclose(ranknet(swapped, t2, n_anchor=2), ranknet(s, t, n_anchor=2))


def test_ranknet_ignores_padded_positions():
    s = torch.tensor([[2.0, 0.0, 40.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, 99.0]])
    loss = ranknet(s, t, torch.tensor([[True, True, False]]))
    assert torch.isclose(loss, torch.tensor(math.log1p(math.exp(-2.0))))
    loss.backward()
    assert s.grad[0, 2] == 0


def test_ranknet_finite_at_extreme_logits():
    s = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    loss = ranknet(s, torch.tensor([[-1.0, 1.0, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    # pairs (0,1): teacher prefers 1, margin s1 - s0 = -2e4 -> 2e4; (0,2): prefers 2, s2 - s0 = -1e4 -> 1e4;
    # (1,2): prefers 1, s1 - s2 = -1e4 -> 1e4 (softplus(x) = x for large x)
    assert torch.isclose(loss, torch.tensor((2e4 + 1e4 + 1e4) / 3))
