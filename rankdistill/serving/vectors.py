"""The serving form of a dot-product ranker: one vector per user and per item, score = inner product.

``serving_vectors(model)`` gives the vectors a nearest-neighbour index serves; ``score_rule`` says in words
(for the export's manifest) how they relate to the model's score; :class:`VectorRanker` scores from fixed
vectors, so exported (or quantised) vectors are evaluated with the same full-ranking protocol as the model.
"""

from __future__ import annotations

import torch

from rankdistill.config import ModelConfig
from rankdistill.errors import RankdistillError
from rankdistill.models.base import DotProductRanker, Forward, Ranker

CHUNK = 65536  # rows per lookup when reading the vectors out of a model


@torch.no_grad()
def serving_vectors(model: Ranker) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (user vectors float32 [n_users, D], item vectors float32 [n_items, D]) on the CPU, such that
    ``users @ items.T`` is the model's ``score_all``. Refuses a model that is not scored by an inner product."""
    if not isinstance(model, DotProductRanker):
        raise RankdistillError(f"a {getattr(model, 'kind', type(model).__name__)} model scores (user, item) pairs "
                               "with an MLP and cannot be served by inner-product search; export a two_tower or "
                               "lightgcn model")
    was_training = model.training
    model.eval()
    try:
        users = torch.cat([model.user_vectors(torch.arange(a, min(a + CHUNK, model.n_users), device=_device(model)))
                           for a in range(0, model.n_users, CHUNK)])
        items = model.item_matrix()
    finally:
        model.train(was_training)
    return users.float().cpu().contiguous(), items.float().cpu().contiguous()


def _device(model: Ranker) -> torch.device:
    from rankdistill.evaluation.evaluator import model_device

    return model_device(model)


def score_rule(config: ModelConfig) -> dict:
    """How the exported vectors give the model's score (JSON-able, for the manifest)."""
    rule = {"score": "inner product of the user vector and the item vector", "metric": "inner_product"}
    if config.kind == "two_tower" and config.score == "cosine":
        t = config.temperature
        rule.update(model_score=f"cos(u, i) / {t}",
                    user_vectors=f"L2-normalised, then divided by the temperature {t} (norm {1 / t:g})",
                    item_vectors="L2-normalised (norm 1)",
                    note="the inner product is the model's score cos(u, i) / t; a new user vector ranks the same "
                         "whether it is scaled or not, but scores match the model only when it is normalised "
                         "and divided by t")
    elif config.kind == "lightgcn":
        rule.update(model_score="<e_u, e_i>", user_vectors="the propagated LightGCN vectors (raw)",
                    item_vectors="the propagated LightGCN vectors (raw)")
    else:
        towers = f" after the towers {list(config.tower_layers)}" if config.tower_layers else ""
        rule.update(model_score="<u, i>", user_vectors=f"raw{towers}", item_vectors=f"raw{towers}")
    return rule


class VectorRanker(DotProductRanker):
    """score(u, i) = <users[u], items[i]> from fixed float32 matrices users [U, D] and items [I, D]."""

    kind = "vectors"

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        if users.dim() != 2 or items.dim() != 2 or users.shape[1] != items.shape[1]:
            raise ValueError(f"users [U, D] and items [I, D] must share D, got {tuple(users.shape)} and "
                             f"{tuple(items.shape)}")
        self.n_users, self.n_items, self.embedding_dim = users.shape[0], items.shape[0], users.shape[1]
        self.register_buffer("users", users.float())
        self.register_buffer("items", items.float())

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.users[users]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.items[items]

    def item_matrix(self) -> torch.Tensor:
        return self.items

    def forward(self, users: torch.Tensor, items: torch.Tensor, shared: torch.Tensor | None = None) -> Forward:
        if shared is not None:
            items = torch.cat([items, shared.expand(len(users), -1)], dim=1)
        u, i = self.users[users], self.items[items]
        return Forward((u[:, None, :] * i).sum(-1), u, i, None, u, i, None)

    def num_parameters(self) -> int:
        return self.users.numel() + self.items.numel()
