"""rankdistill distill: train a small student from a saved teacher and write its model directory.

Without --data the student uses the teacher's data and split (read again from the teacher's config.json);
with --data it uses that data and the split options given. The student's vocabularies are its data's; the
teacher is matched to them by raw ID (:mod:`rankdistill.train.alignment`), so the teacher may come from another
log or list its IDs in another order. IDs the teacher lacks are counted and reported; the student then learns
from the teacher's top-K of the users it knows (cached mode). A teacher that trained on any of the student's
validation or test interactions (raw user, item pairs, :mod:`rankdistill.data.leakage`) is refused: it has
seen the student's test answers.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from rankdistill.commands.train import fit_record, metrics_record, split_args_given, split_from_args, summary_line
from rankdistill.config import DistillConfig
from rankdistill.data.interactions import Interactions
from rankdistill.data.leakage import held_out_overlap
from rankdistill.data.load import DataSpec
from rankdistill.data.split import Split, make_split, split_arguments
from rankdistill.errors import RankdistillError
from rankdistill.losses.registry import KD_LOSSES, parse_kd
from rankdistill.modeldir import SavedModel, load, save_model
from rankdistill.pipeline import RunConfig, distill
from rankdistill.train import distributed
from rankdistill.train.alignment import TeacherAlignment
from rankdistill.train.knowledge import TeacherKnowledge


def check_no_leak(teacher: SavedModel, data: Interactions, split: Split) -> None:
    """Refuse a teacher whose training interactions include any of ``split``'s validation or test ones, by raw
    (user, item) pair (the count in the message)."""
    users, items = teacher.train_pairs()
    to_user, to_item = data.user_vocab.encode(teacher.user_vocab.ids), data.item_vocab.encode(teacher.item_vocab.ids)
    leaked, held = held_out_overlap(to_user[users], to_item[items], split)
    if leaked:
        raise RankdistillError(
            f"the teacher {teacher.path} trained on {leaked:,} of the student's {held:,} validation and test "
            "interactions (matched by raw user and item IDs): the teacher has seen the student's test interactions; "
            "leave out --data and the --split options to use the teacher's own split, or train the teacher on data "
            "without the student's held-out rows")


def refuse_online_terms(kd: DistillConfig, why: str) -> None:
    """Refuse the losses of ``kd`` (``--kd auto``: of its menu) that need the teacher's weights, saying ``why``
    there are none to use."""
    specs = kd.auto_menu if kd.kd.strip() == "auto" else (kd.kd,)
    needing = sorted({name for spec in specs for name, _ in parse_kd(spec) if KD_LOSSES[name].needs_teacher})
    if needing:
        able = ", ".join(n for n, t in KD_LOSSES.items() if not t.needs_teacher)
        raise RankdistillError(f"--kd {'+'.join(needing)} needs the teacher's representations of every user and item, "
                               f"but {why}; choose a loss that works from the teacher's top-K ({able})")


def main(args: argparse.Namespace) -> int:
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
    if args.data is not None or split_args_given(args):
        split = split_from_args(data, args)
    else:
        split = make_split(data, **split_arguments(teacher.split_options))
    alignment = TeacherAlignment.by_raw_id(teacher.user_vocab, teacher.item_vocab, data.user_vocab, data.item_vocab)
    alignment.check(str(teacher.path))
    check_no_leak(teacher, data, split)
    aligned = alignment.ranker(teacher.model)  # the teacher on the student's rows
    if not alignment.complete:
        refuse_online_terms(kd, f"{alignment.describe_missing()} (matched by raw ID)")
        print(f"{alignment.describe_missing()} (matched by raw ID): the student learns from the teacher's "
              f"top-{kd.topk} of the users it holds (cached mode)")
    knowledge = None
    if args.knowledge:  # reuse the teacher's cached top-K lists, or compute and write them once
        knowledge = TeacherKnowledge.load_or_compute(args.knowledge, split, kd.topk, aligned)
    elif args.cached_only:
        raise RankdistillError("--cached-only distils from a knowledge file: give it with --knowledge FILE.parquet")
    elif not alignment.complete:
        knowledge = TeacherKnowledge.compute(aligned, split, kd.topk)
    source = None if args.cached_only or not alignment.complete else aligned
    trained = distill(split, source, config, knowledge=knowledge, out_dir=args.out)  # checkpoints: resumable
    if not distributed.is_main_process():  # under torchrun rank 0 writes the model
        return 0
    metrics = metrics_record(trained.metrics, split, config.ks)
    records = {"train": asdict(config.train), "distill": kd.to_dict(), "seed": args.seed, "ks": list(config.ks),
               "teacher": {"path": str(teacher.path.resolve()), "model": teacher.config["model"],
                           "metrics": teacher.config.get("metrics", {}),
                           "mode": "online" if source is not None else "cached", "alignment": alignment.record()},
               "fit": fit_record(trained)}
    if trained.auto is not None:
        records["auto"] = trained.auto
        print(f"--kd auto chose {trained.auto['chosen']}: {trained.auto['reason']}")
    save_model(args.out, trained.model, student, data, split, "distilled", records, metrics)
    print(summary_line(f"student distilled with {trained.method or kd.kd}", args.out, trained, split))
    return 0
