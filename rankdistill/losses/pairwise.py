"""Pairwise distillation: the student orders (or separates) pairs of candidates as the teacher does.

Shapes: ``student``, ``teacher`` [B, L] scores of the same candidates; ``mask`` [B, L] bool, True where a
candidate is real and its teacher score known (None = all). A pair counts only when both ends are real.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rankdistill.losses._masking import batch_denominator


def margin_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Margin-MSE (Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
    Knowledge Distillation", 2020): the student's score margin between two candidates matches the teacher's.
    The paper uses (query, positive, negative) triples; here every ordered pair of real candidates of a row:

    .. math:: L = \frac{1}{\sum_b n_b (n_b - 1)} \sum_b \sum_{i \ne j \in M_b}
              \big((s_{bi} - s_{bj}) - (t_{bi} - t_{bj})\big)^2

    With :math:`d = s - t` the inner sum is :math:`\sum_{i,j} (d_i - d_j)^2 = 2 n_b \sum_i (d_i - \bar d_b)^2`,
    so the loss costs O(L), not O(L²). For L = 2 it is the paper's :math:`(\Delta s - \Delta t)^2`.
    Zero when student == teacher; invariant to adding a constant per row to either.
    """
    d = student - teacher
    m = torch.ones_like(d) if mask is None else mask.to(d.dtype)
    n = m.sum(1)  # [B]
    mean = (d * m).sum(1) / n.clamp_min(1.0)
    sq = ((d - mean[:, None]) * m).square().sum(1)  # [B] Σ_i (d_i - mean)²
    pairs = (n * (n - 1.0)).sum()
    return (2.0 * n * sq).sum() / batch_denominator(pairs)


def ranknet(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, *, n_anchor: int | None = None
) -> torch.Tensor:
    r"""Logistic loss on pairs ordered by the teacher (RankNet, Burges et al. ICML 2005, with hard targets;
    BPR, Rendle et al. UAI 2009, when the teacher's preferred item plays the positive):

    .. math:: L = \frac{1}{|P|} \sum_{(b,i,j) \in P} \log\big(1 + e^{-\sigma_{bij} (s_{bi} - s_{bj})}\big),
              \qquad \sigma_{bij} = \operatorname{sign}(t_{bi} - t_{bj})

    P: pairs (i, j) of real candidates with i < ``n_anchor`` (default L), i < j, and :math:`t_{bi} \ne t_{bj}`
    (a teacher tie carries no order). Anchoring the first columns (the row's own candidates) against the
    whole list keeps the cost at B·n_anchor·L instead of B·L². Invariant to adding a constant per row to the
    student and to any strictly increasing transform of the teacher's scores.
    """
    b, l = student.shape
    a = l if n_anchor is None else min(n_anchor, l)
    sd = student[:, :a, None] - student[:, None, :]  # [B, A, L]
    sign = torch.sign(teacher[:, :a, None] - teacher[:, None, :])
    pair = torch.ones(a, l, dtype=torch.bool, device=student.device).triu(1) & (sign != 0)
    if mask is not None:
        pair = pair & mask[:, :a, None] & mask[:, None, :]
    loss = F.softplus(-sign * sd)
    pair_f = pair.to(loss.dtype)
    return (loss * pair_f).sum() / batch_denominator(pair_f.sum())
