"""EmbeddingTable: one torchrec table on the fused path, looked up by an id tensor of any shape.

The table is a :class:`torchrec.FusedEmbeddingBagCollection` holding one table with one feature; each id
is its own bag of length one (SUM pooling), which is the layout fbgemm's TBE kernel runs fastest on the CPU
(see shared notes: PoolingMode.NONE is 3-6x slower). The optimizer is fused into the backward pass: rows are
updated while gradients are computed, so there is no dense gradient and no ``step()`` for the table.

CPU kernels support SGD, Adagrad and row-wise Adagrad; on CUDA Adam is available too.

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

DEDUP_MIN = 8192  # lookups above which a table looks up each distinct id once

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
        if fused:
            self.ebc = FusedEmbeddingBagCollection(
                tables=[config], optimizer_type=OPTIMIZERS[optimizer], optimizer_kwargs={"lr": lr}, device=device
            )
        else:  # a blueprint for DMP: the sharder reads the in-backward optimizer and picks the fused kernel
            self.ebc = EmbeddingBagCollection(tables=[config], device=device)
            _apply_optimizer_in_backward(OPTIMIZERS[optimizer], self.ebc.parameters(), {"lr": lr})
        with torch.no_grad():
            self.weight.normal_(0.0, init_std)

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

        Many ids (more than ``DEDUP_MIN``, e.g. a distillation step's long candidate lists) are looked up once
        per distinct id and gathered back: the same update (the kernel sums a row's gradients before its one
        row-wise step either way), with a fraction of the kernel's per-lookup work."""
        flat = ids.reshape(-1)
        if self.fused and flat.numel() > DEDUP_MIN:
            distinct, inverse = torch.unique(flat, return_inverse=True)
            return self._lookup(distinct).index_select(0, inverse).view(*ids.shape, self.dim)
        return self._lookup(flat).view(*ids.shape, self.dim)

    def _lookup(self, flat: torch.Tensor) -> torch.Tensor:
        kjt = KeyedJaggedTensor(
            keys=[self.name], values=flat, lengths=torch.ones(flat.numel(), dtype=torch.int32, device=flat.device)
        )
        return self.ebc(kjt).values()
