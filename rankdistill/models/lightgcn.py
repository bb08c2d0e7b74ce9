"""LightGCN: embeddings smoothed over the user–item graph, scored by a dot product.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation", SIGIR 2020::

    e^(0)   = the table rows (users, then items: N = U + I rows)
    e^(k+1) = Â e^(k),   Â = D^{-1/2} A D^{-1/2}     A = [[0, R], [Rᵀ, 0]], R [U, I] the training interactions
    e       = 1/(K+1) · Σ_{k=0..K} e^(k)              (layer weights 1/(K+1), the paper's choice)
    score(u, i) = <e_u, e_i>

A training step looks up every row of both tables once (ids 0..n-1), propagates, and gathers the batch's
rows: the gradient reaches every row through Â and the fused optimizer updates each row once per step. A step
therefore costs O(nnz · D · K) whatever the batch size.

Inference (eval mode or no_grad) scores from the final vectors ``user_final`` / ``item_final``: buffers that
are propagated once and kept until the next training step (or ``load_state_dict``) makes them stale. They
are persistent, refreshed by ``state_dict()``, so a saved model scores without its graph; training needs the
graph (``set_graph(split.train)``).
"""

from __future__ import annotations

import warnings

import torch

from rankdistill.data.csr import Csr
from rankdistill.errors import RankdistillError
from rankdistill.models.base import DotProductRanker, Forward, join_candidates, split_candidates
from rankdistill.models.embedding import EmbeddingTable


def normalized_adjacency(train: Csr, device: torch.device | str = "cpu") -> torch.Tensor:
    """Â = D^{-1/2} A D^{-1/2} of the bipartite graph of ``train`` (rows: users, columns: items), as a sparse
    CSR float32 matrix [U + I, U + I] (users first, then items). Repeated pairs count once; a node without
    interactions has an empty row and column."""
    n_users, n = train.n_rows, train.n_rows + train.n_cols
    users, items = train.rows(), train.indices + n_users
    ends = torch.stack([torch.cat([users, items]), torch.cat([items, users])])  # both directions
    a = torch.sparse_coo_tensor(ends, torch.ones(ends.shape[1]), (n, n), check_invariants=False).coalesce()
    rows, cols = a.indices()
    degree = torch.bincount(rows, minlength=n).float()
    values = degree[rows].rsqrt() * degree[cols].rsqrt()
    crow = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=n), 0, out=crow[1:])
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state", once per process
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support", category=UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, (n, n), check_invariants=False).to(device)


