"""rankdistill run: teacher, student alone and distilled student on one split, with a report."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.data.load import DataSpec
from rankdistill.errors import RankdistillError
from rankdistill.outlock import lock_output
from rankdistill.paths import output_dir
from rankdistill.pipeline import RunConfig, run
from rankdistill.report import build_report, table, write_report


def configure_torch(threads: int) -> None:
    import torch

    if threads < 1:
        raise RankdistillError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def parse_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise RankdistillError(f"--sizes must be comma-separated integers like 4,8,16, got {text!r}") from None
    if any(d < 1 for d in sizes):
        raise RankdistillError(f"--sizes must be positive, got {text!r}")
    return sizes


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The ModelConfig of --dim, --lr, --model, --tower-layers, --mlp-layers and --layers (train and distill)."""
    score = args.score if args.model == "two_tower" else "dot"  # mlp: its MLP; lightgcn: the dot product
    return ModelConfig(kind=args.model, embedding_dim=args.dim, lr=args.lr,
                       tower_layers=parse_widths(args.tower_layers, "--tower-layers"),
                       mlp_layers=parse_widths(args.mlp_layers, "--mlp-layers"), score=score,
                       temperature=args.score_temperature, layers=args.layers)


def distill_config(args: argparse.Namespace) -> DistillConfig:
    """The DistillConfig of --kd, --temperature, --kd-topk, --kd-samples, --auto-menu, --auto-pilot-epochs."""
    menu = tuple(m.strip() for m in args.auto_menu.split(",") if m.strip())
    return DistillConfig(kd=args.kd, temperature=args.temperature, topk=args.kd_topk, topk_samples=args.kd_samples,
                         auto_menu=menu, auto_pilot_epochs=args.auto_pilot_epochs)


def parse_widths(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise RankdistillError(f"{option} must be comma-separated integers like 64,32, got {text!r}") from None


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the training options every training command shares (cli._add_train_args)."""
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, negatives=args.negatives, loss=args.loss,
                       bsl_tau2=args.bsl_tau2, in_batch_negatives=args.in_batch_negatives, l2=args.l2, patience=args.patience, lr_schedule=args.lr_schedule,
                       warmup_steps=args.warmup_steps, clip_grad_norm=args.clip_grad_norm, bf16=not args.no_bf16,
                       seed=args.seed)


def main(args: argparse.Namespace) -> int:
    configure_torch(args.threads)
    defaults = RunConfig()
    config = RunConfig(
        teacher=replace(defaults.teacher, embedding_dim=args.teacher_dim, lr=args.teacher_lr, score=args.score,
                        temperature=args.teacher_score_temperature),
        student=replace(defaults.student, embedding_dim=args.student_dim, lr=args.student_lr, score=args.score,
                        temperature=args.student_score_temperature),
        train=train_config(args),
        distill=distill_config(args),
        split=args.split, split_ratio=args.split_ratio, split_time=args.split_time,
        seed=args.seed, quiet=args.quiet, sizes=parse_sizes(args.sizes),
    )
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    with lock_output(output_dir(out, replaces=False)):  # before any work; one command at a time per --out
        return _run(args, config, out)


def _run(args: argparse.Namespace, config: RunConfig, out: Path) -> int:
    data = DataSpec.from_args(args).load()
    result = run(data, config, out)
    report = build_report(result, config)
    json_path, md_path = write_report(report, out)
    print(table(report))
    gap = ", ".join(f"{k} {'n/a' if v is None else f'{100 * v:.0f}%'}" for k, v in report["gap_recovered"].items())
    print(f"\ngap recovered: {gap}   ({report['seconds']:.1f} s)\nwrote {json_path} and {md_path}")
    return 0
