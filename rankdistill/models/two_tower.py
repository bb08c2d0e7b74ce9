"""TwoTower: user and item embeddings (torchrec, fused) with optional MLP towers, scored by a dot product.

With ``tower_layers=()`` it is matrix factorisation (MF), the model of the MF-BPR / RRD / DCD papers.
``score="cosine"`` scores by cosine similarity divided by a temperature, ``cos(u, i) / t``: both sides are
L2-normalised and the user side is divided by ``t`` (the recipe of the strong softmax-loss MF results:
Wu et al., "BSL: Understanding and Improving Softmax Loss for Recommendation", ICDE 2024, t ≈ 0.1). The scores
are then logits in [-1/t, 1/t] that softmax losses and distillation use as they are.
Either way it is served by maximum-inner-product search over ``item_matrix()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rankdistill.models.base import DotProductRanker, Forward, join_candidates, split_candidates
from rankdistill.models.embedding import EmbeddingTable


def _tower(dim: int, layers: tuple[int, ...]) -> nn.Module:
    if not layers:
        return nn.Identity()
    mods: list[nn.Module] = []
    for i, width in enumerate(layers):
        mods.append(nn.Linear(dim if i == 0 else layers[i - 1], width))
        if i < len(layers) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


LONG_LIST = 32  # own candidates per row above which scores go through bmm


def _row_scores(hu: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """hu [B, D], hi [B, L, D] -> [B, L]: each row's vector against its own candidates."""
    if hi.shape[1] <= LONG_LIST:  # multiply-sum is 3-8x faster than einsum/bmm for short lists on CPU ...
        return (hu[:, None, :] * hi).sum(-1)
    return torch.bmm(hi, hu[:, :, None]).squeeze(-1)  # ... and bmm for long ones (no [B, L, D] temporary)


class TwoTower(DotProductRanker):
    kind = "two_tower"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int,
        tower_layers: tuple[int, ...] = (),
        optimizer: str = "rowwise_adagrad",
        lr: float = 0.05,
        init_std: float = 0.1,
        device: torch.device | str = "cpu",
        fused: bool = True,  # False: plain torchrec tables for DistributedModelParallel (EmbeddingTable)
        score: str = "dot",  # dot | cosine
        temperature: float = 1.0,  # cosine: scores are cos / temperature
    ) -> None:
        super().__init__()
        if score not in ("dot", "cosine"):
            raise ValueError(f"score must be 'dot' or 'cosine', got {score!r}")
        self.score_kind, self.temperature = score, float(temperature)
        self.n_users, self.n_items, self.embedding_dim = n_users, n_items, embedding_dim
        self.tower_layers = tuple(tower_layers)
        self._init = dict(optimizer=optimizer, lr=lr, init_std=init_std)
        self.user_table = EmbeddingTable("user", n_users, embedding_dim, optimizer, lr, init_std, device, fused)
        self.item_table = EmbeddingTable("item", n_items, embedding_dim, optimizer, lr, init_std, device, fused)
        self.user_tower = _tower(embedding_dim, self.tower_layers).to(device)
        self.item_tower = _tower(embedding_dim, self.tower_layers).to(device)

    def _user_side(self, rows: torch.Tensor) -> torch.Tensor:
        h = self.user_tower(rows)
        return h if self.score_kind == "dot" else F.normalize(h, dim=-1) / self.temperature

    def _item_side(self, rows: torch.Tensor) -> torch.Tensor:
        h = self.item_tower(rows)
        return h if self.score_kind == "dot" else F.normalize(h, dim=-1)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self._user_side(self.user_table(users))

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self._item_side(self.item_table(items))

    def item_matrix(self) -> torch.Tensor:
        return self._item_side(self.item_table.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor, shared: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> Forward:
        flat = join_candidates(items, extra, shared)
        u, rows = self.user_table(users), self.item_table(flat)  # [B, D], [B*L + R*E + S, D]: one lookup per table
        hu, hrows = self._user_side(u), self._item_side(rows)
        i, e, se = split_candidates(rows, items, extra)
        # a dot product without towers scores the rows themselves: one split, so one gradient join in backward
        hi, he, hs = (i, e, se) if hrows is rows else split_candidates(hrows, items, extra)
        scores = _row_scores(hu, hi)
        extra_scores = None if extra is None else _row_scores(hu[: len(he)], he)
        if shared is None:
            return Forward(scores, u, i, None, hu, hi, None, extra_scores=extra_scores)
        return Forward(scores, u, i, se, hu, hi, hs, shared_scores=hu @ hs.T, extra_scores=extra_scores)

    def config(self) -> dict:
        return dict(kind=self.kind, n_users=self.n_users, n_items=self.n_items, embedding_dim=self.embedding_dim,
                    tower_layers=list(self.tower_layers), score=self.score_kind, temperature=self.temperature,
                    **self._init)
