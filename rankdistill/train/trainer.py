"""Trainer: one loop for teachers, students and distillation, composed from an objective, the validation
evaluator, callbacks and an optional checkpointer.

Each epoch shuffles the training interactions with a seeded generator and cuts them into batches with
tensor operations (users [B], positives [B], uniform negatives [S] shared by the batch); the embedding
tables update themselves inside backward (torchrec fused optimizer), dense weights (towers, MLPs,
projections of the objective) use Adam with optional gradient clipping. After each epoch the model is
evaluated on the validation split; the best epoch's weights are restored at the end, and training stops
after ``patience`` epochs without improvement. A loss that is not finite stops training before it can
touch the weights (checked before backward), keeping the last good checkpoint.

With a checkpoint directory, the full state is saved atomically after every epoch and a new Trainer on
the same run resumes from it; on the CPU with a fixed seed the result equals an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rankdistill.config import TrainConfig
from rankdistill.data.split import Split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.base import Ranker
from rankdistill.train.callbacks import Callback
from rankdistill.train.checkpoint import Checkpointer, fingerprint
from rankdistill.train.schedule import lr_factor


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


class Trainer:
    def __init__(
        self,
        model: Ranker,
        split: Split,
        objective: nn.Module,
        config: TrainConfig = TrainConfig(),
        name: str = "model",
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        checkpoint_dir: str | Path | None = None,
        identity: dict | None = None,
    ) -> None:
        self.model, self.split, self.objective, self.config = model, split, objective, config
        self.name, self.callbacks = name, list(callbacks)
        users, items = split.train_pairs()
        device = model.tables()[0].weight.device if model.tables() else torch.device("cpu")
        self.device = device
        self.users, self.items = torch.from_numpy(users).to(device), torch.from_numpy(items).to(device)
        dense = list(model.dense_parameters()) + [p for p in objective.parameters() if p.requires_grad]
        self.dense_params = dense
        self.dense_optimizer = torch.optim.Adam(dense, lr=config.dense_lr) if dense else None
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        metric, _, k = config.select_metric.partition("@")
        self.select_metric, self.select_k, self._metric_name = config.select_metric, int(k), metric
        self.base_lrs = [t.optimizer.param_groups[0]["lr"] for t in model.tables()]
        self.steps_per_epoch = math.ceil(len(self.users) / config.batch_size)
        self.step = 0
        self._paused: dict | None = None  # the loop state of a paused fit (fit(stop_after=...))
        self.checkpointer = None
        if checkpoint_dir is not None:
            ident = {"model": name, "train": _jsonable(config), "data": {
                "n_users": split.n_users, "n_items": split.n_items, "split": split.kind,
                "train": fingerprint(split.train.indptr, split.train.indices),
                "valid": fingerprint(split.valid.indptr, split.valid.indices)}}
            ident.update(identity or {})
            self.checkpointer = Checkpointer(checkpoint_dir, ident)

    # -- batches -------------------------------------------------------------------------------------
    def batches(self):
        """Yields (users [B], positives [B], shared negatives [S]) covering every training pair once."""
        c = self.config
        perm = torch.randperm(len(self.users), generator=self.generator, device=self.device)
        for a in range(0, len(perm), c.batch_size):
            idx = perm[a : a + c.batch_size]
            negs = torch.randint(self.split.n_items, (c.negatives,), generator=self.generator, device=self.device)
            yield self.users[idx], self.items[idx], negs

    # -- one epoch -----------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        c = self.config
        if c.lr_schedule == "constant" and not c.warmup_steps:
            return
        f = lr_factor(c.lr_schedule, self.step, c.epochs * self.steps_per_epoch, c.warmup_steps)
        for table, lr in zip(self.model.tables(), self.base_lrs):
            table.set_lr(lr * f)
        if self.dense_optimizer is not None:
            for g in self.dense_optimizer.param_groups:
                g["lr"] = c.dense_lr * f

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.objective.train()
        if hasattr(self.objective, "on_epoch_start"):
            self.objective.on_epoch_start(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(epoch, self.steps_per_epoch)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.config.bf16 and self.device.type == "cuda" else nullcontext())
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for users, pos, negs in self.batches():
            self._set_lr()
            with autocast:
                loss, parts = self.objective(self.model, users, pos, negs)
            if not bool(torch.isfinite(loss)):  # before backward: the fused update has not run yet
                raise NonFiniteLoss(epoch, steps + 1, {k: float(v) for k, v in parts.items()})
            if self.dense_optimizer is not None:
                self.dense_optimizer.zero_grad(set_to_none=True)
            loss.backward()  # embedding rows are updated here (fused optimizer)
            if self.dense_optimizer is not None:
                if self.config.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.dense_params, self.config.clip_grad_norm)
                self.dense_optimizer.step()
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            steps += 1
            self.step += 1
            for cb in self.callbacks:
                if type(cb).on_step is not Callback.on_step:
                    cb.on_step({k: float(v) for k, v in parts.items()}, len(users))
        return {k: float(v) / max(steps, 1) for k, v in sums.items()}

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> FitResult:
        """Train until early stopping or ``config.epochs``; the best epoch's weights are restored at the end.

        ``stop_after``: pause after that epoch instead (a pilot run): the weights stay those of the last epoch
        and a later ``fit()`` on this Trainer continues from there, exactly as if it had never paused."""
        c = self.config
        best, best_state, best_epoch, since, history, start_epoch = -math.inf, None, 0, 0, [], 1
        elapsed = 0.0
        resumed, self._paused = self._paused, None
        if resumed is None and self.checkpointer:
            resumed = self.checkpointer.load()
            if resumed is not None:
                self._restore(resumed)
        if resumed is not None:
            best, best_state, best_epoch, since = resumed["best"], resumed["best_state"], resumed["best_epoch"], resumed["since"]
            history, start_epoch, elapsed = resumed["history"], resumed["epoch"] + 1, resumed["seconds"]
            if resumed.get("finished"):
                start_epoch = c.epochs + 1
        start = time.perf_counter() - elapsed
        last = c.epochs if stop_after is None else min(c.epochs, stop_after)
        paused = False
        try:
            for epoch in range(start_epoch, last + 1):
                t0 = time.perf_counter()
                try:
                    losses = self.train_epoch(epoch)
                except NonFiniteLoss as e:
                    kept = f"; the checkpoint of epoch {epoch - 1} is kept" if self.checkpointer and epoch > 1 else ""
                    if best_state is not None:
                        self.model.load_state_dict(best_state)
                    raise RankdistillError(f"training {self.name} stopped: {e}{kept}; lower the learning rate "
                                           "or add --l2") from None
                train_s = time.perf_counter() - t0
                valid = evaluate(self.model, self.split, "valid", (self.select_k,), (self._metric_name,))
                now = time.perf_counter()
                record = {"model": self.name, "epoch": epoch, "loss": losses, "valid": valid,
                          "train_seconds": round(train_s, 3), "valid_seconds": round(now - t0 - train_s, 3),
                          "elapsed_seconds": round(now - start, 3),  # since this model's training began
                          "examples_per_second": round(len(self.users) / max(train_s, 1e-9), 1),
                          "lr": [t.optimizer.param_groups[0]["lr"] for t in self.model.tables()]}
                history.append(record)
                for cb in self.callbacks:
                    cb.on_epoch_end(record)
                if valid[self.select_metric] > best:
                    best, best_epoch, since = valid[self.select_metric], epoch, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    since += 1
                finished = since >= c.patience or epoch == c.epochs
                if self.checkpointer:
                    self.checkpointer.save(self._state(epoch, best, best_state, best_epoch, since, history,
                                                       time.perf_counter() - start, finished))
                if finished:
                    break
                if epoch == last and last < c.epochs:
                    paused = True
                    self._paused = self._state(epoch, best, best_state, best_epoch, since, history,
                                               time.perf_counter() - start, False)
        finally:
            if not paused:
                for cb in self.callbacks:
                    cb.close()
        if resumed is not None and not resumed.get("finished") and start_epoch > last:  # resumed past the pause
            self._paused = resumed
            paused = True
        if best_state is not None and not paused:
            self.model.load_state_dict(best_state)
        best_valid = history[best_epoch - 1]["valid"] if history and best_epoch else {}
        return FitResult(best_epoch, best_valid, time.perf_counter() - start, history,
                         resumed["epoch"] if resumed is not None else 0)

    # -- checkpoint state ----------------------------------------------------------------------------
    def _objective_state(self) -> dict:
        return {k: v for k, v in self.objective.state_dict().items() if not k.startswith("teacher.")}

    def _state(self, epoch, best, best_state, best_epoch, since, history, seconds, finished) -> dict:
        return {
            "epoch": epoch, "step": self.step, "best": best, "best_state": best_state, "best_epoch": best_epoch,
            "since": since, "history": history, "seconds": seconds, "finished": finished,
            "model": self.model.state_dict(),
            "tables": [t.optimizer.state_dict() for t in self.model.tables()],
            "dense_optimizer": self.dense_optimizer.state_dict() if self.dense_optimizer else None,
            "objective": self._objective_state(),
            "rng": rng_state(self),
        }

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for table, opt_state in zip(self.model.tables(), state["tables"]):
            table.optimizer.load_state_dict(opt_state)
        restore_loop_state(self, state)


def rng_state(trainer) -> dict:
    """Every random generator of a training loop (trainer's, objective's, torch's), for a checkpoint."""
    gen = getattr(trainer.objective, "generator", None)
    return {"trainer": trainer.generator.get_state(), "objective": gen.get_state() if gen is not None else None,
            "torch": torch.get_rng_state()}


def restore_loop_state(trainer, state: dict) -> None:
    """The dense optimizer, objective, random generators and step of a checkpoint, back into ``trainer``
    (shared by the single-process and the sharded trainer; each restores its own tables)."""
    if trainer.dense_optimizer is not None and state["dense_optimizer"] is not None:
        trainer.dense_optimizer.load_state_dict(state["dense_optimizer"])
    trainer.objective.load_state_dict(state["objective"], strict=False)
    trainer.generator.set_state(state["rng"]["trainer"])
    gen = getattr(trainer.objective, "generator", None)
    if gen is not None and state["rng"]["objective"] is not None:
        gen.set_state(state["rng"]["objective"])
    torch.set_rng_state(state["rng"]["torch"])
    trainer.step = state["step"]


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, parts: dict[str, float]) -> None:
        self.epoch, self.step, self.parts = epoch, step, parts
        super().__init__(f"the loss became non-finite at epoch {epoch}, step {step} ({parts})")


def _jsonable(config) -> dict:
    from dataclasses import asdict

    return asdict(config)
