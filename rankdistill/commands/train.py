"""rankdistill train: train one model (a teacher) on the true labels and write a model directory.

Also the records the other file-in, file-out commands share: the metrics record written to metrics.json and
printed by ``evaluate --model``, the fit record and the summary line.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from rankdistill.commands.options import (  # noqa: F401 (split_from_args, ...: their old home, re-exported)
    command_device, configure_torch, run_config, split_args_given, split_from_args)
from rankdistill.data.load import DataSpec
from rankdistill.data.split import Split, describe_dropped
from rankdistill.modeldir import check_output, save_model
from rankdistill.outlock import lock_output
from rankdistill.pipeline import REPORT_METRICS, TrainedModel, train_model
from rankdistill.train import processes


def metrics_record(values: dict[str, float], split: Split, ks: tuple[int, ...], on: str = "test",
                   metrics: tuple[str, ...] = REPORT_METRICS) -> dict:
    """What metrics.json holds: the metric values with what they were measured on (and what reading,
    filtering and the split dropped before)."""
    target = split.test if on == "test" else split.valid
    return {"on": on, "split": split.options or {"kind": split.kind},
            "users": int((target.lengths() > 0).sum()), "dropped": dict(split.dropped),
            "candidates": "all-unseen-items",
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
    command_device(args.device)  # a device that is not there: refused before any path or lock is touched
    with lock_output(check_output(args.out)):  # before any work; one command at a time per --out
        if processes.launched_by_torchrun():  # one process per rank, tables sharded by torchrec's DMP
            processes.run_command(_main, args)  # exits every process cleanly with the status
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    configure_torch(args.threads)
    config = run_config(args, device=str(command_device(args.device)))  # this rank's GPU under torchrun + NCCL
    model_cfg = config.teacher
    spec = DataSpec.from_args(args)
    data = spec.load()
    split = split_from_args(data, args)
    trained = train_model(split, model_cfg, config, "teacher", out_dir=args.out)  # checkpoints: resumable
    if not processes.is_main_process():  # under torchrun rank 0 writes the model
        return 0
    metrics = metrics_record(trained.metrics, split, config.ks)
    records = {"train": asdict(config.train), "seed": args.seed, "ks": list(config.ks), "fit": fit_record(trained)}
    save_model(args.out, trained.model, model_cfg, data, split, "teacher", records, metrics)
    print(describe_dropped(split.dropped))
    print(summary_line("teacher", args.out, trained, split))
    return 0
