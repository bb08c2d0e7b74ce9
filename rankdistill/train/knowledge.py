"""Teacher knowledge: the teacher's top-K items and scores per user, computed once in chunks.

The user's training items are excluded (they are known positives, not knowledge). The student samples
extra candidates from these lists; the teacher's scores of any candidate come from the frozen teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankdistill.data.split import Split
from rankdistill.evaluation.evaluator import rank_all
from rankdistill.models.base import Ranker


@dataclass
class TeacherKnowledge:
    items: torch.Tensor  # int64 [U, K] the teacher's top-K items per user, best first
    scores: torch.Tensor  # float [U, K] their teacher scores

    @property
    def k(self) -> int:
        return self.items.shape[1]

    @classmethod
    def compute(cls, teacher: Ranker, split: Split, k: int = 100) -> "TeacherKnowledge":
        ranking = rank_all(teacher, split.train, k)
        return cls(ranking.items, ranking.scores)
