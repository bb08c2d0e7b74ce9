"""The Ranker interface every teacher and student implements.

A ranker scores (user, item) pairs: ``score(users [B], items [B, L]) -> [B, L]``. Dot-product rankers
(``DotProductRanker``) also expose user and item vectors, so full ranking is one matmul per user chunk and
the model can be served by nearest-neighbour search.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from rankdistill.models.indices import checked_score, checked_score_all


@dataclass
class Forward:
    """What one training forward pass produces (one lookup per table, so the fused update runs once).

    ``own_scores`` [B, L] and ``shared_scores`` [B, S] are kept apart: the supervised loss reads the two
    blocks without copying them into one matrix; ``scores`` [B, L + S] joins them once, when a loss needs it."""

    own_scores: torch.Tensor  # [B, L] each row's own L candidates (or [B, L + S] when shared_scores is None)
    user_emb: torch.Tensor  # [B, D] raw table rows (L2 regularisation acts on these)
    item_emb: torch.Tensor  # [B, L, D]
    shared_emb: torch.Tensor | None  # [S, D]
    user_hidden: torch.Tensor  # [B, H] representation fed to the scorer (hint losses act on these)
    item_hidden: torch.Tensor  # [B, L, H]
    shared_hidden: torch.Tensor | None  # [S, H]
    shared_scores: torch.Tensor | None = None  # [B, S] the shared candidates' scores
    extra_scores: torch.Tensor | None = None  # [R, E] the extra candidates of the first R rows (``extra``)

    @cached_property
    def scores(self) -> torch.Tensor:
        """[B, L + S]: each row's own L candidates, then the S shared ones."""
        if self.shared_scores is None:
            return self.own_scores
        return torch.cat([self.own_scores, self.shared_scores], dim=1)


def join_candidates(items: torch.Tensor, extra: torch.Tensor | None, shared: torch.Tensor | None) -> torch.Tensor:
    """The ids of one lookup: items [B, L], then extra [R, E], then shared [S] -> int64 [B·L + R·E + S]
    (split back with :func:`split_candidates`)."""
    parts = [items.reshape(-1)] + [t.reshape(-1) for t in (extra, shared) if t is not None]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def split_candidates(rows: torch.Tensor, items: torch.Tensor, extra: torch.Tensor | None):
    """Rows [B·L + R·E + S, H] looked up for :func:`join_candidates` -> (items' [B, L, H], extra's [R, E, H] or
    None, shared's [S, H])."""
    b, l = items.shape
    r, e = extra.shape if extra is not None else (0, 0)
    # one split, not slices: its backward joins the blocks' gradients in one copy, where each slice's backward
    # would zero-fill a gradient of all the rows
    own, more, shared = rows.split([b * l, r * e, rows.shape[0] - b * l - r * e])
    h = rows.shape[-1]  # not -1 in the views: a block may be empty (a process with no rows carrying a list)
    return own.view(b, l, h), (more.view(r, e, h) if extra is not None else None), shared


class Ranker(nn.Module, abc.ABC):
    n_users: int
    n_items: int
    embedding_dim: int

    @abc.abstractmethod
    def forward(self, users: torch.Tensor, items: torch.Tensor, shared: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> Forward:
        """users int64 [B], items int64 [B, L] (each row's own candidates), shared int64 [S] (candidates
        scored for every row, e.g. sampled negatives), extra int64 [R, E] (R <= B: further candidates of the
        first R rows only, e.g. a distillation term's long lists on a few rows) -> scores [B, L + S] (and
        ``extra_scores`` [R, E]) and the embeddings behind them. Each table is looked up once, so the fused
        optimizer updates each row once per step."""

    @checked_score
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users int64 [B], items int64 [B, L] -> scores [B, L] (higher = more relevant). Any array-like of
        integer row indices is accepted and checked (:mod:`rankdistill.models.indices`)."""
        return self.forward(users, items).scores

    @abc.abstractmethod
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """users int64 [C] -> scores of every item [C, n_items]. Implementations decorate it with
        :func:`rankdistill.models.indices.checked_score_all` (array-likes accepted, indices checked)."""

    def dense_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by a regular optimizer (the embedding tables update themselves in backward)."""
        return [p for n, p in self.named_parameters() if ".ebc." not in f".{n}" and p.requires_grad]

    def num_parameters(self) -> int:
        """Trainable numbers: embedding rows × dims plus dense weights."""
        tables = sum(t.weight.numel() for t in self.tables())
        return tables + sum(p.numel() for p in self.dense_parameters())

    def tables(self) -> list[nn.Module]:
        from rankdistill.models.embedding import EmbeddingTable

        return [m for m in self.modules() if isinstance(m, EmbeddingTable)]

    def config(self) -> dict:
        """JSON-able constructor arguments; ``build_model(config)`` rebuilds the architecture."""
        raise NotImplementedError


def as_ranker(model: object, what: str = "model") -> Ranker:
    """``model`` itself when it is a Ranker, else the Ranker it holds as ``.model`` (a loaded model directory,
    :class:`rankdistill.SavedModel`, or a :class:`rankdistill.TrainedModel`); RankdistillError otherwise."""
    if isinstance(model, Ranker):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, Ranker):
        return inner
    from rankdistill.errors import RankdistillError

    raise RankdistillError(f"{what} must be a Ranker or a loaded model directory (rankdistill.load(path)), "
                           f"got {type(model).__name__}")


class DotProductRanker(Ranker):
    """score(u, i) = <user_vectors(u), item_vectors(i)>."""

    @abc.abstractmethod
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """users int64 [*S] -> [*S, D]."""

    @abc.abstractmethod
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """items int64 [*S] -> [*S, D]."""

    @abc.abstractmethod
    def item_matrix(self) -> torch.Tensor:
        """Every item's vector [n_items, D], computed once per evaluation."""

    @checked_score_all
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_vectors(users) @ self.item_matrix().T
