"""dcd against rrd, per epoch: a fixed number of distillation steps of each, plus dcd's per-epoch refresh
(the student's top-P pass that gives its ranks, :mod:`rankdistill.train.discrepancy`), extrapolated to one
epoch of the data. Goal (issue 12, part 3): a dcd epoch <= 1.5x an rrd epoch on Gowalla.

    OMP_NUM_THREADS=1 python benchmarks/dcd_epoch.py --data ../shared/data/gowalla --format lightgcn

Both losses run in the same process, interleaved, ``--reps`` times; the medians are reported and the ratio
comes from this one run (the machine is shared). An epoch is ``steps_per_epoch`` steps (forward, backward with
the fused embedding update) plus, for dcd, one refresh; the validation pass every epoch makes is the same
for both and left out (so the ratio is an upper bound). Both run from cached knowledge (rrd and dcd read
only the teacher's ranks); the knowledge comes from an untrained dim-8 teacher, since the cost does not
depend on what the lists hold. ``--old-refresh`` also times the refresh this replaced (the student's whole
ranking sorted per user). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.data.load import load_interactions
from rankdistill.data.split import make_split
from rankdistill.models.factory import build_model
from rankdistill.train.knowledge import TeacherKnowledge, rank_with_positions
from rankdistill.train.objectives import DistillationObjective, supervised_options


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/gowalla")
    p.add_argument("--format", default="lightgcn")
    p.add_argument("--student-dim", type=int, default=ModelConfig.embedding_dim)
    p.add_argument("--topk", type=int, default=DistillConfig.topk)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--negatives", type=int, default=TrainConfig.negatives)
    p.add_argument("--steps", type=int, default=20, help="timed steps per loss and repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--old-refresh", action="store_true", help="also time the full-sort refresh (once)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    split = make_split(load_interactions(args.data or None, args.format if args.data else None))  # "": synthetic
    load_s = time.perf_counter() - t0
    teacher = build_model(ModelConfig(embedding_dim=8), split.n_users, split.n_items, seed=1)
    t0 = time.perf_counter()
    knowledge = TeacherKnowledge.compute(teacher, split, k=args.topk)
    knowledge_s = time.perf_counter() - t0
    train = TrainConfig(batch_size=args.batch_size, negatives=args.negatives)
    users, items = (torch.from_numpy(a) for a in split.train_pairs())
    steps_per_epoch = math.ceil(len(users) / args.batch_size)
    student = build_model(ModelConfig(embedding_dim=args.student_dim), split.n_users, split.n_items, seed=2)
    objectives = {kd: DistillationObjective(None, knowledge, DistillConfig(kd=kd, topk=args.topk), train.loss,
                                            train.l2, **supervised_options(train, split))
                  for kd in ("rrd", "dcd")}
    gen = torch.Generator().manual_seed(0)

    def steps(objective):
        for _ in range(args.steps):
            idx = torch.randint(len(users), (args.batch_size,), generator=gen)
            negs = torch.randint(split.n_items, (args.negatives,), generator=gen)
            loss, _ = objective(student, users[idx], items[idx], negs)
            loss.backward()

    dcd = objectives["dcd"]
    dcd._refresh_dcd(student)  # warm-up of both paths
    for objective in objectives.values():
        steps(objective)
    step_s = {kd: [] for kd in objectives}
    refresh_s = []
    for _ in range(args.reps):
        refresh_s.append(timed(lambda: dcd._refresh_dcd(student)))
        for kd, objective in objectives.items():
            step_s[kd].append(timed(lambda: steps(objective)) / args.steps)
    step = {kd: statistics.median(v) for kd, v in step_s.items()}
    refresh = statistics.median(refresh_s)
    epoch = {"rrd": step["rrd"] * steps_per_epoch, "dcd": step["dcd"] * steps_per_epoch + refresh}
    result = {
        "device": f"cpu ({platform.processor() or platform.machine()}), {args.threads} thread(s)",
        "data": {"users": split.n_users, "items": split.n_items, "train": len(users)},
        "student_dim": args.student_dim, "topk": args.topk, "batch_size": args.batch_size,
        "negatives": args.negatives, "steps_per_epoch": steps_per_epoch, "reps": args.reps,
        "load_s": round(load_s, 2), "knowledge_s": round(knowledge_s, 2),
        "step_ms": {kd: round(1000 * v, 2) for kd, v in step.items()},
        "dcd_refresh_s": round(refresh, 2), "dcd_refresh_s_all": [round(v, 2) for v in refresh_s],
        "epoch_s": {kd: round(v, 1) for kd, v in epoch.items()},
        "dcd_over_rrd_epoch": round(epoch["dcd"] / epoch["rrd"], 3),
        "goal": 1.5,
    }
    if args.old_refresh:
        result["old_refresh_s"] = round(timed(lambda: rank_with_positions(
            student, split.train, args.topk, knowledge.items, knowledge.valid)), 2)
        result["old_dcd_over_rrd_epoch"] = round(
            (step["dcd"] * steps_per_epoch + result["old_refresh_s"]) / epoch["rrd"], 3)
    for key in ("step_ms", "dcd_refresh_s", "epoch_s", "dcd_over_rrd_epoch"):
        print(f"{key}: {result[key]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
