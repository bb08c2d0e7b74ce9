"""Top-K ranking distillation: learning the teacher's top of the ranking, weighted or selected by where the
student still gets it wrong.

- :func:`ranking_distillation` with :func:`position_weights`, :func:`estimate_rank` and
  :func:`discrepancy_weights`: Tang & Wang, "Ranking Distillation: Learning Compact Ranking Models With High
  Performance for Recommender System", KDD 2018.
- :func:`discrepancy_correction`: the user-side correction of DCD (Lee & Kim, "Dual Correction Strategy for
  Ranking Distillation in Top-N Recommender System", CIKM 2021); :func:`discrepancy_weights` also gives its
  sampling probabilities.

Ranks are 0-based (0 = the best item) and count items of the whole catalogue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rankdistill.losses.listwise import relaxed_ranking


def position_weights(k: int, lam: float, device: torch.device | str | None = None) -> torch.Tensor:
    r"""Tang & Wang's position importance of the teacher's top-K (their Eq. 8), normalised to sum 1:

    .. math:: w^a_r = \frac{e^{-(r+1)/\lambda}}{\sum_{r'=0}^{K-1} e^{-(r'+1)/\lambda}}, \quad r = 0..K-1

    -> float [K]. A small λ puts the weight on the first few items.
    """
    w = torch.exp(-torch.arange(1, k + 1, dtype=torch.float32, device=device) / lam)
    return w / w.sum()


def estimate_rank(
    item_scores: torch.Tensor, sample_scores: torch.Tensor, n_items: int, sample_mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""The student's rank of each item, estimated from uniformly sampled items (Tang & Wang 2018, Sec. 3.3):

    .. math:: \hat r_{bk} = \Big\lfloor n_{items} \cdot \frac{|\{ j : y_{bj} > y_{bk} \}|}{S_b} \Big\rfloor

    ``item_scores`` [B, K], ``sample_scores`` [B, S] the student's scores of S uniform samples, ``sample_mask``
    [B, S] (None = all count). -> float [B, K] (0 = best; no gradient).
    """
    above = (sample_scores[:, None, :] > item_scores[:, :, None]).to(item_scores.dtype)  # [B, K, S]
    if sample_mask is None:
        count, s = above.sum(-1), float(sample_scores.shape[1])
        return torch.floor(n_items * count / max(s, 1.0)).detach()
    m = sample_mask.to(item_scores.dtype)
    count, s = (above * m[:, None, :]).sum(-1), m.sum(1, keepdim=True).clamp_min(1.0)
    return torch.floor(n_items * count / s).detach()


def discrepancy_weights(reference_ranks: torch.Tensor, ranks: torch.Tensor, mu: float) -> torch.Tensor:
    r"""How much lower ``ranks`` place an item than ``reference_ranks`` do, squashed to [0, 1) (Tang & Wang's
    ranking-discrepancy weight, their Eq. 9; DCD's sampling probability, up to normalisation):

    .. math:: w^b = \tanh\big(\max(\mu \cdot (\hat r - r), 0)\big)

    ``reference_ranks`` r (e.g. the teacher's), ``ranks`` r̂ (e.g. the student's), same shape. Zero when the
    student ranks the item at least as high as the reference. Swap the arguments for over-estimation.
    """
    return torch.tanh((mu * (ranks.to(torch.float32) - reference_ranks.to(torch.float32))).clamp_min(0.0))


def ranking_distillation(
    student: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Ranking distillation (Tang & Wang, KDD 2018, Eq. 6–7): the teacher's top-K items are extra positives
    of the student, each weighted:

    .. math:: L = -\frac1B \sum_b \sum_{r=0}^{K-1} w_{br} \log \sigma(s_{br})

    ``student`` [B, K] the student's scores of the teacher's top-K items in the teacher's order; ``weights``
    [B, K] (or [K]) non-negative, not differentiated (position weights, or position × discrepancy weights
    after the switch-on epoch); ``mask`` [B, K] True where an item is real. Decreases towards 0 as the
    student's scores of these items grow: there is no minimum at student == teacher.
    """
    w = weights.detach().expand_as(student)
    if mask is not None:
        w = w * mask
    return -(w * F.logsigmoid(student)).sum(1).mean()


def discrepancy_correction(
    under: torch.Tensor, under_ranks: torch.Tensor, over: torch.Tensor,
    under_mask: torch.Tensor | None = None, over_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""DCD's user-side correction (Lee & Kim, CIKM 2021): a relaxed listwise loss over the items sampled
    for their rank discrepancy. The under-estimated items (drawn from the teacher's top-K, ranked much lower
    by the student) must come first, in the teacher's order, above every over-estimated item (drawn from
    the student's top-K, ranked much lower by the teacher), whose order among themselves is ignored:

    .. math:: L = \mathrm{RRD}\big(s[U \text{ sorted by } r^t],\ s[O]\big)

    (see :func:`rankdistill.losses.listwise.relaxed_ranking`). The two sets are told apart by where they were
    drawn from, not by the teacher's rank: an over-estimated item inside the teacher's top-K still goes
    below the under-estimated ones. ``under`` [B, D] student scores of the under-estimated items with
    their teacher ranks ``under_ranks`` int64 [B, D]; ``over`` [B, E] student scores of the over-estimated
    items; masks True where an item is real. Invariant to adding a constant per row.
    """
    real = torch.ones_like(under_ranks, dtype=torch.bool) if under_mask is None else under_mask
    key = torch.where(real, under_ranks, torch.full_like(under_ranks, torch.iinfo(under_ranks.dtype).max))
    order = key.argsort(dim=1, stable=True)  # padding last
    return relaxed_ranking(under.gather(1, order), over, real.gather(1, order), over_mask)
