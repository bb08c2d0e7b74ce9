"""Supervised (true-label) losses on a candidate list whose first column is the positive item.

Shapes: ``scores`` [B, 1 + N], column 0 the observed (positive) item, columns 1..N sampled negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sampled_softmax(scores: torch.Tensor) -> torch.Tensor:
    r"""Sampled softmax cross-entropy (Bengio & Senécal 2008; Covington et al. 2016):

    .. math:: L = -\frac1B \sum_b \log \frac{e^{s_{b0}}}{\sum_{j=0}^{N} e^{s_{bj}}}

    scores [B, 1 + N] -> scalar.
    """
    return torch.logsumexp(scores, dim=1).sub(scores[:, 0]).mean()


def bpr(scores: torch.Tensor) -> torch.Tensor:
    r"""Bayesian Personalised Ranking (Rendle et al., UAI 2009), averaged over the N negatives:

    .. math:: L = -\frac{1}{BN} \sum_b \sum_{j=1}^{N} \log \sigma(s_{b0} - s_{bj})

    scores [B, 1 + N] -> scalar.
    """
    return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()


def binary_cross_entropy(scores: torch.Tensor) -> torch.Tensor:
    r"""Pointwise BCE: the positive labelled 1, the N negatives 0 (NCF, He et al. WWW 2017).

    .. math:: L = -\frac{1}{B(1+N)} \sum_b \Big[\log\sigma(s_{b0}) + \sum_{j\ge1} \log(1-\sigma(s_{bj}))\Big]

    scores [B, 1 + N] -> scalar.
    """
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(scores, labels)


def bilateral_softmax(scores: torch.Tensor, tau2: float = 1.0, users: torch.Tensor | None = None) -> torch.Tensor:
    r"""Bilateral Softmax Loss (BSL; Wu et al., "BSL: Understanding and Improving Softmax Loss for
    Recommendation", ICDE 2024), in the form of the authors' code (``junkangwu/BSL``, ``utils/losses.py``,
    mode ``multi``): the positive side is a log-mean-exp over the batch rows of the same user, the negative side
    a log-mean-exp over the negatives raised to the power τ₂:

    .. math:: L = rac1B \sum_b \Big[ -\log rac{1}{|P_b|}\sum_{b' \in P_b} e^{s_{b'0}}
              + 	au_2 \log rac1N \sum_{j=1}^{N} e^{s_{bj}} \Big]

    where :math:`P_b` are the rows whose user is row b's (``users`` [B]; None: each row alone) and the scores
    are already divided by the model's temperature τ₁ (``score="cosine"``). τ₂ = 1 is the softmax loss without
    the positive in the denominator; τ₂ > 1 weighs the negatives more (the paper's Gowalla MF: τ₂ = 1.22).
    A masked negative (score ≈ -inf) contributes nothing but still counts in N (a constant shift).

    scores [B, 1 + N] -> scalar.
    """
    return bilateral_softmax_blocks(scores[:, 0], [scores[:, 1:]], tau2, users)


def pool_by_user(pos: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    r"""Each row's log-mean-exp over the rows of the same user: pos [B], users [B] -> [B],

    .. math:: \log \frac{1}{|P_b|} \sum_{b' \in P_b} e^{s_{b'}}, \quad P_b = \{b' : u_{b'} = u_b\}

    in O(B) (one unique, a segment max as the stabiliser, a segment sum), not O(B²)."""
    _, inverse, counts = torch.unique(users, return_inverse=True, return_counts=True)
    top = torch.full(counts.shape, float("-inf"), dtype=pos.dtype, device=pos.device)
    top = top.scatter_reduce(0, inverse, pos.detach(), "amax")  # only a stabiliser: no gradient needed
    total = torch.zeros_like(top).index_add(0, inverse, torch.exp(pos - top[inverse]))
    return (top + total.log() - counts.to(pos.dtype).log())[inverse]


def softmax_blocks(pos: torch.Tensor, negatives: list[torch.Tensor]) -> torch.Tensor:
    """:func:`sampled_softmax` of ``[pos | negatives[0] | negatives[1] | ...]`` without joining the blocks:
    pos [B], each block [B, N_k] -> scalar (log-sum-exp per block, combined with logaddexp)."""
    return softmax_from_lse(pos, [torch.logsumexp(block, dim=1) for block in negatives])


def softmax_from_lse(pos: torch.Tensor, lse: list[torch.Tensor]) -> torch.Tensor:
    """:func:`softmax_blocks` from each block's log-sum-exp [B] (:func:`block_logsumexp`)."""
    total = pos
    for part in lse:
        total = torch.logaddexp(total, part)
    return (total - pos).mean()


def bilateral_softmax_blocks(pos: torch.Tensor, negatives: list[torch.Tensor], tau2: float = 1.0,
                             users: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`bilateral_softmax` of ``[pos | negatives[0] | ...]`` without joining the blocks: pos [B], each
    block [B, N_k] -> scalar."""
    return bilateral_from_lse(pos, [torch.logsumexp(block, dim=1) for block in negatives],
                              sum(block.shape[1] for block in negatives), tau2, users)


def bilateral_from_lse(pos: torch.Tensor, lse: list[torch.Tensor], n: int, tau2: float = 1.0,
                       users: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`bilateral_softmax_blocks` from each block's log-sum-exp [B] (:func:`block_logsumexp`); ``n``:
    the negatives' count over all blocks."""
    if users is not None:
        pos = pool_by_user(pos, users)
    total = lse[0]
    for part in lse[1:]:
        total = torch.logaddexp(total, part)
    return (tau2 * (total - math.log(n)) - pos).mean()


def block_logsumexp(scores: torch.Tensor, shift: torch.Tensor | None = None,
                    exclude: torch.Tensor | None = None) -> torch.Tensor:
    r"""Each row's log-sum-exp of a block of negatives, shifted per column and with some entries left out:

    .. math:: \mathrm{lse}_b = \log \sum_{j \notin E_b} e^{s_{bj} - c_j}

    ``scores`` [B, N], ``shift`` [N] (c, e.g. logQ; None: 0), ``exclude`` bool [B, N] (E, e.g. accidental
    hits; None: none) -> [B]. The same numbers as ``torch.logsumexp((scores - shift).masked_fill(exclude,
    very negative), 1)`` (an all-excluded row is very negative, finite), with the gradient in ``scores``
    (softmax of the row) in closed form: about half the passes over [B, N] of the autograd chain, which
    dominate a student's step on CPU.
    """
    return _BlockLogSumExp.apply(scores, shift, exclude)


class _BlockLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, shift, exclude):
        fill = torch.finfo(scores.dtype).min / 4
        x = scores - shift if shift is not None else scores.clone()
        if exclude is not None:
            x.masked_fill_(exclude, fill)
        top = x.amax(dim=1, keepdim=True)
        e = x.sub_(top).exp_()  # [B, N] in place: e^{x - max}, 0 at an excluded entry of a row with any other
        total = e.sum(dim=1, keepdim=True)
        # an all-excluded row is the constant fill + log N: no gradient (its e are all 1)
        scale = (top > fill).to(e.dtype) / total
        ctx.save_for_backward(e, scale)
        return (top + total.log()).squeeze(1)

    @staticmethod
    def backward(ctx, grad):
        e, scale = ctx.saved_tensors
        return e * (grad[:, None] * scale), None, None


SUPERVISED_LOSSES = {"softmax": sampled_softmax, "bsl": bilateral_softmax, "bpr": bpr, "bce": binary_cross_entropy}
