"""Teacher recipes on validation: train one ranker per setting and record validation NDCG@20 per epoch.

Every row is selected on validation only (best epoch by validation NDCG@20, early stopping with patience);
test metrics of the selected epoch are recorded for reporting, never used to choose. The defaults of
``rankdistill run`` / ``train`` were chosen from these files (``benchmarks/results/teacher-*.jsonl``).

    python benchmarks/teacher.py --data ../shared/data/gowalla --format lightgcn --out runs/teacher-gowalla.jsonl \\
        --set score=cosine --set temperature=0.1 --set lr=0.5 --set negatives=1024 --set epochs=8

``--set KEY=VALUE`` sets a ModelConfig or TrainConfig field (model fields win on a name clash); several
``--grid KEY=V1,V2`` run every combination. Each finished setting appends one JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from rankdistill.config import ModelConfig, TrainConfig
from rankdistill.data.load import load_interactions
from rankdistill.data.split import make_split
from rankdistill.pipeline import RunConfig, train_model

SHOWN = ("embedding_dim", "score", "temperature", "lr", "loss", "bsl_tau2", "in_batch_negatives", "batch_size",
         "negatives", "l2", "lr_schedule", "epochs", "patience")
MODEL_FIELDS = {f.name: f.type for f in fields(ModelConfig)}
TRAIN_FIELDS = {f.name: f.type for f in fields(TrainConfig)}


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text


def configs(base_model: ModelConfig, base_train: TrainConfig, settings: dict) -> tuple[ModelConfig, TrainConfig]:
    m = {k: v for k, v in settings.items() if k in MODEL_FIELDS}
    t = {k: v for k, v in settings.items() if k in TRAIN_FIELDS and k not in MODEL_FIELDS}
    unknown = set(settings) - set(m) - set(t)
    if unknown:
        raise SystemExit(f"unknown setting(s) {sorted(unknown)}")
    return replace(base_model, **m), replace(base_train, **t)


def table(paths: list[str]) -> str:
    """A markdown table of JSON-lines records: the settings that differ, the validation curve's best, test."""
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]
    for r in rows:  # the resolved configs, where recorded, fill the settings a run left at their defaults
        r["settings"] = {**{k: v for k, v in {**r.get("model", {}), **r.get("train", {})}.items()
                            if k in SHOWN}, **r["settings"]}
    keys = sorted({k for r in rows for k in r["settings"]})
    varying = [k for k in keys if len({json.dumps(r["settings"].get(k)) for r in rows}) > 1]
    fixed = {k: rows[0]["settings"][k] for k in keys if k not in varying and k in rows[0]["settings"]}
    head = ["data", *varying, "epochs run", "best epoch", "valid ndcg@20", "test ndcg@20", "test recall@20", "s"]
    out = [f"Common settings: {json.dumps(fixed)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["data"], *(str(r["settings"].get(k, "")) for k in varying), str(len(r["valid_curve"])),
                 str(r["best_epoch"]), f"{r['valid_ndcg@20']:.4f}", f"{r['test']['ndcg@20']:.4f}",
                 f"{r['test']['recall@20']:.4f}", f"{r['seconds']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", nargs="+", metavar="JSONL", help="print a markdown table of these result files and exit")
    p.add_argument("--data")
    p.add_argument("--format")
    p.add_argument("--split")
    p.add_argument("--out", help="JSON-lines file, one line per setting (appended)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not args.data or not args.out:
        p.error("--data and --out are required (or --table FILES)")
    torch.set_num_threads(args.threads)
    data = load_interactions(args.data, args.format)
    split = make_split(data, args.split, args.seed)
    fixed = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    axes = [(k, [parse_value(x) for x in v.split(",")]) for k, _, v in (g.partition("=") for g in args.grid)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for combo in itertools.product(*(values for _, values in axes)):
        settings = {**fixed, **{k: v for (k, _), v in zip(axes, combo)}}
        model_cfg, train_cfg = configs(ModelConfig(embedding_dim=128), TrainConfig(), settings)
        run = RunConfig(teacher=model_cfg, train=train_cfg, seed=args.seed, ks=(10, 20))
        t0 = time.perf_counter()
        trained = train_model(split, model_cfg, run, "teacher")
        record = {
            "data": data.name, "split": split.kind, "settings": settings,
            "best_epoch": trained.fit.best_epoch, "valid_ndcg@20": round(trained.fit.best_valid["ndcg@20"], 5),
            "valid_curve": [round(h["valid"]["ndcg@20"], 5) for h in trained.fit.history],
            "epoch_seconds": [h["train_seconds"] for h in trained.fit.history],
            "seconds": round(time.perf_counter() - t0, 1),
            "test": {k: round(v, 5) for k, v in trained.metrics.items()},
            "params": trained.model.num_parameters(),
            "model": asdict(model_cfg), "train": asdict(train_cfg),  # the resolved configs, defaults included
            "device": f"CPU {platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
        }
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
