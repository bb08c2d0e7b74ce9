"""Popularity: every user gets the items with the most training interactions. The floor any model must beat."""

from __future__ import annotations

import torch

from rankdistill.data.csr import Csr
from rankdistill.models.base import DotProductRanker, Forward


class Popularity(DotProductRanker):
    kind = "popularity"

    def __init__(self, train: Csr) -> None:
        super().__init__()
        self.n_users, self.n_items, self.embedding_dim = train.n_rows, train.n_cols, 1
        counts = torch.bincount(train.indices, minlength=train.n_cols).float()
        self.register_buffer("counts", counts[:, None])  # [I, 1]

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return torch.ones(*users.shape, 1, device=users.device)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.counts[items]

    def item_matrix(self) -> torch.Tensor:
        return self.counts

    def forward(self, users: torch.Tensor, items: torch.Tensor, shared: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> Forward:
        if shared is not None:
            items = torch.cat([items, shared.expand(len(users), -1)], dim=1)
        u, i = self.user_vectors(users), self.item_vectors(items)
        extra_scores = None if extra is None else self.item_vectors(extra).squeeze(-1)
        return Forward(i.squeeze(-1), u, i, None, u, i, None, extra_scores=extra_scores)

    def num_parameters(self) -> int:
        return 0
