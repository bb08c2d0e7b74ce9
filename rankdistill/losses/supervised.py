"""Supervised (true-label) losses on a candidate list whose first column is the positive item.

Shapes: ``scores`` [B, 1 + N], column 0 the observed (positive) item, columns 1..N sampled negatives.
"""

from __future__ import annotations

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


SUPERVISED_LOSSES = {"softmax": sampled_softmax, "bpr": bpr, "bce": binary_cross_entropy}