class _SymmetricSpMM(torch.autograd.Function):
    """Â x for a symmetric sparse Â: the gradient Âᵀ g is Â g, so the backward runs the same fast CSR product
    (torch's own backward transposes the CSR matrix, ~12x slower on the CPU)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return torch.sparse.mm(adjacency, x)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor):
        return None, torch.sparse.mm(ctx.adjacency, grad.contiguous())


def propagate(adjacency: torch.Tensor, e0: torch.Tensor, layers: int) -> torch.Tensor:
    """adjacency: symmetric sparse [N, N] (Â), e0 [N, D], layers K >= 1 -> 1/(K+1) · Σ_{k=0..K} Â^k e0 [N, D]."""
    h, total = e0, e0
    for _ in range(layers):
        h = _SymmetricSpMM.apply(adjacency, h)
        total = total + h
    return total / (layers + 1)


class LightGCN(DotProductRanker):
    kind = "lightgcn"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int,
        layers: int = 3,
        optimizer: str = "rowwise_adagrad",
        lr: float = 0.05,
        init_std: float = 0.1,
        device: torch.device | str = "cpu",
        graph: Csr | None = None,  # the training interactions (split.train); needed to train, not to score
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.n_users, self.n_items, self.embedding_dim, self.layers = n_users, n_items, embedding_dim, int(layers)
        self._init = dict(optimizer=optimizer, lr=lr, init_std=init_std)
        self.user_table = EmbeddingTable("user", n_users, embedding_dim, optimizer, lr, init_std, device)
        self.item_table = EmbeddingTable("item", n_items, embedding_dim, optimizer, lr, init_std, device)
        nan = float("nan")  # never propagated yet: NaN, so a state saved before any propagation is not trusted
        self.register_buffer("user_final", torch.full((n_users, embedding_dim), nan, device=device))
        self.register_buffer("item_final", torch.full((n_items, embedding_dim), nan, device=device))
        self.adjacency: torch.Tensor | None = None  # Â [U + I, U + I], sparse CSR, not saved
        self.fresh = False  # whether user_final / item_final are those of the current table rows
        self.propagations = 0  # inference propagations so far (tests count them)
        if graph is not None:
            self.set_graph(graph)

    def set_graph(self, train: Csr) -> None:
        """Build Â from the training interactions (users [n_users] × items [n_items]) on the tables' device."""
        if (train.n_rows, train.n_cols) != (self.n_users, self.n_items):
            raise RankdistillError(f"the LightGCN has {self.n_users:,} users and {self.n_items:,} items but the graph "
                                   f"has {train.n_rows:,} and {train.n_cols:,}; pass the split it was built for")
        self.adjacency = normalized_adjacency(train.to("cpu"), self.user_final.device)
        self.fresh = False

    # -- the final vectors ---------------------------------------------------------------------------------
    def _layer0(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row of both tables, one lookup each: -> (users [U, D], items [I, D])."""
        dev = self.user_final.device
        return (self.user_table(torch.arange(self.n_users, device=dev)),
                self.item_table(torch.arange(self.n_items, device=dev)))

    def _propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A training propagation, with gradients to every row: -> final (users [U, D], items [I, D]) and the
        layer-0 rows (users [U, D], items [I, D])."""
        if self.adjacency is None:
            raise RankdistillError("this LightGCN has no training graph; call model.set_graph(split.train) before "
                                   "training it (a loaded LightGCN scores from its saved vectors but cannot train "
                                   "without the graph)")
        self.fresh = False  # the backward of this step updates the rows
        u0, i0 = self._layer0()
        final = propagate(self.adjacency, torch.cat([u0, i0]), self.layers)
        return final[: self.n_users], final[self.n_users :], u0, i0

    @torch.no_grad()
    def final_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached final vectors (users [U, D], items [I, D]), propagated again only when stale."""
        if not self.fresh:
            if self.adjacency is None:
                raise RankdistillError("this LightGCN has no final vectors yet and no graph to compute them; call "
                                       "model.set_graph(split.train) or load a trained model directory")
            e0 = torch.cat([self.user_table.weight, self.item_table.weight])
            final = propagate(self.adjacency, e0, self.layers)
            self.user_final, self.item_final = final[: self.n_users].clone(), final[self.n_users :].clone()
            self.fresh = True
            self.propagations += 1
        return self.user_final, self.item_final

    # -- scoring -----------------------------------------------------------------------------------------
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.final_vectors()[0][users]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.final_vectors()[1][items]

    def item_matrix(self) -> torch.Tensor:
        return self.final_vectors()[1]

    def forward(self, users: torch.Tensor, items: torch.Tensor, shared: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> Forward:
        """In training mode with gradients: a full propagation (see the module docstring); otherwise the cached
        final vectors, no gradient. users [B], items [B, L], shared [S], extra [R, E] (the first R rows')."""
        flat = join_candidates(items, extra, shared)
        if self.training and torch.is_grad_enabled():
            fu, fi, u0, i0 = self._propagated()
        else:
            with torch.no_grad():
                fu, fi = self.final_vectors()
                u0, i0 = self.user_table.weight, self.item_table.weight
        u, rows = u0[users], i0[flat]  # [B, D], [B*L + R*E + S, D] layer-0 rows (L2 acts on these)
        hu, hrows = fu[users], fi[flat]
        i, _, se = split_candidates(rows, items, extra)
        hi, he, hs = split_candidates(hrows, items, extra)
        scores = (hu[:, None, :] * hi).sum(-1)  # [B, L]
        extra_scores = None if extra is None else torch.bmm(he, hu[: len(he), :, None]).squeeze(-1)
        if shared is None:
            return Forward(scores, u, i, None, hu, hi, None, extra_scores=extra_scores)
        return Forward(scores, u, i, se, hu, hi, hs, shared_scores=hu @ hs.T, extra_scores=extra_scores)

    # -- saving ------------------------------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        """The tables and the final vectors, refreshed first when stale (a loaded model scores from them)."""
        if not self.fresh and self.adjacency is not None:
            self.final_vectors()
        return super().state_dict(*args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        saved = state_dict.get(prefix + "user_final")
        # the saved vectors are those of the saved rows, unless they were never propagated (NaN)
        self.fresh = saved is not None and not bool(torch.isnan(saved).any())

    def config(self) -> dict:
        return dict(kind=self.kind, n_users=self.n_users, n_items=self.n_items, embedding_dim=self.embedding_dim,
                    layers=self.layers, **self._init)
