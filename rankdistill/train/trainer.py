"""Trainer: one loop for teachers, students and distillation, composed from an objective and an evaluator.

Each epoch shuffles the training interactions with a seeded generator and cuts them into batches with
tensor operations (users [B], positives [B], uniform negatives [B, N]); the embedding tables update
themselves in backward (torchrec fused optimizer), dense weights use Adam. After each epoch the model is
evaluated on the validation split; the best epoch's weights are kept and restored at the end, and training
stops after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from rankdistill.config import TrainConfig
from rankdistill.data.split import Split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.base import Ranker


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float
    history: list[dict] = field(default_factory=list)


def print_epoch(record: dict) -> None:
    losses = " ".join(f"{k}={v:.4f}" for k, v in record["loss"].items())
    valid = " ".join(f"{k}={v:.4f}" for k, v in record["valid"].items())
    print(f"  [{record['model']}] epoch {record['epoch']}: {losses} | valid {valid} | "
          f"{record['examples_per_second']:.0f} ex/s", file=sys.stderr, flush=True)


class Trainer:
    def __init__(
        self,
        model: Ranker,
        split: Split,
        objective: nn.Module,
        config: TrainConfig = TrainConfig(),
        name: str = "model",
        on_epoch: Callable[[dict], None] | None = print_epoch,
    ) -> None:
        self.model, self.split, self.objective, self.config = model, split, objective, config
        self.name, self.on_epoch = name, on_epoch
        users, items = split.train_pairs()
        self.users, self.items = torch.from_numpy(users), torch.from_numpy(items)
        dense = list(model.dense_parameters()) + [p for p in objective.parameters() if p.requires_grad]
        self.dense_optimizer = torch.optim.Adam(dense, lr=config.dense_lr) if dense else None
        self.generator = torch.Generator().manual_seed(config.seed)
        metric, _, k = config.select_metric.partition("@")
        self.select_metric, self.select_k = config.select_metric, int(k)
        self._metric_name = metric

    def batches(self):
        """Yields (users [B], positives [B], shared negatives [S]) covering every training pair once."""
        c = self.config
        perm = torch.randperm(len(self.users), generator=self.generator)
        for a in range(0, len(perm), c.batch_size):
            idx = perm[a : a + c.batch_size]
            negs = torch.randint(self.split.n_items, (c.negatives,), generator=self.generator)
            yield self.users[idx], self.items[idx], negs

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        self.objective.train()
        sums: dict[str, float] = {}
        steps = 0
        for users, pos, negs in self.batches():
            loss, parts = self.objective(self.model, users, pos, negs)
            if self.dense_optimizer is not None:
                self.dense_optimizer.zero_grad(set_to_none=True)
            loss.backward()  # embedding rows are updated here (fused optimizer)
            if self.dense_optimizer is not None:
                self.dense_optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            steps += 1
        means = {k: v / max(steps, 1) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise RankdistillError(f"training {self.name} diverged (loss {means}); lower the learning rate")
        return means

    def fit(self) -> FitResult:
        c = self.config
        best, best_state, best_epoch, since = -math.inf, None, 0, 0
        history, start = [], time.perf_counter()
        for epoch in range(1, c.epochs + 1):
            t0 = time.perf_counter()
            losses = self.train_epoch()
            train_s = time.perf_counter() - t0
            valid = evaluate(self.model, self.split, "valid", (self.select_k,), (self._metric_name,))
            record = {"model": self.name, "epoch": epoch, "loss": losses, "valid": valid,
                      "train_seconds": train_s, "examples_per_second": len(self.users) / max(train_s, 1e-9)}
            history.append(record)
            if self.on_epoch:
                self.on_epoch(record)
            if valid[self.select_metric] > best:
                best, best_epoch, since = valid[self.select_metric], epoch, 0
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                since += 1
                if since >= c.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        best_valid = history[best_epoch - 1]["valid"] if history else {}
        return FitResult(best_epoch, best_valid, time.perf_counter() - start, history)
