"""rankdistill distill: train a small student from a saved teacher and write its model directory.

Without --data the student uses the teacher's data and split (read again from the teacher's config.json);
with --data it uses that data and the split options given. Either way the data must have the teacher's
vocabularies, and the split must be the teacher's: a teacher trained on another split has seen the student's
test interactions.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from rankdistill.commands.train import fit_record, metrics_record, split_args_given, split_from_args, summary_line
from rankdistill.data.load import DataSpec
from rankdistill.data.split import make_split, parse_cut, split_arguments
from rankdistill.errors import RankdistillError
from rankdistill.modeldir import check_output, load, save_model
from rankdistill.outlock import lock_output
from rankdistill.paths import input_path, output_file
from rankdistill.pipeline import RunConfig, distill
from rankdistill.train import distributed
from rankdistill.train.knowledge import TeacherKnowledge


def same_split(a: dict, b: dict) -> bool:
    """Whether two Split.options cut the same split (a cut of "0.9" and 0.9 is one split)."""
    if a.get("kind") != b.get("kind"):
        return False
    kind = a["kind"]
    if kind == "ratio":
        return a.get("seed") == b.get("seed") and all(abs(x - y) < 1e-9 for x, y in zip(a["ratio"], b["ratio"]))
    if kind == "time-cut":
        return parse_cut(a["cut"]) == parse_cut(b["cut"])
    if kind == "given":
        return a.get("seed") == b.get("seed")
    return True


def main(args: argparse.Namespace) -> int:
    out = check_output(args.out)
    if out == input_path(args.teacher, "teacher model directory"):
        raise RankdistillError(f"--out {args.out} is the teacher's directory: the student would replace the "
                               "teacher; name another --out")
    if args.knowledge:
        (input_path if Path(args.knowledge).exists() else output_file)(args.knowledge, "--knowledge")
    with lock_output(out):  # before any work; one command at a time per --out
        if distributed.launched_by_torchrun():  # one process per rank, tables sharded by torchrec's DMP
            distributed.run_command(_main, args)  # exits every process cleanly with the status
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from rankdistill.commands.run import configure_torch, distill_config, model_config, train_config

    configure_torch(args.threads)
    student = model_config(args)
    kd = distill_config(args)
    device = distributed.process_device()  # the CPU, or this rank's GPU under torchrun with NCCL
    config = RunConfig(student=student, train=train_config(args), distill=kd, seed=args.seed, quiet=args.quiet,
                       device=str(device))
    teacher = load(args.teacher, device)
    if args.data is not None:
        data = DataSpec.from_args(args).load()
    elif teacher.data_spec is None:
        raise RankdistillError(f"teacher {teacher.path} records no data path (trained on an in-memory table); "
                               "pass the data with --data")
    else:
        data = teacher.data_spec.load()
    teacher.check_vocab(data, "distil on the data the teacher was trained on (same file, format, columns and "
                              "filters), or train a teacher on this data first")
    if args.data is not None or split_args_given(args):
        split = split_from_args(data, args)
        if not same_split(split.options, teacher.split_options):
            raise RankdistillError(
                f"the teacher {teacher.path} was trained on the split {teacher.split_options} and the student's "
                f"would be {split.options}: the teacher has seen the student's test interactions; leave out the "
                "--split options (and --data) to use the teacher's split"
            )
    else:
        split = make_split(data, **split_arguments(teacher.split_options))
    knowledge = None
    if args.knowledge:  # reuse the teacher's cached top-K lists, or compute and write them once
        knowledge = TeacherKnowledge.load_or_compute(args.knowledge, split, kd.topk, teacher.model)
    elif args.cached_only:
        raise RankdistillError("--cached-only distils from a knowledge file: give it with --knowledge FILE.parquet")
    source = None if args.cached_only else teacher.model
    trained = distill(split, source, config, knowledge=knowledge, out_dir=args.out)  # checkpoints: resumable
    if not distributed.is_main_process():  # under torchrun rank 0 writes the model
        return 0
    metrics = metrics_record(trained.metrics, split, config.ks)
    records = {"train": asdict(config.train), "distill": kd.to_dict(), "seed": args.seed, "ks": list(config.ks),
               "teacher": {"path": str(teacher.path.resolve()), "model": teacher.config["model"],
                           "metrics": teacher.config.get("metrics", {})},
               "fit": fit_record(trained)}
    if trained.auto is not None:
        records["auto"] = trained.auto
        print(f"--kd auto chose {trained.auto['chosen']}: {trained.auto['reason']}")
    save_model(args.out, trained.model, student, data, split, "distilled", records, metrics)
    print(summary_line(f"student distilled with {trained.method or kd.kd}", args.out, trained, split))
    return 0
