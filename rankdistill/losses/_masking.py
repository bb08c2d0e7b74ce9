"""Helpers shared by the losses: masked means without host syncs, and their denominators under data
parallelism."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

# set by the sharded engine while a process computes its share of a batch (see batch_denominator)
_SHARE: ContextVar[tuple[Callable[[torch.Tensor], torch.Tensor], float, int] | None] = ContextVar("batch_share",
                                                                                                   default=None)


@contextmanager
def batch_share(all_reduce_sum: Callable[[torch.Tensor], torch.Tensor], share: float,
                first_row: int = 0) -> Iterator[None]:
    """Inside: this process holds ``share`` (b_r / B) of a global batch's rows, from the batch's row
    ``first_row`` on, and ``all_reduce_sum`` sums a tensor over the processes. Every count-normalised mean
    then divides by the whole batch's count (:func:`batch_denominator`), so the processes' losses, scaled by
    b_r·W/B and averaged over the W processes (as DDP and torchrec average gradients), equal the one-process
    loss of the whole batch."""
    token = _SHARE.set((all_reduce_sum, share, first_row))
    try:
        yield
    finally:
        _SHARE.reset(token)


def first_row() -> int:
    """Where this process's rows begin in the global batch: 0 in one process, ``first_row`` inside
    :func:`batch_share` (the objective carries the distillation lists on the global batch's first rows)."""
    share = _SHARE.get()
    return 0 if share is None else share[2]


def batch_denominator(count: torch.Tensor) -> torch.Tensor:
    """The denominator of a mean over ``count`` [] masked positions of this process's rows: the count itself
    (at least 1) in one process; inside :func:`batch_share`, the global batch's count (at least 1) times this
    process's share of the rows.

    Why: process r's loss S_r / d_r enters the update as (b_r / B)·S_r / d_r; with d_r = C·b_r / B (C the
    global count) the sum over processes is Σ_r S_r / C, the one-process mean. A per-process count C_r gives
    that only when every row has the same count."""
    share = _SHARE.get()
    if share is None:
        return count.clamp_min(1.0)
    all_reduce_sum, fraction, _ = share
    return all_reduce_sum(count.detach()).clamp_min(1.0) * fraction


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` [*S] over positions where ``mask`` [*S] is True (0 when none are)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / batch_denominator(m.sum())


def mask_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Padded positions -> a very negative finite value (finite keeps gradients NaN-free when a row is all padding)."""
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min / 4)
