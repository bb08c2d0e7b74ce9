"""The quality table: teacher, student alone, and the student distilled by each method, side by side.

Same split, same full-ranking protocol, model selection on validation only, for every row. The best
combination is chosen on validation NDCG@20 (the two best single methods, summed), never on test. One
cross-family row distils an MLP teacher into the two-tower student.

    python benchmarks/quality.py --data ../shared/data/ml-100k/u.data --out runs/quality-ml100k
    python benchmarks/quality.py --data ../shared/data/gowalla --format lightgcn --out runs/quality-gowalla

Writes OUT/quality.md and OUT/quality.json; the last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.data.load import load_interactions
from rankdistill.data.split import make_split
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.popularity import Popularity
from rankdistill.pipeline import REPORT_METRICS, RunConfig, TrainedModel, distill, gap_recovered, train_model
from rankdistill.train.knowledge import TeacherKnowledge

COLUMNS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")


def row(name: str, method: str, tm: TrainedModel, teacher: dict | None, student: dict | None) -> dict:
    r = {"model": name, "method": method, "dim": tm.model.embedding_dim, "params": tm.model.num_parameters(),
         "train_seconds": round(tm.fit.seconds, 1) if tm.fit else 0.0,
         "best_epoch": tm.fit.best_epoch if tm.fit else 0,
         "valid_ndcg@20": round(tm.fit.best_valid.get("ndcg@20", float("nan")), 5) if tm.fit else None,
         **{k: round(tm.metrics[k], 5) for k in COLUMNS}}
    if teacher and student:
        r["gap_recovered"] = gap_recovered(teacher, student, tm.metrics, ("ndcg@20", "recall@20"))
    return r


def markdown(rows: list[dict], header: str) -> str:
    cols = ["model", "method", "dim", "params", "train s", *COLUMNS, "gap ndcg@20", "gap recall@20"]
    out = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        gap = r.get("gap_recovered") or {}
        fmt = lambda v: "" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        out.append("| " + " | ".join([r["model"], r["method"], str(r["dim"]), f"{r['params']:,}",
                                       f"{r['train_seconds']:.0f}", *(f"{r[k]:.4f}" for k in COLUMNS),
                                       fmt(gap.get("ndcg@20")), fmt(gap.get("recall@20"))]) + " |")
    return "\n".join(out) + "\n"


def _typed(config, items: list[str]) -> dict:
    """KEY=VALUE strings -> {key: value of the field's type} for ``config``'s dataclass."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        current = getattr(config, key)
        if isinstance(current, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            out[key] = tuple(v for v in value.split(",") if v)
        else:
            out[key] = type(current)(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="default: the embedded synthetic data")
    p.add_argument("--format")
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--methods", default="mse,soft_bce,margin_mse,ranknet,listkl,listmle,rrd,rd,dcd,hint,de",
                   help="comma-separated --kd specs, each distilled separately")
    p.add_argument("--kd-epochs", type=int, default=None, help="maximum epochs of each distilled student "
                   "(default: --epochs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a DistillConfig field for every distilled row, e.g. --set rd_dynamic_from=3")
    d = RunConfig()  # every default is the command line's (rankdistill run)
    p.add_argument("--teacher-dim", type=int, default=d.teacher.embedding_dim)
    p.add_argument("--student-dim", type=int, default=d.student.embedding_dim)
    p.add_argument("--teacher-lr", type=float, default=d.teacher.lr)
    p.add_argument("--student-lr", type=float, default=d.student.lr)
    p.add_argument("--epochs", type=int, default=d.train.epochs, help="maximum epochs of the teacher (and default of "
                   "the distilled students)")
    p.add_argument("--student-epochs", type=int, default=None, help="maximum epochs of the student alone (default: "
                   "twice --epochs, as rankdistill run)")
    p.add_argument("--patience", type=int, default=d.train.patience)
    p.add_argument("--l2", type=float, default=d.train.l2)
    p.add_argument("--temperature", type=float, default=d.distill.temperature)
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig field for every model, e.g. --train-set negatives=512")
    p.add_argument("--no-combo", action="store_true", help="skip the best-combination row")
    p.add_argument("--no-cross-family", action="store_true", help="skip the MLP-teacher rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    data = load_interactions(args.data, args.format)
    split = make_split(data, None, args.seed)
    overrides = _typed(DistillConfig(), args.set)
    train_overrides = _typed(d.train, args.train_set)
    run = RunConfig(teacher=replace(d.teacher, embedding_dim=args.teacher_dim, lr=args.teacher_lr),
                    student=replace(d.student, embedding_dim=args.student_dim, lr=args.student_lr),
                    train=replace(d.train, epochs=args.epochs, patience=args.patience, l2=args.l2,
                                  **train_overrides),
                    distill=replace(d.distill, temperature=args.temperature, **overrides), seed=args.seed,
                    student_epochs=args.student_epochs)
    kd_run = replace(run, train=replace(run.train, epochs=args.kd_epochs or args.epochs))
    rows = []
    pop = Popularity(split.train)
    rows.append(row("popularity", "", TrainedModel(pop, None, evaluate(pop, split, "test", (10, 20), REPORT_METRICS)),
                    None, None))
    # Every model checkpoints under OUT: an interrupted table resumes where it stopped.
    teacher = train_model(split, run.teacher, run, "teacher", out_dir=out)
    student = train_model(split, run.student, run.alone(), "student", out_dir=out)
    t, s = teacher.metrics, student.metrics
    rows += [row("teacher", "true labels", teacher, None, None), row("student", "true labels", student, None, None)]
    print(markdown(rows, ""), flush=True)
    knowledge = TeacherKnowledge.compute(teacher.model, split, run.distill.topk)

    def distil(spec: str, teacher_model=teacher.model, know=knowledge, name=None) -> TrainedModel:
        cfg = replace(kd_run, distill=replace(run.distill, kd=spec))
        return distill(split, teacher_model, cfg, name or f"kd-{spec}", know, out_dir=out,
                       alone=student if spec == "auto" else None)

    singles = {}
    for spec in args.methods.split(","):
        singles[spec] = distil(spec)
        rows.append(row("distilled", spec, singles[spec], t, s))
        print(markdown(rows[-1:], ""), flush=True)
    if not args.no_combo and len(singles) >= 2:
        ranked = sorted(singles, key=lambda k: -singles[k].fit.best_valid["ndcg@20"])  # validation, never test
        combo = "+".join(ranked[:2])
        rows.append(row("distilled", f"{combo} (best 2 on valid)", distil(combo), t, s))
        print(markdown(rows[-1:], ""), flush=True)
    best_single = max(singles, key=lambda k: singles[k].fit.best_valid["ndcg@20"])
    if not args.no_cross_family:
        mlp_run = replace(run, teacher=ModelConfig(kind="mlp", embedding_dim=args.teacher_dim // 2,
                                                   mlp_layers=(64, 32), lr=args.teacher_lr))
        mlp = train_model(split, mlp_run.teacher, mlp_run, "mlp-teacher", out_dir=out)
        mlp_know = TeacherKnowledge.compute(mlp.model, split, run.distill.topk)
        rows.append(row("mlp teacher", "true labels", mlp, None, None))
        rows.append(row("distilled from mlp", best_single, distil(best_single, mlp.model, mlp_know, f"from-mlp-{best_single}"),
                        mlp.metrics, s))
    header = (f"# Quality on {data.name}: {data.n_users:,} users, {data.n_items:,} items, {len(data):,} interactions, "
              f"split {split.kind}, full ranking, selection on validation NDCG@20\n\n"
              f"Device: CPU ({platform.machine()}), {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
              f"total {time.perf_counter() - start:.0f} s. Gap recovered = (distilled − student) / (teacher − student); "
              "the cross-family row's gap is against the MLP teacher.")
    (out / "quality.md").write_text(markdown(rows, header))
    summary = {"dataset": data.name, "split": split.kind, "rows": rows, "best_single_on_valid": best_single,
               "seconds": round(time.perf_counter() - start, 1), "args": vars(args)}
    (out / "quality.json").write_text(json.dumps(summary, indent=2))
    print(markdown(rows, header))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
