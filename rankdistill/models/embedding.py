"""EmbeddingTable: one torchrec table on the fused path, looked up by an id tensor of any shape.

The table is a :class:`torchrec.FusedEmbeddingBagCollection` holding one table with one feature; each id
is its own bag of length one (SUM pooling), which is the layout fbgemm's TBE kernel runs fastest on the CPU
(see shared notes: PoolingMode.NONE is 3-6x slower). The optimizer is fused into the backward pass: rows are
updated while gradients are computed, so there is no dense gradient and no ``step()`` for the table.

CPU kernels support SGD, Adagrad and row-wise Adagrad; on CUDA Adam is available too.

On the CPU the row-wise Adagrad update is not left to fbgemm's backward kernel: that kernel costs about 0.45 µs
per row looked up (dim 16; 7 ms of a 22 ms distillation step on Gowalla), against 0.07 µs for the same update
done by a handful of tensor operations on the distinct rows (``benchmarks/embedding_update.py``). So a CPU
table with ``rowwise_adagrad`` looks its rows up through the same torchrec module outside autograd and
applies the update itself when the gradient of those rows arrives (:func:`rowwise_adagrad_`): same formula,
same state (the fused optimizer's ``momentum_1``, the kernel's learning rate), equal to the kernel's result
within float rounding (tested). On CUDA fbgemm's kernel runs.

``fused=False`` builds a plain :class:`torchrec.EmbeddingBagCollection` instead, with the optimizer attached by
``_apply_optimizer_in_backward``: the form torchrec's DistributedModelParallel shards (it then runs the same
fused kernel on each shard; see :mod:`rankdistill.train.sharding`). Unsharded, such a table is slow (dense
gradients); build it on ``device="meta"`` when it is only a blueprint for DMP.
"""

from __future__ import annotations

import logging

import torch

# torchrec's import makes torch.fx log a deprecation notice at WARNING level on every start; not ours to fix.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
import torchrec.optim as trec_optim  # noqa: E402
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward  # noqa: E402
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankdistill.errors import RankdistillError

EPS = 1e-8  # Adagrad's ε, given to the kernel (fbgemm's default) and used by rowwise_adagrad_
DEDUP_MIN = 8192  # lookups above which a table looks up each distinct id once (fbgemm's backward)
# ids from which distinct_ids finds first occurrences in a scratch buffer instead of sorting: 500k rows, caches
# flushed (runs/distinct_cross.py), the sort wins at 2,304 ids (0.15 against 0.20 ms; 0.2 ms of a step in
# training.py's cached listkl step, in-process A/B), ties at 4,096, loses at 8,192 (0.40 against 0.34)
SCRATCH_MIN = 8192

OPTIMIZERS = {
    "rowwise_adagrad": trec_optim.RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,  # CUDA only in fbgemm
}


