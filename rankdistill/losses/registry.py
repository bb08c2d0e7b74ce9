"""Distillation losses by name, for ``--kd NAME[:WEIGHT][+NAME[:WEIGHT]...]``.

Each entry adapts a pure loss function to the candidate list the distillation objective builds for a batch
(:class:`KDBatch`): column 0 the observed item, then M items sampled from the teacher's top-K, then S
uniform negatives shared by the batch. The total objective is ``supervised + Σ weight_i · kd_i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rankdistill.errors import RankdistillError
from rankdistill.losses.listwise import listmle, listwise_kl
from rankdistill.losses.pointwise import score_mse, soft_label_bce


@dataclass
class KDBatch:
    student: torch.Tensor  # [B, L] student scores of the candidate list
    teacher: torch.Tensor  # [B, L] teacher scores of the same list (no gradient)
    n_own: int  # leading columns owned by each row: 1 positive + M teacher top-K samples; the rest are negatives
    topk_ranks: torch.Tensor  # int64 [B, M] teacher ranks (0 = best) of columns 1..M
    temperature: float


KDLoss = Callable[[KDBatch], torch.Tensor]


def _listmle_teacher_order(b: KDBatch) -> torch.Tensor:
    return listmle(b.student, b.teacher.argsort(dim=1, descending=True))


KD_LOSSES: dict[str, tuple[KDLoss, str]] = {
    "mse": (lambda b: score_mse(b.student, b.teacher), "pointwise score MSE"),
    "soft_bce": (lambda b: soft_label_bce(b.student, b.teacher, temperature=b.temperature),
                 "pointwise soft-label BCE with temperature (Hinton et al. 2015)"),
    "listkl": (lambda b: listwise_kl(b.student, b.teacher, temperature=b.temperature),
               "listwise KL between softmaxes with temperature (ListNet-style)"),
    "listmle": (_listmle_teacher_order, "Plackett-Luce likelihood of the teacher's order of the list (ListMLE)"),
}


def parse_kd(spec: str) -> tuple[tuple[str, float], ...]:
    """'soft_bce:0.5+listkl' -> (('soft_bce', 0.5), ('listkl', 1.0)); 'none' -> ()."""
    spec = spec.strip()
    if spec in ("", "none"):
        return ()
    terms = []
    for part in spec.split("+"):
        name, _, weight = part.strip().partition(":")
        if name not in KD_LOSSES:
            raise RankdistillError(f"unknown distillation loss {name!r} in --kd {spec!r}; choose from {', '.join(KD_LOSSES)}")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise RankdistillError(f"weight {weight!r} of {name!r} in --kd {spec!r} is not a number") from None
        if not w > 0:
            raise RankdistillError(f"weight of {name!r} in --kd {spec!r} must be > 0, got {w}")
        terms.append((name, w))
    return tuple(terms)
