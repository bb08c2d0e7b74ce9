"""Training step time of a LightGCN teacher against a two-tower (MF) one of the same size, same batches.

A LightGCN step looks up every table row and propagates over the whole training graph (K sparse products
forward and K backward), so it costs O(nnz · D · K) per step whatever the batch; a two-tower step touches
only the batch's rows. Both run the default training objective (BSL over 1,024 shared negatives plus
in-batch negatives). Steps are timed interleaved across kinds after a warm-up; the median of the repeats is
reported. The last line of output is one JSON object.

    rankdistill data synth --out /tmp/s.parquet         # 6,000 users, 3,000 items, 300,000 interactions
    python benchmarks/lightgcn_step.py --data /tmp/s.parquet --dim 64 --layers 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

from rankdistill.config import ModelConfig, TrainConfig
from rankdistill.data.load import DataSpec
from rankdistill.data.split import make_split
from rankdistill.models.factory import build_model
from rankdistill.train.objectives import SupervisedObjective
from training import rankdistill_steps  # benchmarks/training.py, beside this script


def step_timer(model, objective, users, items, n_items, batch, negatives, steps, seed):
    """-> a function timing ``steps`` training steps (forward + backward with the fused update), ms/step."""
    examples_per_second = rankdistill_steps(model, objective, users, items, n_items, batch, negatives, steps,
                                            torch.Generator().manual_seed(seed))
    return lambda: 1e3 * batch / examples_per_second()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="interactions file (default: the embedded synthetic data)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--negatives", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10, help="steps per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = DataSpec(path=args.data).load() if args.data else DataSpec().load()
    split = make_split(data)
    train = TrainConfig(batch_size=args.batch_size, negatives=args.negatives)
    users, items = (torch.from_numpy(a) for a in split.train_pairs())
    kinds = {"two_tower": ModelConfig(embedding_dim=args.dim, score="dot"),
             "lightgcn": ModelConfig(kind="lightgcn", embedding_dim=args.dim, layers=args.layers)}
    timers = {}
    for name, config in kinds.items():
        model = build_model(config, split.n_users, split.n_items, graph=split.train).train()
        objective = SupervisedObjective.from_config(train, split)
        timers[name] = step_timer(model, objective, users, items, split.n_items, args.batch_size, args.negatives,
                                  args.steps, seed=0)
        timers[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.repeats):
        for name, run in timers.items():
            times[name].append(run())
    ms = {name: round(statistics.median(t), 2) for name, t in times.items()}
    for name, value in ms.items():
        print(f"{name:10s} {value:8.2f} ms/step")
    print(f"lightgcn / two_tower: {ms['lightgcn'] / ms['two_tower']:.1f}x")
    print(json.dumps({"ms_per_step": ms, "ratio": round(ms["lightgcn"] / ms["two_tower"], 2),
                      "users": split.n_users, "items": split.n_items, "train_interactions": split.train.nnz,
                      "dim": args.dim, "layers": args.layers, "batch_size": args.batch_size,
                      "negatives": args.negatives, "steps": args.steps, "repeats": args.repeats,
                      "threads": args.threads, "device": platform.processor() or platform.machine(),
                      "torch": torch.__version__, "python": platform.python_version()}))


if __name__ == "__main__":
    main()
