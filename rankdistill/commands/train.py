"""rankdistill train: train one model (a teacher) on the true labels and write a model directory.

Also the helpers the other file-in, file-out commands share: the data and split of the command-line options,
and the metrics record written to metrics.json and printed by ``evaluate --model``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from rankdistill.data.interactions import Interactions
from rankdistill.data.load import DataSpec
from rankdistill.data.split import Split, make_split
from rankdistill.modeldir import check_output, save_model
from rankdistill.outlock import lock_output
from rankdistill.pipeline import REPORT_METRICS, RunConfig, TrainedModel, train_model
from rankdistill.train import distributed


def split_from_args(data: Interactions, args: argparse.Namespace) -> Split:
    """The split named by --split/--split-ratio/--split-time (seeded by --seed)."""
    return make_split(data, getattr(args, "split", None), getattr(args, "seed", 0),
                      getattr(args, "split_ratio", None), getattr(args, "split_time", None))


def split_args_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) is not None for name in ("split", "split_ratio", "split_time"))


def metrics_record(values: dict[str, float], split: Split, ks: tuple[int, ...], on: str = "test",
                   metrics: tuple[str, ...] = REPORT_METRICS) -> dict:
    """What metrics.json holds: the metric values with what they were measured on."""
    target = split.test if on == "test" else split.valid
    return {"on": on, "split": split.options or {"kind": split.kind},
            "users": int((target.lengths() > 0).sum()), "candidates": "all-unseen-items",
            "k": list(ks), "metrics_computed": list(metrics),
            "metrics": {k: round(float(v), 6) for k, v in values.items()}}


def fit_record(trained: TrainedModel) -> dict:
    fit = trained.fit
    return {"best_epoch": fit.best_epoch, "epochs_run": len(fit.history), "seconds": round(fit.seconds, 2),
            "best_valid": fit.best_valid, "params": trained.model.num_parameters()} if fit else {}


def summary_line(name: str, out: str, trained: TrainedModel, split: Split) -> str:
    m = trained.metrics
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("ndcg@10", "recall@20") if k in m)
    return (f"wrote {name} (dim {trained.model.embedding_dim}, {trained.model.num_parameters():,} params, "
            f"{split.kind} split) to {out}; test {shown}")


def main(args: argparse.Namespace) -> int:
    with lock_output(check_output(args.out)):  # before any work; one command at a time per --out
        if distributed.launched_by_torchrun():  # one process per rank, tables sharded by torchrec's DMP
            distributed.run_command(_main, args)  # exits every process cleanly with the status
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from rankdistill.commands.run import configure_torch, model_config, train_config

    configure_torch(args.threads)
    model_cfg = model_config(args)
    config = RunConfig(teacher=model_cfg, train=train_config(args), seed=args.seed, quiet=args.quiet,
                       device=str(distributed.process_device()))
    spec = DataSpec.from_args(args)
    data = spec.load()
    split = split_from_args(data, args)
    trained = train_model(split, model_cfg, config, "teacher", out_dir=args.out)  # checkpoints: resumable
    if not distributed.is_main_process():  # under torchrun rank 0 writes the model
        return 0
    metrics = metrics_record(trained.metrics, split, config.ks)
    records = {"train": asdict(config.train), "seed": args.seed, "ks": list(config.ks), "fit": fit_record(trained)}
    save_model(args.out, trained.model, model_cfg, data, split, "teacher", records, metrics)
    print(summary_line("teacher", args.out, trained, split))
    return 0
