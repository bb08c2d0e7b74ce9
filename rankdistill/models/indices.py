"""The checked entry of a ranker's public scoring methods: user and item row indices from any array-like.

``model.score(users, items)`` and ``model.score_all(users)`` accept a torch tensor, a numpy array, a pandas
Series or a list of integer row indices (row i = the i-th ID of the model's vocabulary: map raw IDs with
``SavedModel.user_vocab.encode``). Floats, booleans, text and indices outside ``[0, n)`` are refused with a
:class:`RankdistillError` naming the first bad value, instead of scoring row 0 or failing deep in torch.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch

from rankdistill.errors import RankdistillError


def as_indices(values: object, what: str, n: int, device: torch.device, ndim: int) -> torch.Tensor:
    """``values`` (tensor, numpy array, pandas Series, list) -> int64 [...] of ``ndim`` dimensions on ``device``;
    ``what`` is "user" or "item", ``n`` how many the model has."""
    fix = f"indices are rows of the model's {what} vocabulary (SavedModel.{what}_vocab.encode maps raw IDs)"
    if isinstance(values, torch.Tensor):
        t = values
    else:
        arr = np.asarray(getattr(values, "to_numpy", lambda: values)())
        if arr.size == 0:  # [] is float64 to numpy: an empty list of indices is still one
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iub":
            first = arr.reshape(-1)[:1].tolist()[0] if arr.size else None  # Python values: 1.5, not np.float64(1.5)
            kind = "text" if arr.dtype.kind in "OUS" else str(arr.dtype)
            raise RankdistillError(f"{what} indices must be integers, got {kind} (first value {first!r}); {fix}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.numel() == 0:
        t = t.long()
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        first = t.reshape(-1)[0].item() if t.numel() else None
        raise RankdistillError(f"{what} indices must be integers, got {str(t.dtype).replace('torch.', '')} "
                               f"(first value {first!r}); {fix}")
    if t.dim() != ndim:
        want = "1-D [B]" if ndim == 1 else "2-D [B, L]"
        raise RankdistillError(f"{what} indices must be {want}, got shape {tuple(t.shape)}")
    lo, hi = torch.aminmax(t) if t.numel() else (torch.tensor(0), torch.tensor(0))
    if bool((lo < 0) | (hi >= n)):  # one pass, one sync; the first bad value is looked for only on failure
        value = int(t[(t < 0) | (t >= n)][0])
        unknown = " (-1 is what encode gives an ID the model does not know)" if value == -1 else ""
        raise RankdistillError(f"{what} index {value} is out of range: the model has {n:,} {what}s (rows 0 to "
                               f"{n - 1:,}){unknown}; {fix}")
    return t.to(device=device, dtype=torch.int64)


def _device(model: torch.nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def checked_score(method: Callable) -> Callable:
    """Decorates ``score(self, users [B], items [B, L])``: the arguments checked and converted first."""

    @functools.wraps(method)
    def score(self, users, items):
        device = _device(self)
        users = as_indices(users, "user", self.n_users, device, 1)
        items = as_indices(items, "item", self.n_items, device, 2)
        if len(items) != len(users):
            raise RankdistillError(f"score needs one row of items per user: {len(users)} users but items of shape "
                                   f"{tuple(items.shape)}")
        if items.numel() == 0:  # torchrec's lookups fail on an empty batch
            return torch.empty(items.shape, device=device)
        return method(self, users, items)

    return score


def checked_score_all(method: Callable) -> Callable:
    """Decorates ``score_all(self, users [C])``: the users checked and converted first."""

    @functools.wraps(method)
    def score_all(self, users):
        device = _device(self)
        users = as_indices(users, "user", self.n_users, device, 1)
        if len(users) == 0:  # torchrec's lookups fail on an empty batch
            return torch.empty(0, self.n_items, device=device)
        return method(self, users)

    return score_all
