"""Student recipes on validation: from one teacher, train the student alone and the distilled student per setting.

A student default must serve the model a user ships, the distilled student, so every setting records both:
the student trained alone on the true labels (its best validation NDCG@20, epoch, test) and the student
distilled with ``--kd`` (default ``auto``, which takes that student alone as its baseline and fallback, as
``rankdistill run`` does). Selection is on validation only; test figures are recorded for reporting.

    python benchmarks/student.py --data ../shared/data/ml-100k/u.data --out runs/student-ml \\
        --grid temperature=0.1,0.2
    python benchmarks/student.py --out runs/student-emb --grid temperature=0.1,0.2   # the embedded data

``--set KEY=VALUE`` / ``--grid KEY=V1,V2`` set fields of the student's ModelConfig (``temperature``, ``lr``,
``embedding_dim``, ...). The teacher is ``rankdistill run``'s default, checkpointed under ``--out`` (a re-run
reuses it and every finished student; keep one ``--out`` per data set and seed). Each setting appends one JSON
line to ``OUT/students.jsonl`` (a re-run appends its lines again).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from rankdistill.config import ModelConfig
from rankdistill.data.load import load_interactions
from rankdistill.data.split import make_split
from rankdistill.pipeline import RunConfig, distill, train_model
from teacher import parse_value

MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def tag(settings: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in sorted(settings.items())) or "default"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="data path (default: the embedded synthetic data)")
    p.add_argument("--format")
    p.add_argument("--out", required=True, help="directory: checkpoints and students.jsonl")
    p.add_argument("--kd", default="auto", help="the distillation of every setting (default: auto)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bad = [s for s in args.set + args.grid if "=" not in s]
    if bad:
        p.error(f"--set/--grid take KEY=VALUE, got {bad}")
    fixed = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    axes = [(k, [parse_value(x) for x in v.split(",")]) for k, _, v in (g.partition("=") for g in args.grid)]
    unknown = (set(fixed) | {k for k, _ in axes}) - MODEL_FIELDS
    if unknown:
        p.error(f"unknown student setting(s) {sorted(unknown)}; choose among {sorted(MODEL_FIELDS)}")
    base = RunConfig(seed=args.seed, quiet=True, workers=1)
    combos = [{**fixed, **{k: v for (k, _), v in zip(axes, combo)}}
              for combo in itertools.product(*(values for _, values in axes))]
    for settings in combos:  # a bad value is refused now, not after the teacher's training
        replace(base.student, **settings)
    data = load_interactions(args.data, args.format)
    split = make_split(data, None, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = train_model(split, base.teacher, base, "teacher", out_dir=out)
    for settings in combos:
        run = replace(base, student=replace(base.student, **settings), distill=replace(base.distill, kd=args.kd))
        name = tag(settings)
        alone = train_model(split, run.student, run.alone(), f"student-{name}", out_dir=out)
        kd = "" if args.kd == "auto" else f"-{args.kd}"
        distilled = distill(split, teacher.model, run, f"distilled-{name}{kd}", out_dir=out, alone=alone,
                            teacher_config=run.teacher)
        kept_alone = bool((distilled.auto or {}).get("reused_student_alone"))  # its fit is then the student's
        record = {
            "data": data.name, "split": split.kind, "settings": settings, "kd": args.kd,
            "teacher": {"valid_ndcg@20": round(teacher.fit.best_valid["ndcg@20"], 5),
                        "ndcg@20": round(teacher.metrics["ndcg@20"], 5)},
            "alone": {"valid_ndcg@20": round(alone.fit.best_valid["ndcg@20"], 5), "best_epoch": alone.fit.best_epoch,
                      "ndcg@20": round(alone.metrics["ndcg@20"], 5)},
            "distilled": {"method": distilled.method, "kept_student_alone": kept_alone,
                          "valid_ndcg@20": round(distilled.fit.best_valid["ndcg@20"], 5),
                          "best_epoch": distilled.fit.best_epoch,
                          "ndcg@20": round(distilled.metrics["ndcg@20"], 5),
                          "pilots": (distilled.auto or {}).get("pilots")},
            "student": asdict(run.student),
            "device": f"{run.device} ({platform.machine()}), {torch.get_num_threads()} thread(s), torch {torch.__version__}",
        }
        with (out / "students.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
