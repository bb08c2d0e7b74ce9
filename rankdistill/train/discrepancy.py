"""DCD's rank discrepancies without sorting the student's whole ranking (Lee & Kim, "Dual Correction Strategy
for Ranking Distillation in Top-N Recommender System", CIKM 2021, user side).

The sampling weight of an item is ``tanh(max(μ·Δ, 0))`` with Δ the gap between the two models' ranks
(:func:`rankdistill.losses.topk.discrepancy_weights`). It saturates: once ``μ·Δ ≥ atanh(1 − ε)`` the weight
is within ε of 1 whatever the exact rank. So a rank only has to be known exactly up to
:func:`saturation_depth` ``P = K + ⌈atanh(1 − ε)/μ⌉``; an item outside a model's top-P is given rank P (a
lower bound), which changes its weight by less than ε. The student's top-P comes from the evaluator's chunked
top-K scoring (one pass over the catalogue, no sort), and ranks are read off it by :func:`list_positions`.
"""

from __future__ import annotations

import math

import torch

SATURATION = 1e-3  # ε: a weight that is not exact is within this of the exact one


def saturation_depth(k: int, mu: float, n_items: int, eps: float = SATURATION) -> int:
    """P = min(n_items, K + ⌈atanh(1 − ε)/μ⌉): ranks below P must be exact for DCD's weights over lists of
    length K; beyond P every weight is in [1 − ε, 1)."""
    return min(n_items, k + math.ceil(math.atanh(1.0 - eps) / mu))


def list_positions(items: torch.Tensor, valid: torch.Tensor, reference: torch.Tensor,
                   reference_valid: torch.Tensor) -> torch.Tensor:
    """Where each item stands in a per-row reference list.

    items int64 [U, L], valid bool [U, L]; reference int64 [U, R] (an item at most once per row) with
    reference_valid bool [U, R] -> int64 [U, L]: the index of items[u, l] in reference[u] among its valid
    entries, R where absent (or where ``valid`` is False). A batched binary search: O(U·(R log R + L log R)).
    """
    width = reference.shape[1]
    if width == 0:
        return torch.full_like(items, 0)
    ref = reference.masked_fill(~reference_valid, -1)  # never equal to an item id (>= 0)
    ordered, order = ref.sort(dim=1)
    at = torch.searchsorted(ordered, items.contiguous()).clamp_max(width - 1)
    found = (ordered.gather(1, at) == items) & valid
    return torch.where(found, order.gather(1, at), torch.full_like(items, width))
