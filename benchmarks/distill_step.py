"""The distillation step against the student's own step, with the default recipe on real data.

    OMP_NUM_THREADS=1 python benchmarks/distill_step.py --data ../shared/data/gowalla --kd rce:10,listkl
    OMP_NUM_THREADS=1 python benchmarks/distill_step.py --data ../shared/data/gowalla --kd rce:10 --profile

The models, objectives and batch shapes are those of ``rankdistill run`` (``RunConfig()``: a dim-128 cosine
teacher, dim-16 cosine students, BSL with in-batch negatives, batch 512, 1,024 shared negatives). For every
``--kd`` spec: the step from the online (frozen) teacher and, where the loss allows it, from the cached
knowledge alone, each against the student trained alone on the true labels; and the "lookup floor": the
student's step plus the lookups and scores of the default's top-K columns (on the ``kd_rows`` rows that carry
them) with no loss on them
(:class:`LookupFloor`), the least any distillation of that list can cost. Steps are interleaved, repeated
``--reps`` times, and the medians taken, so the ratios come from one run on one (shared) machine. The
per-epoch refresh a loss needs (rce, dcd: the student's top list) is timed apart and added to the epoch
estimate (steps per epoch × step + refresh; the validation pass is the same for all and left out).
The teacher is untrained: a step's cost does not depend on what the lists hold. ``--profile`` prints the
profiler's top operators of each distillation step. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace

import torch

from rankdistill.data.load import load_interactions
from rankdistill.data.split import make_split
from rankdistill.models.factory import build_model
from rankdistill.pipeline import RunConfig, distillation_objective
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import SupervisedObjective, supervised_options


class LookupFloor(SupervisedObjective):
    """The student's step plus what any distillation from the cached top-K must do: look up and score ``m``
    sampled top-K items (``items`` [U, K], the knowledge's lists) on each of the batch's first ``rows`` rows
    (the rows that carry the terms' lists, ``kd_rows``), with no loss on them (weight 0, so their zero gradients
    still flow into the update). No distillation loss of that list can cost less than this.
    ``loss``, ``l2``, ``supervised``: the student's own objective (:class:`SupervisedObjective`)."""

    def __init__(self, items: torch.Tensor, m: int, rows: int, loss: str = "softmax", l2: float = 0.0,
                 **supervised) -> None:
        super().__init__(loss, l2, **supervised)
        self.items, self.m, self.rows = items, m, rows
        self.generator = torch.Generator().manual_seed(1)

    @classmethod
    def of_run(cls, run: RunConfig, split, knowledge: TeacherKnowledge) -> "LookupFloor":
        """The floor of ``run``'s default candidate list (``topk_samples`` on ``kd_rows`` rows) and supervised
        loss."""
        return cls(knowledge.items, run.distill.topk_samples, run.distill.kd_rows, run.train.loss, run.train.l2,
                   **supervised_options(run.train, split))

    def forward(self, model, users, pos, negs):
        ranks = torch.randperm(self.items.shape[1], generator=self.generator)[: self.m].sort().values
        rows = users[: self.rows]
        fwd = model(users, pos[:, None], negs, extra=self.items.index_select(0, rows)[:, ranks])
        total, parts = self.supervised(fwd, pos, negs, users)
        return total + 0.0 * fwd.extra_scores.sum(), parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="data path (default: the embedded synthetic data)")
    p.add_argument("--kd", default="rce:10,listkl", help="comma-separated --kd specs")
    p.add_argument("--steps", type=int, default=10, help="steps per timing")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)

    split = make_split(load_interactions(args.data))
    run = RunConfig()
    teacher = build_model(run.teacher, split.n_users, split.n_items, seed=0)
    knowledge = TeacherKnowledge.compute(teacher, split, run.distill.topk)
    u, i = split.train_pairs()
    users, items = torch.from_numpy(u), torch.from_numpy(i)
    gen = torch.Generator().manual_seed(0)
    steps_per_epoch = -(-len(users) // run.train.batch_size)

    def student():
        return build_model(run.student, split.n_users, split.n_items, seed=0)

    kinds = {"student": (student(), SupervisedObjective.from_config(run.train, split)),
             "lookup floor": (student(), LookupFloor.of_run(run, split, knowledge))}
    for spec in args.kd.split(","):
        spec_run = replace(run, distill=replace(run.distill, kd=spec))
        kinds[spec] = (student(), distillation_objective(split, teacher, knowledge, spec_run))
        try:
            kinds[f"{spec} cached"] = (student(), distillation_objective(split, None, knowledge, spec_run))
        except Exception as e:  # noqa: BLE001 - a loss that needs the teacher's weights
            print(f"{spec}: no cached-only step ({str(e)[:80]}...)")

    def step(model, objective):
        idx = torch.randint(len(users), (run.train.batch_size,), generator=gen)
        negs = torch.randint(split.n_items, (run.train.negatives,), generator=gen)
        loss, _ = objective(model, users[idx], items[idx], negs)
        loss.backward()

    refresh = {}
    for name, (model, objective) in kinds.items():
        on_epoch = getattr(objective, "on_epoch_start", None)
        t0 = time.perf_counter()
        if on_epoch is not None:
            on_epoch(1)
        step(model, objective)  # the first step after an epoch start refreshes what the loss keeps per epoch
        first = time.perf_counter() - t0
        for _ in range(2):
            step(model, objective)
        t0 = time.perf_counter()
        step(model, objective)
        refresh[name] = max(0.0, first - (time.perf_counter() - t0))
    times = {k: [] for k in kinds}
    for _ in range(args.reps):
        for name, (model, objective) in kinds.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, objective)
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["student"]
    device = f"CPU ({platform.processor() or platform.machine()}), 1 thread"
    print(f"device: {device}; torch {torch.__version__}; {split.n_users:,} users, {split.n_items:,} items, "
          f"{len(users):,} training pairs, batch {run.train.batch_size}, {run.train.negatives} shared negatives")
    print(f"{'step':<20}{'ms':>8}{'x student':>11}{'refresh s':>11}{'epoch s':>10}")
    out = {}
    for name, t in med.items():
        epoch = steps_per_epoch * t + refresh[name]
        print(f"{name:<20}{1000 * t:>8.1f}{t / base:>11.2f}{refresh[name]:>11.1f}{epoch:>10.0f}")
        out[name] = {"step_ms": round(1000 * t, 2), "ratio": round(t / base, 3),
                     "refresh_seconds": round(refresh[name], 2), "epoch_seconds": round(epoch, 1)}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, (model, objective) in kinds.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    step(model, objective)
            print(f"\n== {name}: top operators (self CPU, per step)")
            ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
            for e in ops:
                print(f"  {e.key[:64]:<64}{e.self_cpu_time_total / 1000 / args.steps:8.2f} ms")
    print(json.dumps({"device": device, "data": split.kind, "users": split.n_users, "items": split.n_items,
                      "steps_per_epoch": steps_per_epoch, "kinds": out}))


if __name__ == "__main__":
    main()
