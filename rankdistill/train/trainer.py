"""Trainer: one loop for teachers, students and distillation, in one process or many, composed from an
engine, an objective, the validation evaluator, callbacks and an optional checkpointer.

Each epoch shuffles the training interactions with a seeded generator and cuts them into global batches
with tensor operations (users [B], positives [B], uniform negatives [S] shared by the batch); the engine
(:mod:`rankdistill.train.engine`) says which rows this process takes and how its loss is scaled: all of them
in one process (:class:`~rankdistill.train.engine.LocalEngine`), a contiguous share per process with the
tables sharded by torchrec (:class:`~rankdistill.train.sharded_engine.ShardedEngine`). The embedding tables
update themselves inside backward (torchrec fused optimizer), dense weights (towers, MLPs, projections of the
objective) use Adam with optional gradient clipping. After each epoch the model is evaluated on the
validation split; the best epoch's weights are restored at the end, and training stops after ``patience``
epochs without improvement. A loss that is not finite (checked before backward, on the whole batch) stops
training before it can touch the weights, restores the best weights so far and keeps the last good
checkpoint.

With a checkpoint directory, the full state is saved atomically after every epoch and a new Trainer on
the same run resumes from it; on the CPU with a fixed seed the result equals an uninterrupted run.
"""

from __future__ import annotations

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
from rankdistill.models.base import Ranker
from rankdistill.train.callbacks import Callback
from rankdistill.train.checkpoint import fingerprint
from rankdistill.train.engine import Engine, LocalEngine
from rankdistill.train.schedule import lr_factor


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


def student_autocast(bf16: bool, device: torch.device) -> tuple[str, torch.dtype] | None:
    """(device type, dtype) of the autocast around the student's forward pass: bf16 on CUDA when asked,
    else None (fp32; CPU autocast is slower than fp32 here)."""
    return ("cuda", torch.bfloat16) if bf16 and device.type == "cuda" else None


