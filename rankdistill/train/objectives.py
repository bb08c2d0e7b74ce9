"""Objectives: what one training step minimises for a batch of users [B], their positives [B] and
negatives [S] shared by the whole batch (uniform samples; a negative that is the row's own positive is
masked out of that row).

- :class:`SupervisedObjective`: the true-label loss on [positive, negatives] plus L2 on the batch's rows.
- :class:`DistillationObjective`: the same, plus ``Σ λ_i · kd_i`` on the candidate list
  [positive, M items sampled from the teacher's top-K, S shared negatives], scored by student and teacher.
  The teacher is frozen three ways: eval(), requires_grad_(False) and no_grad() around its forward.
"""

from __future__ import annotations

import torch
from torch import nn

from rankdistill.config import DistillConfig
from rankdistill.losses.registry import KD_LOSSES, KDBatch
from rankdistill.losses.supervised import SUPERVISED_LOSSES
from rankdistill.models.base import Forward, Ranker
from rankdistill.train.knowledge import TeacherKnowledge


def l2_penalty(fwd: Forward) -> torch.Tensor:
    """Mean squared norm of the looked-up rows: users, each row's own items, and the shared items."""
    reg = fwd.user_emb.square().sum(-1).mean() + fwd.item_emb.square().sum(-1).mean()
    if fwd.shared_emb is not None:
        reg = reg + fwd.shared_emb.square().sum(-1).mean()
    return reg


def mask_accidental_hits(scores: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor) -> torch.Tensor:
    """scores [B, 1 + S] (positive, then shared negatives); a negative equal to the row's positive -> -big."""
    hit = negs[None, :] == pos[:, None]  # [B, S]
    fill = torch.finfo(scores.dtype).min / 4
    return torch.cat([scores[:, :1], scores[:, 1:].masked_fill(hit, fill)], dim=1)


class SupervisedObjective(nn.Module):
    def __init__(self, loss: str = "softmax", l2: float = 0.0) -> None:
        super().__init__()
        self.loss_name, self.loss, self.l2 = loss, SUPERVISED_LOSSES[loss], l2

    def supervised(self, fwd: Forward, pos: torch.Tensor, negs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        s = fwd.scores
        sup_scores = mask_accidental_hits(torch.cat([s[:, :1], s[:, s.shape[1] - len(negs) :]], dim=1), pos, negs)
        sup = self.loss(sup_scores)
        parts = {self.loss_name: sup.detach()}
        if self.l2:
            reg = self.l2 * l2_penalty(fwd)
            parts["l2"] = reg.detach()
            sup = sup + reg
        return sup, parts

    def forward(self, model: Ranker, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor):
        """users [B], pos [B], negs [S] -> (loss, {part name: detached value})"""
        fwd = model(users, pos[:, None], negs)
        return self.supervised(fwd, pos, negs)


class DistillationObjective(SupervisedObjective):
    def __init__(
        self,
        teacher: Ranker,
        knowledge: TeacherKnowledge,
        config: DistillConfig,
        loss: str = "softmax",
        l2: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(loss, l2)
        self.teacher = teacher.eval().requires_grad_(False)
        self.knowledge, self.config = knowledge, config
        ranks = torch.arange(knowledge.k, dtype=torch.float32, device=knowledge.items.device)
        self.register_buffer("rank_weights", torch.exp(-ranks / config.rank_lambda))  # [K]
        self.samples = min(config.topk_samples, knowledge.k)
        self.generator = torch.Generator(device=knowledge.items.device).manual_seed(seed + 7919)

    def train(self, mode: bool = True) -> "DistillationObjective":
        super().train(mode)
        self.teacher.eval()  # the teacher stays frozen whatever the trainer does
        return self

    def forward(self, model: Ranker, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor):
        b = len(users)
        ranks = torch.multinomial(self.rank_weights.expand(b, -1), self.samples, generator=self.generator)  # [B, M]
        own = torch.cat([pos[:, None], self.knowledge.items[users].gather(1, ranks)], dim=1)  # [B, 1 + M]
        fwd = model(users, own, negs)  # scores [B, 1 + M + S]
        total, parts = self.supervised(fwd, pos, negs)
        with torch.no_grad():
            teacher_scores = self.teacher(users, own, negs).scores
        batch = KDBatch(fwd.scores, teacher_scores, 1 + self.samples, ranks, self.config.temperature)
        for name, weight in self.config.terms:
            value = KD_LOSSES[name][0](batch)
            parts[name] = value.detach()
            total = total + weight * value
        return total, parts
