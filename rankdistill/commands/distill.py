"""rankdistill distill: train a small student from a saved teacher and write its model directory.

Without --data the student uses the teacher's data and split (read again from the teacher's config.json);
with --data it uses that data and the split options given. The student's vocabularies are its data's; the
teacher is matched to them by raw ID (:mod:`rankdistill.train.alignment`), so the teacher may come from another
log or list its IDs in another order. IDs the teacher lacks are counted and reported; the student then learns
from the teacher's top-K of the users it knows (cached mode). A teacher that trained on any of the student's
validation or test interactions (raw user, item pairs, :mod:`rankdistill.data.leakage`) is refused: it has
seen the student's test answers.

With --teacher-scores FILE instead of --teacher, any teacher's scores (user, item, score in raw IDs, for example
a production ranker's logged top-200) become the knowledge (:meth:`TeacherKnowledge.from_frame`): --data is
required, the rows whose IDs the data lacks are counted under ``teacher_scores.dropped`` in config.json, and the
losses that need the teacher's weights refuse. Nothing records what such a teacher trained on, so no leakage
guard can run: the scores must come from a model that never saw the student's validation and test rows.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from rankdistill.commands.options import command_device, configure_torch, run_config, split_args_given, split_from_args
from rankdistill.commands.train import fit_record, metrics_record, summary_line
from rankdistill.config import DistillConfig
from rankdistill.data.interactions import Interactions
from rankdistill.data.leakage import held_out_overlap
from rankdistill.data.load import DataSpec
from rankdistill.data.scores import read_scores
from rankdistill.data.split import Split, describe_dropped, make_split, split_arguments
from rankdistill.errors import RankdistillError
from rankdistill.losses.registry import KD_LOSSES, parse_kd
from rankdistill.modeldir import SavedModel, check_output, load, save_model
from rankdistill.pipeline import distill
from rankdistill.train import processes
from rankdistill.train.alignment import TeacherAlignment
from rankdistill.outlock import lock_output
from rankdistill.paths import input_path, output_file
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
    command_device(args.device)  # a device that is not there: refused before any path or file is looked at
    out = check_output(args.out)
    if args.teacher is not None and out == input_path(args.teacher, "teacher model directory"):
        raise RankdistillError(f"--out {args.out} is the teacher's directory: the student would replace the "
                               "teacher; name another --out")
    for option, given in (("--knowledge", args.knowledge), ("--teacher-scores", args.teacher_scores)):
        if given and out in Path(given).resolve().parents:  # the model directory replaces what is in it
            raise RankdistillError(f"{option} {given} is inside --out {args.out}, which the student's model "
                                   "directory replaces when it is written; keep the file outside it")
    if args.knowledge:
        (input_path if Path(args.knowledge).exists() else output_file)(args.knowledge, "--knowledge")
    with lock_output(out):  # before any work; one command at a time per --out
        if processes.launched_by_torchrun():  # one process per rank, tables sharded by torchrec's DMP
            processes.run_command(_main, args)  # exits every process cleanly with the status
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    configure_torch(args.threads)
    device = command_device(args.device)  # this rank's GPU under torchrun with NCCL
    config = run_config(args, device=str(device))
    student, kd = config.student, config.distill
    if args.teacher_scores is not None:
        data, split, source, knowledge, record = _from_scores(args, kd)
    else:
        data, split, source, knowledge, record = _from_teacher(args, kd, device)
    trained = distill(split, source, config, knowledge=knowledge, out_dir=args.out)  # checkpoints: resumable
    if not processes.is_main_process():  # under torchrun rank 0 writes the model
        return 0
    metrics = metrics_record(trained.metrics, split, config.ks)
    records = {"train": asdict(config.train), "distill": kd.to_dict(), "seed": args.seed, "ks": list(config.ks),
               **record, "fit": fit_record(trained)}
    if trained.auto is not None:
        records["auto"] = trained.auto
        print(f"--kd auto chose {trained.auto['chosen']}: {trained.auto['reason']}")
    save_model(args.out, trained.model, student, data, split, "distilled", records, metrics)
    print(describe_dropped(split.dropped))
    print(summary_line(f"student distilled with {trained.method or kd.kd}", args.out, trained, split))
    return 0


def _from_teacher(args: argparse.Namespace, kd: DistillConfig, device) -> tuple:
    """--teacher DIR: (data, split, the online teacher on the student's rows or None, knowledge or None,
    the config.json record)."""
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
    record = {"path": str(teacher.path.resolve()), "model": teacher.config["model"],
              "metrics": teacher.config.get("metrics", {}), "mode": "online" if source is not None else "cached",
              "alignment": alignment.record()}
    return data, split, source, knowledge, {"teacher": record}


def _from_scores(args: argparse.Namespace, kd: DistillConfig) -> tuple:
    """--teacher-scores FILE: (data, split, None, the knowledge from the file, the config.json record)."""
    if args.data is None:
        raise RankdistillError("--teacher-scores needs the student's data: pass it with --data (the scores' raw IDs "
                               "are looked up in its vocabularies)")
    if args.knowledge or args.cached_only:
        raise RankdistillError("--knowledge and --cached-only go with --teacher; --teacher-scores is already the "
                               "teacher's knowledge")
    refuse_online_terms(kd, "--teacher-scores gives only the teacher's scores of the items it lists, not its weights")
    frame = read_scores(args.teacher_scores)
    data = DataSpec.from_args(args).load()
    split = split_from_args(data, args)
    knowledge = TeacherKnowledge.from_frame(frame, data, kd.topk, exclude=split.train)
    users = int(knowledge.valid.any(dim=1).sum())
    dropped = ", ".join(f"{n:,} {why}" for why, n in knowledge.dropped.items() if n) or "nothing"
    print(f"teacher scores {args.teacher_scores}: {len(frame):,} rows, {users:,} of the data's {data.n_users:,} users "
          f"scored, top-{knowledge.k} kept per user; left out: {dropped}")
    record = {"path": str(Path(args.teacher_scores).resolve()), "rows": len(frame), "users": users, "k": knowledge.k,
              "dropped": knowledge.dropped}
    return data, split, None, knowledge, {"teacher_scores": record}
