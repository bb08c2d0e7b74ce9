"""Small test doubles shared by the test modules."""

from pathlib import Path

import pandas as pd
import torch

from rankdistill.models.base import DotProductRanker, Forward


QUICK_TRAIN = ["--epochs", "2", "--batch-size", "512", "--negatives", "32", "--quiet"]  # a command's fast training


def string_id_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` (integer user, item columns) written to ``path`` as a CSV with string IDs ("u12", "i7")."""
    frame.assign(user="u" + frame.user.astype(str), item="i" + frame.item.astype(str)).to_csv(path, index=False)
    return path


class MatrixRanker(DotProductRanker):
    """score(u, i) = <U[u], I[i]> from fixed matrices (no torchrec): exact with small integer entries."""

    def __init__(self, user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> None:
        super().__init__()
        self.n_users, self.n_items, self.embedding_dim = user_vecs.shape[0], item_vecs.shape[0], user_vecs.shape[1]
        self.register_buffer("U", user_vecs.float())
        self.register_buffer("I", item_vecs.float())

    def user_vectors(self, users):
        return self.U[users]

    def item_vectors(self, items):
        return self.I[items]

    def item_matrix(self):
        return self.I

    def forward(self, users, items, shared=None):
        return Forward((self.U[users][:, None, :] * self.I[items]).sum(-1), None, None, None, None, None, None)


def tiny_student(split, seed: int = 2):
    """A dim-4 two-tower student on ``split``'s sizes."""
    from rankdistill.config import ModelConfig
    from rankdistill.models.factory import build_model

    return build_model(ModelConfig(embedding_dim=4), split.n_users, split.n_items, seed=seed)


def tiny_batch(split, b: int = 32, s: int = 16, seed: int = 0):
    """(users [b], positives [b], shared negatives [s]) drawn from ``split``'s training pairs."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(split.train.nnz, (b,), generator=g)
    return split.train.rows()[idx], split.train.indices[idx], torch.randint(split.n_items, (s,), generator=g)


def count_table_lookups(model) -> dict[str, int]:
    """Wrap ``model``'s user and item tables so each lookup is counted: -> the live {"user": n, "item": n}."""
    calls = {"user": 0, "item": 0}
    for name in calls:
        table = getattr(model, f"{name}_table")
        original = table.forward

        def counted(ids, _name=name, _original=original):
            calls[_name] += 1
            return _original(ids)

        table.forward = counted
    return calls


def nan_at_epoch2_step3(loss: str = "softmax", l2: float = 0.0):
    """A supervised objective that is finite until epoch 2's third step (after two steps of epoch 2 have moved
    the weights), then NaN: the non-finite-loss tests of the local and the sharded trainer."""
    from rankdistill.train.objectives import SupervisedObjective

    class NaNAtEpoch2Step3(SupervisedObjective):
        def on_epoch_start(self, epoch):
            self.epoch, self.calls = epoch, 0

        def forward(self, model, users, pos, negs):
            loss, parts = super().forward(model, users, pos, negs)
            self.calls += 1
            return (loss * float("nan"), parts) if (self.epoch, self.calls) >= (2, 3) else (loss, parts)

    return NaNAtEpoch2Step3(loss, l2)
