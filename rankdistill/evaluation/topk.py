"""Exact top-K over a score matrix with a documented tie rule: score descending, then item index ascending.

``torch.topk`` does not promise which of several equal scores it returns. :func:`topk_ties_by_index`
takes its result, repairs the rows where equal scores straddle the K-th place (found with one comparison
pass, so the repair costs nothing when there are no such ties) and orders equal scores by index.
"""

from __future__ import annotations

import torch


def topk_ties_by_index(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [C, I] -> (values [C, k'], indices [C, k']) with k' = min(k, I), ordered by (score desc, index asc)."""
    k = min(k, scores.shape[1])
    values, indices = scores.topk(k, dim=1)
    if k == 0:
        return values, indices
    kth = values[:, -1:]
    straddle = (scores >= kth).sum(1) > k  # more candidates tie at the K-th score than fit
    if bool(straddle.any()):
        rows = straddle.nonzero().squeeze(1)
        s, t = scores[rows], kth[rows]
        above = s > t
        need = k - above.sum(1, keepdim=True)
        tied = s == t
        chosen = above | (tied & (tied.cumsum(1) <= need))
        idx = chosen.nonzero()[:, 1].view(len(rows), k)  # ascending index within each row
        indices[rows] = idx
        values[rows] = s.gather(1, idx)
    # Order: index ascending first, then a stable sort by value descending keeps that order among ties.
    indices, perm = indices.sort(dim=1)
    values = values.gather(1, perm)
    values, perm = values.sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, perm)
