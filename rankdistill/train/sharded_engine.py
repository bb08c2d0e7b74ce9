"""The sharded engine: the Trainer's loop on every process of a process group (``torchrun``), with the tables
sharded over the processes by torchrec's DistributedModelParallel (:mod:`rankdistill.train.sharding`).

    torchrun --nproc_per_node 2 -m rankdistill train --out teacher/ ...

Each of the W processes (ranks):

- **Model.** DMP over the model (planned on rank 0, fused kernel, row-wise Adagrad in backward), started from
  the single-process model's initial weights with the same seed. Dense weights (towers, MLP) are replicated
  and averaged by DDP; the objective's own weights (distillation projections) are averaged here.
- **Data.** Every rank draws the loop's seeded permutation and shared negatives and takes its contiguous share
  of each global batch of B rows (b_r rows). Its loss is scaled by ``b_r·W/B`` and count-normalised means
  divide by the whole batch's count (:func:`rankdistill.losses._masking.batch_share`): DDP and torchrec
  average gradients over ranks, so the update equals one single-process step on the global batch (a batch
  with fewer than W rows, at most the last of an epoch, is skipped). Terms that mix rows of the batch
  (in-batch negatives, BSL's pooling of a user's rows) or average over rows and the shared negatives together
  (``hint``, ``de``) see this rank's rows only: close to one process, not equal (README, tests).
- **Losses.** The loss and its parts are averaged over ranks each step: one verdict on finiteness for all.
- **Evaluation.** The full tables are gathered to rank 0, which evaluates with the ordinary full-ranking
  evaluator and broadcasts the metrics, so early stopping agrees on every rank; that full state is the best
  weights' snapshot, and restoring copies it back into every rank's shards.
- **Checkpoints.** Rank 0 writes one file with every rank's shards and optimizer state; on resume rank 0 reads
  it and hands each rank its part. It resumes only at the same world size and plan (a clear error otherwise).
- **End.** :meth:`ShardedEngine.trained_model` is the best weights as an ordinary (fused, unsharded) model on
  every rank.

The sharding plan and the planner's per-rank memory estimate are written to the run log
(``train_log.jsonl``, one ``"event": "sharding_plan"`` line per model).

Limits: every rank builds the full initial model once and rank 0 holds full tables for evaluation, so the
tables must fit one host's memory (not one GPU's). Column-wise shards keep row-wise Adagrad's accumulator per
column block, so a table split into several column shards trains slightly differently from one process.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from rankdistill.config import ModelConfig
from rankdistill.data.split import Split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.losses._masking import batch_share
from rankdistill.models.base import Ranker
from rankdistill.models.factory import build_model
from rankdistill.train import sharding
from rankdistill.train.checkpoint import Checkpointer
from rankdistill.train.engine import Engine
from rankdistill.train.processes import broadcast, on_main, process_device

RANKING_TERMS = ("dcd", "rce")  # terms that rank the student's whole catalogue every epoch


def refuse_unshardable(model_config: ModelConfig, objective: nn.Module) -> None:
    """What the sharded engine cannot train, refused before any work."""
    if model_config.kind == "lightgcn":
        raise RankdistillError("--model lightgcn propagates over the whole training graph at every step and trains "
                               "in one process only; run it without torchrun")
    terms = getattr(objective, "terms", {})
    ranking = [n for n in RANKING_TERMS if n in terms]
    if ranking:
        raise RankdistillError(f"--kd {ranking[0]} ranks the student's whole catalogue every epoch, which the sharded "
                               "student cannot do yet; train it in one process")


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t


class ShardedEngine(Engine):
    """DMP over the model of ``model_config`` on every rank of the process group (module docstring).

    ``batch_size``: the global batch (the planner sizes for a rank's share); ``log``: the run log that gets the
    sharding plan (rank 0); ``quiet``: no plan summary on stderr."""

    def __init__(self, split: Split, model_config: ModelConfig, seed: int, batch_size: int, name: str = "model",
                 device: torch.device | None = None, log: Path | None = None, quiet: bool = True) -> None:
        self.split, self.model_config, self.seed, self.name = split, model_config, seed, name
        self.device = device or process_device()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.identity = {"distributed": {"world_size": self.world}}
        self.model, self.plan = self._shard(batch_size, log, quiet)
        self.table_lr = model_config.lr
        self.eval_model = self._ordinary() if self.rank == 0 else None
        self._full: dict | None = None  # the full state gathered by the last validate (rank 0)
        self._restored: dict | None = None  # the full state last restored, on every rank, until the next step

    def _ordinary(self) -> Ranker:
        s = self.split
        return build_model(self.model_config, s.n_users, s.n_items, self.device, seed=self.seed)

    def _shard(self, batch_size: int, log: Path | None, quiet: bool) -> tuple[nn.Module, dict]:
        split, device = self.split, self.device
        blueprint = sharding.blueprint_model(self.model_config, split.n_users, split.n_items, self.seed)
        dense_bytes = 4 * sum(p.numel() * p.element_size() for n, p in blueprint.named_parameters()
                              if sharding.is_dense(n))  # weights, gradients, Adam's two moments
        types = sharding.sharding_types(device)
        rows = math.ceil(batch_size / self.world)
        plan, record = on_main(lambda: sharding.plan_sharding(blueprint, device, rows, types, dense_bytes))
        if self.rank == 0:
            entry = {"model": self.name, "event": "sharding_plan", "world_size": self.world,
                     "backend": dist.get_backend(), "device": device.type, **record}
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            if not quiet:
                print(f"  [{self.name}] sharded over {self.world} processes ({dist.get_backend()}): "
                      f"{sharding.plan_summary(record)}", file=sys.stderr, flush=True)
        initial = build_model(self.model_config, split.n_users, split.n_items, "cpu", seed=self.seed).state_dict()
        return sharding.shard_model(blueprint, plan, device, initial), record

    # -- a step ----------------------------------------------------------------------------------------
    def dense_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if sharding.is_dense(n) and p.requires_grad]

    def share(self, rows: torch.Tensor) -> torch.Tensor | None:
        """This rank's contiguous share b_r of the B rows; None when a rank would get no rows."""
        b, r, w = len(rows), self.rank, self.world
        return None if b < w else rows[b * r // w : b * (r + 1) // w]

    def loss_scale(self, rows: int, total: int) -> float:
        """b_r·W/B: averaged over the W ranks, the gradients are the global batch mean's."""
        return rows * self.world / total

    def step(self, rows: int, total: int) -> AbstractContextManager:
        return batch_share(_all_reduce_sum, rows / total, total * self.rank // self.world)  # share()'s first row

    def reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor],
               scale: float) -> tuple[bool, dict[str, torch.Tensor]]:
        """The global batch's loss and parts (averages of the scaled ones over ranks), one all-reduce."""
        self._restored = None  # the weights are about to move
        names = list(parts)
        stats = torch.stack([loss.detach().float(), *(parts[k].float() for k in names)]) * scale
        dist.all_reduce(stats)
        stats = stats / self.world
        return bool(torch.isfinite(stats[0])), dict(zip(names, stats[1:]))

    def after_backward(self, objective_params: list[nn.Parameter]) -> None:
        """The objective's own weights are outside DDP: average their gradients over ranks."""
        grads = [p.grad for p in objective_params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def set_table_lr(self, factor: float) -> None:
        self.table_lr = self.model_config.lr * factor
        opt = self.model.fused_optimizer
        for g in opt.param_groups:
            g["lr"] = self.table_lr
        opt.step()  # pushes the learning rate into the kernels; the update itself happens in backward

    def table_lrs(self) -> list[float]:
        return [self.table_lr] * len(self.plan["tables"])

    def record(self) -> dict:
        return {"world_size": self.world}

    # -- weights ---------------------------------------------------------------------------------------
    def validate(self, split: Split, k: int, metric: str) -> dict[str, float]:
        """Rank 0 evaluates the gathered full state; every rank gets the metrics."""
        self._full = sharding.gather_full_state(self.model)

        def run() -> dict[str, float]:
            self.eval_model.load_state_dict(self._full)
            return evaluate(self.eval_model, split, "valid", (k,), (metric,))

        return on_main(run)

    def snapshot(self) -> dict | None:
        """The full state gathered by the last :meth:`validate` (rank 0; None elsewhere)."""
        return self._full

    def restore(self, state: dict | None) -> None:
        """Rank 0's full ``state`` into every rank's shards (every rank must call it)."""
        self._restored = sharding.load_full_state(self.model, state)

    def trained_model(self) -> Ranker:
        """The sharded model's weights as an ordinary fused model, on every rank."""
        full = self._restored if self._restored is not None else broadcast(sharding.gather_full_state(self.model))
        self._restored = None
        model = self._ordinary()
        model.load_state_dict(full)
        return model

    # -- checkpoints -----------------------------------------------------------------------------------
    def checkpointer(self, directory: str | Path, identity: dict) -> Checkpointer:
        return ShardedCheckpointer(directory, identity, self.world)

    def local_state(self) -> dict:
        return {"model": self.model.state_dict(), "tables": self.model.fused_optimizer.state_dict()}

    def load_local_state(self, state: dict) -> None:
        model = self.model.state_dict()
        sharding.copy_local_into(model, state["model"])
        self.model.load_state_dict(model)
        tables = self.model.fused_optimizer.state_dict()
        sharding.copy_local_into(tables, state["tables"])
        self.model.fused_optimizer.load_state_dict(tables)

    def save(self, checkpointer: Checkpointer, shared: dict, local: dict) -> None:
        """Rank 0 writes the shared fields and every rank's part (CPU copies) in one file."""
        ranks = [None] * self.world if self.rank == 0 else None
        dist.gather_object(sharding.local_copy(local), ranks, dst=0)
        if self.rank == 0:
            checkpointer.save({**shared, "world_size": self.world, "plan": self.plan["tables"], "ranks": ranks})

    def load(self, checkpointer: Checkpointer) -> tuple[dict, dict] | None:
        """Rank 0 reads the checkpoint (refusing another run's, world size's or plan's) and hands each rank its
        part; -> (the shared fields, best_state on rank 0 only; this rank's part), or None."""
        aside: dict = {}

        def read() -> dict | None:
            state = checkpointer.load()
            if state is None:
                return None
            if state.get("plan") != self.plan["tables"]:
                raise RankdistillError(
                    f"checkpoint {checkpointer.path} was written with another sharding plan "
                    f"({sharding.plan_text(state.get('plan'))}; this run: {sharding.plan_text(self.plan['tables'])}); "
                    "resume with the same RANKDISTILL_SHARDING, or delete the checkpoint to start over")
            aside.update(ranks=state.pop("ranks"), best_state=state.pop("best_state"))  # not broadcast
            return state

        state = on_main(read)
        if not state:
            return None
        mine = [None]
        dist.scatter_object_list(mine, aside.get("ranks") if self.rank == 0 else None, src=0)
        state["best_state"] = aside.get("best_state")
        return state, mine[0]


class ShardedCheckpointer(Checkpointer):
    """A :class:`Checkpointer` whose refusal names the world sizes when they differ."""

    def __init__(self, directory: str | Path, identity: dict, world_size: int) -> None:
        super().__init__(directory, identity)
        self.world_size = world_size

    def load(self) -> dict | None:
        try:
            return super().load()
        except RankdistillError:
            saved = self._saved_world_size()
            if saved is not None and saved != self.world_size:
                raise RankdistillError(
                    f"checkpoint {self.path} was written by a run of {_processes(saved)} and this run has "
                    f"{_processes(self.world_size)}; a sharded checkpoint resumes only with as many processes "
                    f"(torchrun --nnodes × --nproc_per_node = {saved}), or use another --out or delete the "
                    "checkpoint to start over") from None
            raise

    def _saved_world_size(self) -> int | None:
        """The world size a refused checkpoint records, if it is readable as one (weights_only: a foreign
        file's pickled code never runs; anything but a checkpoint's dict gives None)."""
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        identity = state.get("identity") if isinstance(state, dict) else None
        distributed = identity.get("distributed") if isinstance(identity, dict) else None
        return int(distributed.get("world_size", 1)) if isinstance(distributed, dict) else None


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"
