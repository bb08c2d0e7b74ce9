"""MLPRanker: user and item embeddings concatenated and scored by an MLP (NCF's MLP branch, He et al.
WWW 2017; the model of the tutorial this project grew from).

    score(u, i) = w_L · ReLU(... ReLU(W_1 [e_u ; e_i] + b_1) ...) + b_L

Not servable by nearest-neighbour search, which is why it is a natural teacher for a two-tower student.
Full ranking splits the first layer, W_1 [e_u ; e_i] = W_u e_u + W_i e_i, computes the item half once per
evaluation, and runs the rest over blocks of items so memory stays bounded.
"""

from __future__ import annotations

import torch
from torch import nn

from rankdistill.models.base import Forward, Ranker, join_candidates, split_candidates
from rankdistill.models.embedding import EmbeddingTable
from rankdistill.models.indices import checked_score_all


class MLPRanker(Ranker):
    kind = "mlp"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int,
        mlp_layers: tuple[int, ...] = (64, 32),
        optimizer: str = "rowwise_adagrad",
        lr: float = 0.05,
        init_std: float = 0.1,
        device: torch.device | str = "cpu",
        block_elements: int = 1 << 24,
        fused: bool = True,  # False: plain torchrec tables for DistributedModelParallel (EmbeddingTable)
    ) -> None:
        super().__init__()
        if not mlp_layers:
            raise ValueError("an MLP ranker needs at least one hidden layer")
        self.n_users, self.n_items, self.embedding_dim = n_users, n_items, embedding_dim
        self.mlp_layers = tuple(mlp_layers)
        self._init = dict(optimizer=optimizer, lr=lr, init_std=init_std)
        self.block_elements = block_elements  # bound on C × items-block × width in score_all
        self.user_table = EmbeddingTable("user", n_users, embedding_dim, optimizer, lr, init_std, device, fused)
        self.item_table = EmbeddingTable("item", n_items, embedding_dim, optimizer, lr, init_std, device, fused)
        widths = (2 * embedding_dim, *self.mlp_layers)
        self.first = nn.Linear(widths[0], widths[1]).to(device)
        rest: list[nn.Module] = []
        for a, b in zip(widths[1:-1], widths[2:]):
            rest += [nn.ReLU(), nn.Linear(a, b)]
        rest += [nn.ReLU(), nn.Linear(widths[-1], 1)]
        self.rest = nn.Sequential(*rest).to(device)

    def _score(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """u [B, D], i [B, L, D] or [1, S, D] (items shared by every row) -> [B, L] or [B, S].

        The first layer is split (W_u e_u + W_i e_i), so a shared item's half is computed once, not B times."""
        d = self.embedding_dim
        w = self.first.weight  # [H, 2D]
        h = (u @ w[:, :d].T)[:, None, :] + i @ w[:, d:].T + self.first.bias  # [B, L, H] by broadcasting
        return self.rest(h).squeeze(-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor, shared: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> Forward:
        flat = join_candidates(items, extra, shared)
        u, rows = self.user_table(users), self.item_table(flat)  # one lookup per table
        i, e, s = split_candidates(rows, items, extra)
        scores = self._score(u, i)
        extra_scores = None if extra is None else self._score(u[: len(e)], e)
        if shared is None:
            return Forward(scores, u, i, None, u, i, None, extra_scores=extra_scores)
        shared_scores = self._score(u, s[None])
        return Forward(scores, u, i, s, u, i, s, shared_scores=shared_scores, extra_scores=extra_scores)

    @checked_score_all
    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        d = self.embedding_dim
        w = self.first.weight
        hu = self.user_table(users) @ w[:, :d].T + self.first.bias  # [C, H]
        hi = self.item_table.weight @ w[:, d:].T  # [I, H]
        out = torch.empty(len(users), self.n_items, device=hu.device)
        block = max(1, self.block_elements // max(1, len(users) * hu.shape[1]))
        for a in range(0, self.n_items, block):
            out[:, a : a + block] = self.rest(hu[:, None, :] + hi[None, a : a + block, :]).squeeze(-1)
        return out

    def config(self) -> dict:
        return dict(kind=self.kind, n_users=self.n_users, n_items=self.n_items, embedding_dim=self.embedding_dim,
                    mlp_layers=list(self.mlp_layers), **self._init)
