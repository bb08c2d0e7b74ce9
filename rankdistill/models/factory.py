"""build_model: a ranker from its ModelConfig and the data's sizes."""

from __future__ import annotations

import torch

from rankdistill.config import ModelConfig
from rankdistill.models.base import Ranker
from rankdistill.models.mlp import MLPRanker
from rankdistill.models.two_tower import TwoTower


def build_model(config: ModelConfig, n_users: int, n_items: int, device: torch.device | str = "cpu", seed: int = 0,
                fused: bool = True) -> Ranker:
    """A freshly initialised ranker; the same seed gives the same initial weights.

    ``fused=False``: plain torchrec tables with the optimizer applied in backward, the form
    DistributedModelParallel shards (build them on ``device="meta"`` and load the fused model's weights after
    sharding: the two kinds draw different initial values)."""
    torch.manual_seed(seed)
    if config.kind == "two_tower":
        return TwoTower(n_users, n_items, config.embedding_dim, config.tower_layers, config.optimizer, config.lr,
                        config.init_std, device, fused, score=config.score, temperature=config.temperature)
    if config.kind == "mlp":
        return MLPRanker(n_users, n_items, config.embedding_dim, config.mlp_layers, config.optimizer, config.lr,
                         config.init_std, device, fused=fused)
    raise ValueError(f"unknown model kind {config.kind!r}")
