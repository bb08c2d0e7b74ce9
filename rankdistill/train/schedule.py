"""Learning-rate schedules as pure functions of training progress."""

from __future__ import annotations

import math


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total_steps``.

    constant: 1; cosine: ½(1 + cos(π·p)); linear: 1 − p, with p the progress after warm-up in [0, 1];
    during the first ``warmup_steps`` the factor rises linearly from 1/warmup_steps to 1.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return max(1.0 - p, 0.0)
    return 1.0
