"""build_model: a ranker from its ModelConfig and the data's sizes."""

from __future__ import annotations

import torch

from rankdistill.config import ModelConfig
from rankdistill.data.csr import Csr
from rankdistill.errors import RankdistillError
from rankdistill.models.base import Ranker
from rankdistill.models.lightgcn import LightGCN
from rankdistill.models.mlp import MLPRanker
from rankdistill.models.two_tower import TwoTower


def build_model(config: ModelConfig, n_users: int, n_items: int, device: torch.device | str = "cpu", seed: int = 0,
                fused: bool = True, graph: Csr | None = None) -> Ranker:
    """A freshly initialised ranker; the same seed gives the same initial weights.

    ``graph``: the training interactions (``split.train``), which a lightgcn model propagates over (needed to
    train it; a loaded one scores from its saved vectors without it). Other kinds ignore it.

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
    if config.kind == "lightgcn":
        if not fused:
            raise RankdistillError("a lightgcn model propagates over the whole graph at every step and trains in "
                                   "one process only (no sharded tables)")
        return LightGCN(n_users, n_items, config.embedding_dim, config.layers, config.optimizer, config.lr,
                        config.init_std, device, graph)
    raise ValueError(f"unknown model kind {config.kind!r}")
