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
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn

from rankdistill.data.split import Split
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.base import Ranker
from rankdistill.train.checkpoint import Checkpointer


class Engine(ABC):
    """How the Trainer's loop runs the model in this process (module docstring). Methods marked *collective*
    are called by every process together."""

    model: nn.Module  # what the objective runs: the ranker, or a parallel wrapper around it
    device: torch.device
    identity: dict = {}  # added to a checkpoint's identity (e.g. the number of processes)

    @abstractmethod
    def dense_parameters(self) -> list[nn.Parameter]:
        """The model's weights outside the tables (towers, MLPs), trained with Adam."""

    @abstractmethod
    def share(self, rows: torch.Tensor) -> torch.Tensor | None:
        """This process's rows of a global batch ``rows`` [B] (int64 [b]), or None to skip the batch."""

    @abstractmethod
    def loss_scale(self, rows: int, total: int) -> float:
        """The factor on the loss of ``rows`` of a batch of ``total`` rows that makes the processes' averaged
        gradients the whole batch's."""

    @abstractmethod
    def step(self, rows: int, total: int) -> AbstractContextManager:
        """The context of one objective call on ``rows`` of a batch of ``total`` rows (collective)."""

    @abstractmethod
    def reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor],
               scale: float) -> tuple[bool, dict[str, torch.Tensor]]:
        """(whether the whole batch's loss is finite, the whole batch's loss parts, detached) from this process's
        loss and parts computed with loss scale ``scale`` (collective: one verdict for all)."""

    @abstractmethod
    def after_backward(self, objective_params: list[nn.Parameter]) -> None:
        """Make the gradients of the objective's own weights the whole batch's (collective)."""

    @abstractmethod
    def set_table_lr(self, factor: float) -> None:
        """Each table's learning rate: its initial one times ``factor``."""

    @abstractmethod
    def table_lrs(self) -> list[float]:
        """The tables' current learning rates (for the epoch record)."""

    @abstractmethod
    def validate(self, split: Split, k: int, metric: str) -> dict[str, float]:
        """``metric@k`` on the validation split, the same in every process (collective)."""

    @abstractmethod
    def snapshot(self) -> dict | None:
        """The current weights, kept as the best so far (right after :meth:`validate`)."""

    @abstractmethod
    def restore(self, state: dict | None) -> None:
        """Weights of :meth:`snapshot` (or a checkpoint's best weights) back into the model (collective)."""

    @abstractmethod
    def checkpointer(self, directory: str | Path, identity: dict) -> Checkpointer:
        """The checkpointer of a run with ``identity`` in ``directory``."""

    @abstractmethod
    def local_state(self) -> dict:
        """This process's weights and tables' optimizer state, for a checkpoint."""

    @abstractmethod
    def load_local_state(self, state: dict) -> None:
        """:meth:`local_state` back into the model."""

    @abstractmethod
    def save(self, checkpointer: Checkpointer, shared: dict, local: dict) -> None:
        """One checkpoint of the loop's ``shared`` fields and every process's ``local`` state (collective)."""

    @abstractmethod
    def load(self, checkpointer: Checkpointer) -> tuple[dict, dict] | None:
        """(the loop's shared fields, this process's state) of the last checkpoint, or None (collective)."""

    @abstractmethod
    def trained_model(self) -> Ranker:
        """The trained weights as an ordinary ranker, in every process (collective)."""

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
        return list(self.model.dense_parameters())

    def share(self, rows: torch.Tensor) -> torch.Tensor | None:
        return rows

    def loss_scale(self, rows: int, total: int) -> float:
        return 1.0

    def step(self, rows: int, total: int) -> AbstractContextManager:
        return nullcontext()

    def reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor],
               scale: float) -> tuple[bool, dict[str, torch.Tensor]]:
        """One host sync (the verdict), none for the parts."""
        return bool(torch.isfinite(loss)), parts

    def after_backward(self, objective_params: list[nn.Parameter]) -> None:
        """Nothing to do: this process's gradients are the whole batch's."""

    def set_table_lr(self, factor: float) -> None:
        for table, lr in zip(self.model.tables(), self.base_lrs):
            table.set_lr(lr * factor)

    def table_lrs(self) -> list[float]:
        return [t.optimizer.param_groups[0]["lr"] for t in self.model.tables()]

    def validate(self, split: Split, k: int, metric: str) -> dict[str, float]:
        return evaluate(self.model, split, "valid", (k,), (metric,))

    def snapshot(self) -> dict | None:
        return copy.deepcopy(self.model.state_dict())

    def restore(self, state: dict | None) -> None:
        self.model.load_state_dict(state)

    def checkpointer(self, directory: str | Path, identity: dict) -> Checkpointer:
        return Checkpointer(directory, identity)

    def save(self, checkpointer: Checkpointer, shared: dict, local: dict) -> None:
        checkpointer.save({**shared, **local})

    def load(self, checkpointer: Checkpointer) -> tuple[dict, dict] | None:
        state = checkpointer.load()
        return None if state is None else (state, state)

    def local_state(self) -> dict:
        return {"model": self.model.state_dict(), "tables": [t.optimizer.state_dict() for t in self.model.tables()]}

    def load_local_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for table, opt_state in zip(self.model.tables(), state["tables"]):
            table.optimizer.load_state_dict(opt_state)

    def trained_model(self) -> Ranker:
        """The trained ranker (after the loop has restored the best weights)."""
        return self.model
