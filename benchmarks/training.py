"""Training throughput: teacher, student and distillation steps, against a plain PyTorch tutorial loop.

Examples are positive (user, item) interactions. rankdistill's step: one fused torchrec lookup per table,
sampled softmax over the positive and S uniform negatives shared by the batch, row-wise Adagrad fused into
backward. The tutorial loop: nn.Embedding (dense gradients) + Adam + a DataLoader over (user, item) pairs
with N per-example negatives and BCE, the kind of loop the tutorials (and the origin article) show.

The distillation steps come three ways: with the dim-128 teacher online, from the cached knowledge alone, and
the "lookup floor" (the student's step plus looking up and scoring the default's 16 sampled top-K items on each of
the kd_rows rows that carry them, no loss on them: what any distillation of that list costs at least).

Timings are interleaved across kinds, repeated, and the median taken; ratios come from the same run.
The last line of output is one JSON object.

    python benchmarks/training.py                      # 1M users, 500k items, 5M random interactions
    python benchmarks/training.py --data synthetic     # the embedded default data (6,000 users, 3,000 items)

Throughput does not depend on what the interactions mean, so the large default draws them at random
(users uniform, items Zipf-skewed) and the teacher knowledge (top-K lists) at random too.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rankdistill.config import DistillConfig, ModelConfig
from rankdistill.data.interactions import Interactions
from rankdistill.data.split import make_split
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.models.factory import build_model
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective
from distill_step import LookupFloor  # a sibling script, as student.py imports teacher.py


def rankdistill_steps(model, objective, users, items, n_items, batch, negatives, steps, gen):
    def run():
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(len(users), (batch,), generator=gen)
            negs = torch.randint(n_items, (negatives,), generator=gen)
            loss, _ = objective(model, users[idx], items[idx], negs)
            loss.backward()
        return batch * steps / (time.perf_counter() - t0)
    return run


class NaiveMF(nn.Module):
    def __init__(self, n_users, n_items, dim):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)

    def forward(self, u, i):  # u [B], i [B, L]
        return (self.user(u)[:, None, :] * self.item(i)).sum(-1)


def naive_steps(n_users, n_items, dim, users, items, batch, negatives, steps, gen):
    model = NaiveMF(n_users, n_items, dim)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(users, items), batch_size=batch, shuffle=True, generator=gen)
    labels = torch.zeros(batch, 1 + negatives)
    labels[:, 0] = 1

    def run():
        it = iter(loader)
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps):
            u, i = next(it)
            cand = torch.cat([i[:, None], torch.randint(n_items, (len(u), negatives), generator=gen)], 1)
            loss = nn.functional.binary_cross_entropy_with_logits(model(u, cand), labels[: len(u)])
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(u)
        return n / (time.perf_counter() - t0)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["random", "synthetic"], default="random")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=500_000)
    p.add_argument("--interactions", type=int, default=5_000_000)
    p.add_argument("--teacher-dim", type=int, default=128)
    p.add_argument("--student-dim", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--negatives", type=int, default=256, help="shared negatives per batch (rankdistill)")
    p.add_argument("--naive-negatives", type=int, default=4, help="per-example negatives of the tutorial loop")
    p.add_argument("--kd", default="listkl")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--naive-steps", type=int, default=10)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    if args.data == "synthetic":
        data = Interactions.from_frame(make_synthetic(SyntheticConfig()), "synthetic")
        split = make_split(data)
        u_np, i_np = split.train_pairs()
        users, items = torch.from_numpy(u_np), torch.from_numpy(i_np)
        n_users, n_items = split.n_users, split.n_items
    else:
        n_users, n_items = args.users, args.items
        users = torch.randint(n_users, (args.interactions,), generator=gen)
        zipf = 1.0 / torch.arange(1, n_items + 1, dtype=torch.float64)
        items = torch.multinomial(zipf, args.interactions, replacement=True, generator=gen)

    teacher = build_model(ModelConfig(embedding_dim=args.teacher_dim), n_users, n_items)
    student = build_model(ModelConfig(embedding_dim=args.student_dim), n_users, n_items)
    distilled = build_model(ModelConfig(embedding_dim=args.student_dim), n_users, n_items)
    sup = SupervisedObjective("softmax", 0.01)
    t0 = time.perf_counter()
    if args.data == "synthetic":
        knowledge = TeacherKnowledge.compute(teacher, split, 100)
    else:
        knowledge = TeacherKnowledge(torch.randint(n_items, (n_users, 100), generator=gen),
                                     torch.randn(n_users, 100, generator=gen).sort(1, descending=True).values)
    knowledge_s = time.perf_counter() - t0
    dcfg = DistillConfig(kd=args.kd)
    kinds = {
        "teacher": rankdistill_steps(teacher, sup, users, items, n_items, args.batch_size, args.negatives, args.steps, gen),
        "student": rankdistill_steps(student, sup, users, items, n_items, args.batch_size, args.negatives, args.steps, gen),
        "distill": rankdistill_steps(distilled, DistillationObjective(teacher, knowledge, dcfg, "softmax", 0.01),
                                     users, items, n_items, args.batch_size, args.negatives, args.steps, gen),
        "naive_student": naive_steps(n_users, n_items, args.student_dim, users, items, args.batch_size,
                                     args.naive_negatives, args.naive_steps, gen),
        "naive_teacher": naive_steps(n_users, n_items, args.teacher_dim, users, items, args.batch_size,
                                     args.naive_negatives, args.naive_steps, gen),
    }
    kinds["lookup_floor"] = rankdistill_steps(build_model(ModelConfig(embedding_dim=args.student_dim), n_users, n_items),
                                              LookupFloor(knowledge.items, dcfg.topk_samples, dcfg.kd_rows, "softmax", 0.01),
                                              users, items, n_items, args.batch_size, args.negatives, args.steps, gen)
    try:  # cached-only distillation: the teacher's top-K from the knowledge cache, no teacher forward
        cached = DistillationObjective(None, knowledge, dcfg, "softmax", 0.01)
        kinds["distill_cached"] = rankdistill_steps(build_model(ModelConfig(embedding_dim=args.student_dim), n_users,
                                                                n_items), cached, users, items, n_items,
                                                    args.batch_size, args.negatives, args.steps, gen)
    except Exception as e:  # noqa: BLE001 - a KD loss that needs the teacher's weights
        print(f"cached-only distillation not measured: {e}")
    for run in kinds.values():  # warm-up
        run()
    rates = {k: [] for k in kinds}
    for _ in range(args.reps):
        for k, run in kinds.items():
            rates[k].append(run())
    med = {k: statistics.median(v) for k, v in rates.items()}
    device = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)"
    print(f"device: {device}; torch {torch.__version__}; {n_users} users, {n_items} items, "
          f"batch {args.batch_size}, {args.negatives} shared negatives, kd={args.kd}")
    print(f"teacher knowledge (top-100 for every user, {args.data}): {knowledge_s:.2f} s")
    print(f"{'step':<16}{'examples/s':>14}")
    for k, v in med.items():
        print(f"{k:<16}{v:>14,.0f}")
    out = {
        "device": device,
        "examples_per_second": {k: round(v) for k, v in med.items() if not k.startswith("naive")},
        "naive_examples_per_second": {k: round(v) for k, v in med.items() if k.startswith("naive")},
        "speedup_vs_naive": {"student": round(med["student"] / med["naive_student"], 2),
                             "teacher": round(med["teacher"] / med["naive_teacher"], 2)},
        # a distillation step / a student step: from the cached knowledge (the teacher's top-K lists and
        # scores, no teacher forward), and with the dim-128 teacher online (its frozen vectors score the batch)
        "distill_overhead": round(med["student"] / med["distill_cached"], 3) if "distill_cached" in med else None,
        "distill_overhead_online": round(med["student"] / med["distill"], 3),
        # the least any distillation of the default top-K list costs: its lookups and scores, no loss
        "lookup_floor_overhead": round(med["student"] / med["lookup_floor"], 3),
        "sizes": vars(args),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
