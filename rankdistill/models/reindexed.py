"""A ranker seen through other row indices: a teacher from elsewhere on the student's vocabularies.

``ReindexedRanker(teacher, users, items)`` is user ``u`` = the teacher's row ``users[u]`` and item ``i`` = its
row ``items[i]`` (int64 maps, -1 where the teacher lacks the ID). A pair whose user or item the teacher lacks
scores ``-inf``: never ranked, never a target. With complete maps over a dot-product teacher,
:func:`reindexed` gives a :class:`ReindexedDotRanker`, whose vectors are the teacher's rows, so full ranking
stays one matmul and every loss that reads the teacher's vectors or representations works unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rankdistill.models.base import DotProductRanker, Forward, Ranker


class ReindexedRanker(Ranker):
    """``teacher`` on other row indices (module docstring); the teacher is frozen."""

    def __init__(self, teacher: Ranker, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        device = next((t.device for t in (*teacher.parameters(), *teacher.buffers())), torch.device("cpu"))
        self.teacher = teacher.eval().requires_grad_(False)
        self.n_users, self.n_items, self.embedding_dim = len(users), len(items), teacher.embedding_dim
        users, items = users.to(device, torch.int64), items.to(device, torch.int64)
        self.register_buffer("user_rows", users.clamp_min(0))  # [U] the teacher's row (0 where it lacks the ID)
        self.register_buffer("item_rows", items.clamp_min(0))  # [I]
        self.register_buffer("user_known", users >= 0)  # bool [U]
        self.register_buffer("item_known", items >= 0)  # bool [I]
        self.complete = bool(self.user_known.all() and self.item_known.all())
        if hasattr(teacher, "score_bytes_per_pair"):
            self.score_bytes_per_pair = teacher.score_bytes_per_pair

    def train(self, mode: bool = True) -> "ReindexedRanker":
        super().train(mode)
        self.teacher.eval()  # frozen whatever the caller does
        return self

    def forward(self, users: torch.Tensor, items: torch.Tensor, shared: torch.Tensor | None = None) -> Forward:
        """users [B], items [B, L], shared [S] in this ranker's rows -> the teacher's Forward of its rows (scores
        of pairs it lacks -inf)."""
        f = self.teacher(self.user_rows[users], self.item_rows[items],
                         None if shared is None else self.item_rows[shared])
        if self.complete:
            return f
        user_ok = self.user_known[users][:, None]  # [B, 1]
        own_ok = user_ok & self.item_known[items]  # [B, L]
        if shared is not None:
            shared_ok = user_ok & self.item_known[shared][None, :]  # [B, S]
            if f.shared_scores is None:  # the model returned one [B, L + S] block
                own_ok = torch.cat([own_ok, shared_ok], dim=1)
            else:
                return replace(f, own_scores=_masked(f.own_scores, own_ok),
                               shared_scores=_masked(f.shared_scores, shared_ok))
        return replace(f, own_scores=_masked(f.own_scores, own_ok))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """users [C] -> [C, n_items]: the teacher's scores of its rows of this ranker's items."""
        scores = self.teacher.score_all(self.user_rows[users]).index_select(1, self.item_rows)
        if self.complete:
            return scores
        return _masked(scores, self.user_known[users][:, None] & self.item_known[None, :])


class ReindexedDotRanker(ReindexedRanker, DotProductRanker):
    """A complete reindexing of a dot-product teacher: its user and item vectors, rows picked by the maps."""

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.teacher.user_vectors(self.user_rows[users])

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.teacher.item_vectors(self.item_rows[items])

    def item_matrix(self) -> torch.Tensor:
        return self.teacher.item_matrix().index_select(0, self.item_rows)

    score_all = DotProductRanker.score_all


def reindexed(teacher: Ranker, users: torch.Tensor, items: torch.Tensor) -> ReindexedRanker:
    """``teacher`` on the rows ``users`` [U] and ``items`` [I] (its row per ID, -1 where it lacks one): a
    :class:`ReindexedDotRanker` when the maps are complete and the teacher scores by dot product."""
    if isinstance(teacher, DotProductRanker) and bool((users >= 0).all() and (items >= 0).all()):
        return ReindexedDotRanker(teacher, users, items)
    return ReindexedRanker(teacher, users, items)


def _masked(scores: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~ok, float("-inf"))
