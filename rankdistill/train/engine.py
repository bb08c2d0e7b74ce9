"""Engines: how the training loop (:class:`rankdistill.train.trainer.Trainer`) runs the model in this
process. The loop is the same for every engine (batches, learning-rate schedule, epochs, early stopping, best
weights, checkpoints); an engine says

- which model the objective runs (the ranker, or torchrec's DMP over it) and its dense weights;
- which rows of a global batch this process takes, and the loss scale that makes the processes' averaged
  gradients those of the whole batch (with :meth:`Engine.step` around the objective for count-normalised
  means);
- how to set the tables' learning rates, how to reduce the losses over processes and check they are finite;
- how to evaluate on validation, snapshot and restore the best weights, save and restore its state;
- the trained model as an ordinary ranker.

:class:`LocalEngine` is one process; :class:`rankdistill.train.sharded_engine.ShardedEngine` shards the tables
over the processes of a process group.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn

from rankdistill.data.split import Split
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.base import Ranker
from rankdistill.train.checkpoint import Checkpointer


class Engine:
    """The interface the Trainer uses (see the module docstring); :class:`LocalEngine` documents each part."""

    model: nn.Module
    device: torch.device
    identity: dict = {}  # added to a checkpoint's identity (e.g. the number of processes)

    def dense_parameters(self) -> list[nn.Parameter]: raise NotImplementedError

    def share(self, rows: torch.Tensor) -> torch.Tensor | None: raise NotImplementedError

    def loss_scale(self, rows: int, total: int) -> float: raise NotImplementedError

    def step(self, rows: int, total: int) -> AbstractContextManager: raise NotImplementedError

    def reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor],
               scale: float) -> tuple[bool, dict[str, torch.Tensor]]: raise NotImplementedError

    def after_backward(self, objective_params: list[nn.Parameter]) -> None: raise NotImplementedError

    def set_table_lr(self, factor: float) -> None: raise NotImplementedError

    def table_lrs(self) -> list[float]: raise NotImplementedError

    def validate(self, split: Split, k: int, metric: str) -> dict[str, float]: raise NotImplementedError

    def snapshot(self) -> dict | None: raise NotImplementedError

    def restore(self, state: dict | None) -> None: raise NotImplementedError

    def checkpointer(self, directory: str | Path, identity: dict) -> Checkpointer: raise NotImplementedError

    def save(self, checkpointer: Checkpointer, shared: dict, local: dict) -> None: raise NotImplementedError

    def load(self, checkpointer: Checkpointer) -> tuple[dict, dict] | None: raise NotImplementedError

    def local_state(self) -> dict: raise NotImplementedError

    def load_local_state(self, state: dict) -> None: raise NotImplementedError

    def trained_model(self) -> Ranker: raise NotImplementedError

    def record(self) -> dict:
        """Extra fields of each epoch's record."""
        return {}


class LocalEngine(Engine):
    """One process trains the whole ranker: its fused tables update themselves in backward."""

    def __init__(self, model: Ranker) -> None:
        self.model = model
        tables = model.tables()
        self.device = tables[0].weight.device if tables else torch.device("cpu")
        self.base_lrs = [t.optimizer.param_groups[0]["lr"] for t in tables]

    def dense_parameters(self) -> list[nn.Parameter]:
        """The model's weights outside the tables (towers, MLPs), trained with Adam."""
        return list(self.model.dense_parameters())

    def share(self, rows: torch.Tensor) -> torch.Tensor | None:
        """This process's rows of a global batch ``rows`` [B], or None to skip the batch."""
        return rows

    def loss_scale(self, rows: int, total: int) -> float:
        """The factor on the loss of ``rows`` of a batch of ``total`` rows that makes the processes' averaged
        gradients the whole batch's."""
        return 1.0

    def step(self, rows: int, total: int) -> AbstractContextManager:
        """The context of one objective call on ``rows`` of a batch of ``total`` rows."""
        return nullcontext()

    def reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor],
               scale: float) -> tuple[bool, dict[str, torch.Tensor]]:
        """(whether the whole batch's loss is finite, the whole batch's loss parts) from this process's loss
        and parts (computed with loss scale ``scale``). One host sync, none for the parts."""
        return bool(torch.isfinite(loss)), parts

    def after_backward(self, objective_params: list[nn.Parameter]) -> None:
        """Gradients of the objective's own weights, made the whole batch's (nothing to do in one process)."""

    def set_table_lr(self, factor: float) -> None:
        """Each table's learning rate: its initial one times ``factor``."""
        for table, lr in zip(self.model.tables(), self.base_lrs):
            table.set_lr(lr * factor)

    def table_lrs(self) -> list[float]:
        return [t.optimizer.param_groups[0]["lr"] for t in self.model.tables()]

    def validate(self, split: Split, k: int, metric: str) -> dict[str, float]:
        """``metric@k`` on the validation split (the same on every process)."""
        return evaluate(self.model, split, "valid", (k,), (metric,))

    def snapshot(self) -> dict | None:
        """The current weights, kept as the best so far."""
        return copy.deepcopy(self.model.state_dict())

    def restore(self, state: dict | None) -> None:
        """Weights of :meth:`snapshot` (or a checkpoint's best weights) back into the model."""
        self.model.load_state_dict(state)

    def checkpointer(self, directory: str | Path, identity: dict) -> Checkpointer:
        return Checkpointer(directory, identity)

    def save(self, checkpointer: Checkpointer, shared: dict, local: dict) -> None:
        """One checkpoint of the loop's ``shared`` fields and this process's ``local`` state."""
        checkpointer.save({**shared, **local})

    def load(self, checkpointer: Checkpointer) -> tuple[dict, dict] | None:
        """(the loop's shared fields, this process's state) of the last checkpoint, or None."""
        state = checkpointer.load()
        return None if state is None else (state, state)

    def local_state(self) -> dict:
        """The weights and the tables' optimizer state."""
        return {"model": self.model.state_dict(), "tables": [t.optimizer.state_dict() for t in self.model.tables()]}

    def load_local_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for table, opt_state in zip(self.model.tables(), state["tables"]):
            table.optimizer.load_state_dict(opt_state)

    def trained_model(self) -> Ranker:
        """The trained ranker (after the loop has restored the best weights)."""
        return self.model
