"""Small test doubles shared by the test modules."""

import torch

from rankdistill.models.base import DotProductRanker, Forward


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