class EmbeddingTable(nn.Module):
    def __init__(
        self,
        name: str,
        num_embeddings: int,
        dim: int,
        optimizer: str = "rowwise_adagrad",
        lr: float = 0.05,
        init_std: float = 0.1,
        device: torch.device | str = "cpu",
        fused: bool = True,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise RankdistillError(f"unknown embedding optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        device = torch.device(device)
        if optimizer == "adam" and device.type not in ("cuda", "meta"):
            raise RankdistillError("the fused 'adam' embedding optimizer runs on CUDA only; on CPU use rowwise_adagrad")
        self.name, self.num_embeddings, self.dim = name, num_embeddings, dim
        config = EmbeddingBagConfig(
            name=name, embedding_dim=dim, num_embeddings=num_embeddings, feature_names=[name], pooling=PoolingType.SUM
        )
        self.fused = fused
        # CPU row-wise Adagrad: the update runs in :func:`rowwise_adagrad_` instead of fbgemm's backward
        self.sparse_update = fused and optimizer == "rowwise_adagrad" and device.type == "cpu"
        if fused:
            self.ebc = FusedEmbeddingBagCollection(
                tables=[config], optimizer_type=OPTIMIZERS[optimizer], device=device,
                optimizer_kwargs={"lr": lr, "eps": EPS} if optimizer in ("rowwise_adagrad", "adagrad") else {"lr": lr},
            )
        else:  # a blueprint for DMP: the sharder reads the in-backward optimizer and picks the fused kernel
            self.ebc = EmbeddingBagCollection(tables=[config], device=device)
            _apply_optimizer_in_backward(OPTIMIZERS[optimizer], self.ebc.parameters(), {"lr": lr})
        with torch.no_grad():
            self.weight.normal_(0.0, init_std)
        # CPU: int32 [num_embeddings] of any content, reused by distinct_ids (allocated at the first long lookup)
        self._scratch: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The live table [num_embeddings, dim] (shares storage with the kernel; read it under no_grad)."""
        return self.ebc.state_dict()[f"embedding_bags.{self.name}.weight"]

    @property
    def optimizer(self) -> "trec_optim.KeyedOptimizer":
        """The fused optimizer (its state_dict holds the Adagrad accumulators; set lr through param_groups)."""
        return self.ebc.fused_optimizer()

    def set_lr(self, lr: float) -> None:
        opt = self.optimizer
        opt.param_groups[0]["lr"] = lr
        opt.step()  # pushes the learning rate into the kernel; the update itself happened in backward

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: int64 [*S] -> embeddings [*S, dim] (one batched TBE lookup).

        Each distinct id is looked up once and gathered back (fbgemm's kernel path: only above ``DEDUP_MIN``
        ids, where it pays): the same update either way, since a row's gradients are summed before its one
        row-wise step."""
        flat = ids.reshape(-1)
        ours = self.sparse_update and torch.is_grad_enabled()  # our update: it needs each row once
        if not (ours or (self.fused and flat.numel() > DEDUP_MIN)):
            return self._lookup(flat).view(*ids.shape, self.dim)
        distinct, inverse = distinct_ids(flat, self.num_embeddings, self._scratch_for(flat) if ours else None)
        if ours:
            with torch.no_grad():
                rows = self._lookup(distinct)
            rows.requires_grad_(True)
            rows.register_hook(lambda grad: self._apply_update(distinct, grad))
        else:
            rows = self._lookup(distinct)
        return rows.index_select(0, inverse).view(*ids.shape, self.dim)

    def _scratch_for(self, flat: torch.Tensor) -> torch.Tensor | None:
        """The scratch buffer distinct_ids uses for ``flat`` (None: it sorts or marks instead). CPU only: on CUDA
        torch.unique is fast, and a table there can be too large to shadow. Training lookups only (the one
        shared buffer makes them unsafe from several threads at once, as the update they feed already is);
        scoring without gradients keeps the pure methods, so a model can serve from several threads."""
        if flat.device.type != "cpu" or flat.numel() < SCRATCH_MIN or _marks(flat.numel(), self.num_embeddings):
            return None
        if self._scratch is None:
            self._scratch = torch.empty(self.num_embeddings, dtype=torch.int32)
        return self._scratch

    def _apply_update(self, ids: torch.Tensor, grad: torch.Tensor) -> None:
        state = self.optimizer.state_dict()["state"][f"{self.name}.weight"][f"{self.name}.weight.momentum_1"]
        rowwise_adagrad_(self.weight, state, ids, grad, lr=self.optimizer.param_groups[0]["lr"], eps=EPS)

    def _lookup(self, flat: torch.Tensor) -> torch.Tensor:
        kjt = KeyedJaggedTensor(
            keys=[self.name], values=flat, lengths=torch.ones(flat.numel(), dtype=torch.int32, device=flat.device)
        )
        return self.ebc(kjt).values()


def distinct_ids(ids: torch.Tensor, n: int, scratch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ids int64 [L] in [0, n) -> (distinct ids [R], inverse [L]: ``distinct[inverse] == ids``), as
    ``torch.unique(ids, return_inverse=True)``, by the cheapest of three methods (CPU, 1 thread):

    - many ids against the table's size (8·L >= n): marked in an [n] mask, distinct ascending; 2.8x faster
      than a sort for 22,528 ids of 40,981 rows (a Gowalla distillation step);
    - with ``scratch`` (int32 or int64 [n], any content, overwritten; given for L >= SCRATCH_MIN on large
      tables): each id's first position by one scatter-min into it, no sort and no [n] pass; distinct in order
      of first occurrence; 0.45 ms against the sort's 0.91 for 17,664 ids of 500,000 rows, caches cold
      (``benchmarks/training.py``'s setting);
    - else a sort (torch.unique), distinct ascending: fastest for a few ids.

    The order of ``distinct`` differs between methods; the rows they name and ``distinct[inverse]`` do not."""
    if _marks(ids.numel(), n):
        mark = torch.zeros(n, dtype=torch.bool, device=ids.device)
        mark[ids] = True
        distinct = mark.nonzero().squeeze(1)
        position = torch.empty(n, dtype=torch.int64, device=ids.device)
        position[distinct] = torch.arange(len(distinct), device=ids.device)
        return distinct, position[ids]
    if scratch is None:
        return torch.unique(ids, return_inverse=True)
    at = torch.arange(ids.numel(), dtype=scratch.dtype, device=ids.device)
    scratch.scatter_reduce_(0, ids, at, "amin", include_self=False)  # each id's first position
    first = scratch.index_select(0, ids)
    is_first = first == at
    slot = is_first.cumsum(0) - 1  # the distinct id's number, at its first position
    return ids[is_first], slot.index_select(0, first)


def _marks(n_ids: int, n: int) -> bool:
    """Whether :func:`distinct_ids` marks ``n_ids`` ids in an [n] mask (many against the table's size)."""
    return n_ids * 8 >= n


@torch.no_grad()
def rowwise_adagrad_(weight: torch.Tensor, state: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor, *,
                     lr: float, eps: float) -> None:
    r"""Row-wise Adagrad on the rows ``ids`` of ``weight``, in place (fbgemm's ``exact_row_wise_adagrad``
    without weight decay; Gupta et al., "Adaptive Subgradient Methods", row-shared accumulator as in
    torchrec's ``RowWiseAdagrad``):

    .. math:: s_r \leftarrow s_r + \frac1D \lVert g_r \rVert^2, \qquad
              w_r \leftarrow w_r - \frac{\eta}{\sqrt{s_r} + \epsilon}\, g_r

    ``weight`` [N, D], ``state`` [N] (the accumulators), ``ids`` int64 [R] **distinct** rows, ``grad`` [R, D]
    each row's summed gradient.
    """
    acc = state.index_select(0, ids).add_(torch.linalg.vector_norm(grad, dim=1).square_().div_(grad.shape[1]))
    state.index_copy_(0, ids, acc)
    weight.index_add_(0, ids, grad * (-lr / (acc.sqrt_().add_(eps)))[:, None])