class Trainer:
    """``model``: a Ranker (trained in this process: :class:`LocalEngine`) or an :class:`Engine`."""

    def __init__(
        self,
        model: Ranker | Engine,
        split: Split,
        objective: nn.Module,
        config: TrainConfig = TrainConfig(),
        name: str = "model",
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        checkpoint_dir: str | Path | None = None,
        identity: dict | None = None,
    ) -> None:
        self.engine = model if isinstance(model, Engine) else LocalEngine(model)
        self.model, self.split, self.objective, self.config = self.engine.model, split, objective, config
        self.name, self.callbacks = name, list(callbacks)
        users, items = split.train_pairs()
        device = self.engine.device
        self.device = device
        self.users, self.items = torch.from_numpy(users).to(device), torch.from_numpy(items).to(device)
        self.objective_params = [p for p in objective.parameters() if p.requires_grad]
        self.dense_params = self.engine.dense_parameters() + self.objective_params
        self.dense_optimizer = torch.optim.Adam(self.dense_params, lr=config.dense_lr) if self.dense_params else None
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        metric, _, k = config.select_metric.partition("@")
        self.select_metric, self.select_k, self._metric_name = config.select_metric, int(k), metric
        self.steps_per_epoch = math.ceil(len(self.users) / config.batch_size)
        self.step, self.epoch, self.epoch_steps = 0, 1, 0
        self._paused: dict | None = None  # the loop state of a paused fit (fit(stop_after=...))
        # bf16 autocast for the student's forward alone: the objective enters it around that call, so the
        # teacher's scores and every ranking used as a target stay fp32 (an objective without the hook: the
        # whole call, as before)
        self.autocast = student_autocast(config.bf16, device)
        self._autocast_whole = self.autocast is not None and not hasattr(objective, "set_student_autocast")
        if self.autocast is not None and not self._autocast_whole:
            objective.set_student_autocast(self.autocast)
        self.checkpointer = None
        if checkpoint_dir is not None:
            ident = {"model": name, "train": _jsonable(config), "data": {
                "n_users": split.n_users, "n_items": split.n_items, "split": split.kind,
                "train": fingerprint(split.train.indptr, split.train.indices),
                "valid": fingerprint(split.valid.indptr, split.valid.indices)}}
            ident.update(identity or {})
            ident.update(self.engine.identity)
            self.checkpointer = self.engine.checkpointer(checkpoint_dir, ident)

    # -- batches -------------------------------------------------------------------------------------
    def shares(self):
        """Yields (users [b], positives [b], shared negatives [S], B): this process's share of each global batch
        of B rows (all of it in one process) covering every training pair once; the permutation and the
        negatives are the same in every process."""
        c = self.config
        perm = torch.randperm(len(self.users), generator=self.generator, device=self.device)
        for a in range(0, len(perm), c.batch_size):
            idx = perm[a : a + c.batch_size]
            negs = torch.randint(self.split.n_items, (c.negatives,), generator=self.generator, device=self.device)
            mine = self.engine.share(idx)
            if mine is not None:
                yield self.users[mine], self.items[mine], negs, len(idx)

    def batches(self):
        """Yields (users [b], positives [b], shared negatives [S]) of :meth:`shares`."""
        for users, pos, negs, _ in self.shares():
            yield users, pos, negs

    # -- one epoch -----------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        c = self.config
        if c.lr_schedule == "constant" and not c.warmup_steps:
            return
        f = lr_factor(c.lr_schedule, self.step, c.epochs * self.steps_per_epoch, c.warmup_steps)
        self.engine.set_table_lr(f)
        if self.dense_optimizer is not None:
            for g in self.dense_optimizer.param_groups:
                g["lr"] = c.dense_lr * f

    def train_step(self, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor,
                   total: int) -> dict[str, torch.Tensor]:
        """One step on this process's rows (users [b], pos [b], negs [S]) of a global batch of ``total`` rows
        -> the global batch's loss parts (detached; the same in every process)."""
        self._set_lr()
        scale = self.engine.loss_scale(len(users), total)
        autocast = torch.autocast(*self.autocast) if self._autocast_whole else nullcontext()
        with autocast, self.engine.step(len(users), total):
            loss, parts = self.objective(self.model, users, pos, negs)
        finite, parts = self.engine.reduce(loss, parts, scale)
        if not finite:  # before backward: the fused update has not run yet
            raise NonFiniteLoss(self.epoch, self.epoch_steps + 1, {k: float(v) for k, v in parts.items()})
        if self.dense_optimizer is not None:
            self.dense_optimizer.zero_grad(set_to_none=True)
        (loss if scale == 1.0 else loss * scale).backward()  # embedding rows are updated here (fused optimizer)
        self.engine.after_backward(self.objective_params)
        if self.dense_optimizer is not None:
            if self.config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.dense_params, self.config.clip_grad_norm)
            self.dense_optimizer.step()
        self.step += 1
        self.epoch_steps += 1
        return parts

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.objective.train()
        if hasattr(self.objective, "on_epoch_start"):
            self.objective.on_epoch_start(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(epoch, self.steps_per_epoch)
        self.epoch, self.epoch_steps = epoch, 0
        sums: dict[str, torch.Tensor] = {}
        for users, pos, negs, total in self.shares():
            parts = self.train_step(users, pos, negs, total)
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            for cb in self.callbacks:
                if type(cb).on_step is not Callback.on_step:
                    cb.on_step({k: float(v) for k, v in parts.items()}, total)
        return {k: float(v) / max(self.epoch_steps, 1) for k, v in sums.items()}

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> FitResult:
        """Train until early stopping or ``config.epochs``; the best epoch's weights are restored at the end.

        ``stop_after``: pause after that epoch instead (a pilot run): the weights stay those of the last epoch
        and a later ``fit()`` on this Trainer continues from there, exactly as if it had never paused.
        Every process of a sharded engine calls it together."""
        c, engine = self.config, self.engine
        best, best_state, best_epoch, since, history, start_epoch = -math.inf, None, 0, 0, [], 1
        elapsed = 0.0
        resumed, self._paused = self._paused, None
        if resumed is None and self.checkpointer:
            loaded = engine.load(self.checkpointer)
            if loaded is not None:
                resumed = loaded[0]
                self._restore(loaded[1])
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
                    if best_epoch:  # the same on every process (validation metrics are shared)
                        engine.restore(best_state)
                    raise RankdistillError(f"training {self.name} stopped: {e}{kept}; lower the learning rate "
                                           "or add --l2") from None
                train_s = time.perf_counter() - t0
                valid = engine.validate(self.split, self.select_k, self._metric_name)
                now = time.perf_counter()
                record = {"model": self.name, "epoch": epoch, "loss": losses, "valid": valid,
                          "train_seconds": round(train_s, 3), "valid_seconds": round(now - t0 - train_s, 3),
                          "elapsed_seconds": round(now - start, 3),  # since this model's training began
                          "examples_per_second": round(len(self.users) / max(train_s, 1e-9), 1),
                          "lr": engine.table_lrs(), **engine.record()}
                history.append(record)
                for cb in self.callbacks:
                    cb.on_epoch_end(record)
                if valid[self.select_metric] > best:
                    best, best_epoch = valid[self.select_metric], epoch
                    best_state = engine.snapshot()
                since = epochs_without_progress([h["valid"][self.select_metric] for h in history], c.min_delta)
                finished = since >= c.patience or epoch == c.epochs
                if self.checkpointer:
                    shared = self._shared(epoch, best, best_state, best_epoch, since, history,
                                          time.perf_counter() - start, finished)
                    engine.save(self.checkpointer, shared, self._local_state())
                if finished:
                    break
                if epoch == last and last < c.epochs:
                    paused = True
                    self._paused = self._shared(epoch, best, best_state, best_epoch, since, history,
                                                time.perf_counter() - start, False)
        finally:
            if not paused:
                for cb in self.callbacks:
                    cb.close()
        if resumed is not None and not resumed.get("finished") and start_epoch > last:  # resumed past the pause
            self._paused = resumed
            paused = True
        if best_epoch and not paused:
            engine.restore(best_state)
        best_valid = history[best_epoch - 1]["valid"] if history and best_epoch else {}
        return FitResult(best_epoch, best_valid, time.perf_counter() - start, history,
                         resumed["epoch"] if resumed is not None else 0)

    # -- checkpoint state ----------------------------------------------------------------------------
    @staticmethod
    def _shared(epoch, best, best_state, best_epoch, since, history, seconds, finished) -> dict:
        """The loop's state, the same in every process (best_state: on the main process)."""
        return {"epoch": epoch, "best": best, "best_state": best_state, "best_epoch": best_epoch, "since": since,
                "history": history, "seconds": seconds, "finished": finished}

    def _local_state(self) -> dict:
        """This process's state: the engine's (weights, tables' optimizers), the dense optimizer, the
        objective's own weights, every random generator and the step."""
        gen = getattr(self.objective, "generator", None)
        return {
            **self.engine.local_state(),
            "dense_optimizer": self.dense_optimizer.state_dict() if self.dense_optimizer else None,
            "objective": {k: v for k, v in self.objective.state_dict().items() if not k.startswith("teacher.")},
            "rng": {"trainer": self.generator.get_state(), "objective": gen.get_state() if gen is not None else None,
                    "torch": torch.get_rng_state()},
            "step": self.step,
        }

    def _restore(self, state: dict) -> None:
        """:meth:`_local_state` back into this process."""
        self.engine.load_local_state(state)
        if self.dense_optimizer is not None and state["dense_optimizer"] is not None:
            self.dense_optimizer.load_state_dict(state["dense_optimizer"])
        self.objective.load_state_dict(state["objective"], strict=False)
        self.generator.set_state(state["rng"]["trainer"])
        gen = getattr(self.objective, "generator", None)
        if gen is not None and state["rng"]["objective"] is not None:
            gen.set_state(state["rng"]["objective"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step = state["step"]


def epochs_without_progress(values: list[float], min_delta: float = 0.0) -> int:
    """Epochs since the last that counted as progress: one whose validation value beat the last counted one
    by more than the relative ``min_delta`` (0: beat it at all). ``patience`` such epochs stop training.

    >>> epochs_without_progress([0.100, 0.1005, 0.1008, 0.1009], 0.01)
    3
    >>> epochs_without_progress([0.100, 0.1005, 0.1008, 0.1009], 0.0)
    0
    """
    counted, since = -math.inf, 0
    for value in values:
        needed = counted + min_delta * abs(counted) if math.isfinite(counted) else counted
        if value > needed:
            counted, since = value, 0
        else:
            since += 1
    return since


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, parts: dict[str, float]) -> None:
        self.epoch, self.step, self.parts = epoch, step, parts
        super().__init__(f"the loss became non-finite at epoch {epoch}, step {step} ({parts})")


def _jsonable(config) -> dict:
    from dataclasses import asdict

    return asdict(config)
