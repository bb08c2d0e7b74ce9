"""The ``rankdistill`` command: offline jobs, files in and files out.

This module only parses arguments; each command lives in ``rankdistill/commands/<name>.py`` as a function
of the parsed arguments that returns the exit status.

User mistakes (bad paths, bad options, bad data) print one ``error: ...`` line on stderr and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from rankdistill.errors import RankdistillError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2, like every other user error
        raise RankdistillError(f"{self.prog}: {message}")


def _add_data_args(p: argparse.ArgumentParser, default: str = "the embedded synthetic data") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="interactions: CSV/TSV/parquet file, MovieLens u.data/ratings.dat/ratings.csv, "
                   f"or a LightGCN folder (train.txt, test.txt); default: {default}")
    g.add_argument("--format", choices=["csv", "tsv", "parquet", "movielens", "lightgcn"],
                   help="force the reader (default: detected from the path)")
    g.add_argument("--user-col", default="user")
    g.add_argument("--item-col", default="item")
    g.add_argument("--timestamp-col", default="timestamp", help="optional unless renamed; '' ignores it")
    g.add_argument("--rating-col", default="rating", help="optional unless renamed; '' ignores it")
    g.add_argument("--min-rating", type=float, help="only ratings >= this are positives (default: every row)")
    g.add_argument("--min-user-interactions", type=int, default=0,
                   help="k-core: drop users with fewer interactions, iterated with --min-item-interactions")
    g.add_argument("--min-item-interactions", type=int, default=0, help="k-core: drop items with fewer interactions")
    g.add_argument("--split", choices=["temporal-leave-one-out", "ratio", "time-cut", "given"],
                   help="default: the data set's given split (LightGCN), else temporal leave-one-out when there "
                   "are timestamps, else ratio")
    g.add_argument("--split-ratio", metavar="TRAIN,VALID,TEST",
                   help="shares of each user's interactions for --split ratio (default 0.8,0.1,0.1; seeded by --seed)")
    g.add_argument("--split-time", metavar="CUT",
                   help="--split time-cut: a date (2020-06-01), seconds since 1970, or a quantile such as 0.9 "
                   "(default); test is at or after the cut, validation as many interactions just before it")


def _defaults():
    """The RunConfig whose fields are every command's defaults (one place: flags and Python cannot drift)."""
    from rankdistill.pipeline import RunConfig

    return RunConfig()


def _add_kd_args(p: argparse.ArgumentParser) -> None:
    dd = _defaults().distill
    p.add_argument("--kd", default=dd.kd, help="distillation loss(es): NAME[:WEIGHT][+NAME[:WEIGHT]...], 'none', or "
                   f"'auto' (default): short pilots of --auto-menu from the same start, the best on validation is "
                   "finished, never one below the student trained alone")
    p.add_argument("--auto-menu", default=",".join(dd.auto_menu),
                   help=f"--kd auto: the specs it tries, comma-separated (default {','.join(dd.auto_menu)})")
    p.add_argument("--auto-pilot-epochs", type=int, default=dd.auto_pilot_epochs,
                   help="--kd auto: epochs of each pilot before the choice")
    p.add_argument("--temperature", type=float, default=dd.temperature)
    p.add_argument("--kd-topk", type=int, default=dd.topk, help="teacher top-K kept per user")
    p.add_argument("--kd-samples", type=int, default=dd.topk_samples, help="top-K items sampled per example")


def _add_score_args(g, score: str, temperatures: dict[str, tuple[float, str]]) -> None:
    """--score and one temperature flag per model it sets: {flag: (default, whose scores)}."""
    g.add_argument("--score", default=score, choices=["dot", "cosine"],
                   help=f"two_tower scores: inner product, or cosine / temperature (default {score})")
    for flag, (default, whose) in temperatures.items():
        g.add_argument(flag, type=float, default=default,
                       help=f"--score cosine: {whose} scores are cos(u, i) / this (default {default})")


def _add_model_args(p: argparse.ArgumentParser, model) -> None:
    g = p.add_argument_group("model")
    _add_score_args(g, model.score, {"--score-temperature": (model.temperature, "the model's")})
    g.add_argument("--model", default="two_tower", choices=["two_tower", "mlp", "lightgcn"],
                   help="two_tower: dot product of user and item vectors (MF without --tower-layers), servable by "
                   "nearest-neighbour search; mlp: user and item embeddings concatenated and scored by an MLP; "
                   "lightgcn: embeddings smoothed over the training graph (--layers), dot product")
    g.add_argument("--tower-layers", default="", help="two_tower: widths of the MLP on each side, e.g. 64,32")
    g.add_argument("--mlp-layers", default="64,32", help="mlp: hidden widths of the scoring MLP")
    g.add_argument("--layers", type=int, default=model.layers,
                   help=f"lightgcn: propagation layers over the training graph (default {model.layers})")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = _defaults().train
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs (early stopping on validation)")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--negatives", type=int, default=d.negatives, help="uniform negatives shared by each batch")
    g.add_argument("--loss", default=d.loss, help=f"supervised loss: softmax, bsl, bpr or bce (default {d.loss})")
    g.add_argument("--bsl-tau2", type=float, default=d.bsl_tau2, help="--loss bsl: weight of the negative side")
    g.add_argument("--in-batch-negatives", action=argparse.BooleanOptionalAction, default=d.in_batch_negatives,
                   help="also the batch's other positives as negatives, logQ-corrected (dot-product models)")
    g.add_argument("--l2", type=float, default=d.l2, help="L2 penalty on the batch's embedding rows")
    g.add_argument("--patience", type=int, default=d.patience, help="epochs without validation improvement")
    g.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine", "linear"])
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--clip-grad-norm", type=float, default=None, help="clip dense gradients to this L2 norm")
    g.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=int(os.environ.get("RANKDISTILL_THREADS", "1")),
                   help="CPU threads (default 1: on shared machines more threads spin and run slower)")
    g.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rankdistill", description="Distil large recommender ranking models into small ones.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="teacher, student alone and distilled student on one split, with a report")
    _add_data_args(p)
    _add_train_args(p)
    rc = _defaults()
    p.add_argument("--out", help="run directory (default runs/<timestamp>)")
    p.add_argument("--teacher-dim", type=int, default=rc.teacher.embedding_dim)
    p.add_argument("--student-dim", type=int, default=rc.student.embedding_dim)
    p.add_argument("--teacher-lr", type=float, default=rc.teacher.lr, help="embedding learning rate of the teacher")
    p.add_argument("--student-lr", type=float, default=rc.student.lr, help="embedding learning rate of the students")
    _add_score_args(p.add_argument_group("model (teacher and students)"), rc.teacher.score,
                    {"--teacher-score-temperature": (rc.teacher.temperature, "the teacher's"),
                     "--student-score-temperature": (rc.student.temperature, "the students'")})
    _add_kd_args(p)
    p.add_argument("--sizes", help="student embedding sizes to compare, e.g. 4,8,16,32,64: each is trained alone "
                   "and distilled; a plot of NDCG@20 against parameters goes into the run directory")
    p.set_defaults(handler="rankdistill.commands.run:main")

    p = sub.add_parser("train", help="train a teacher on the true labels and write a model directory")
    _add_data_args(p)
    _add_train_args(p)
    p.add_argument("--out", required=True, help="model directory to write (config, vocabularies, weights)")
    p.add_argument("--dim", type=int, default=rc.teacher.embedding_dim, help="embedding size")
    _add_model_args(p, rc.teacher)
    p.add_argument("--lr", type=float, default=rc.teacher.lr, help="embedding learning rate")
    p.set_defaults(handler="rankdistill.commands.train:main")

    p = sub.add_parser("distill", help="distil a saved teacher into a small student and write its model directory")
    p.add_argument("--teacher", required=True, help="the teacher's model directory")
    p.add_argument("--out", required=True, help="model directory to write for the student")
    p.add_argument("--dim", type=int, default=rc.student.embedding_dim, help="the student's embedding size")
    _add_model_args(p, rc.student)
    p.add_argument("--lr", type=float, default=rc.student.lr, help="the student's embedding learning rate")
    p.add_argument("--knowledge", metavar="FILE.parquet", help="the teacher's top-K per user: reused when the "
                   "file exists, else computed from the teacher and written there")
    p.add_argument("--cached-only", action="store_true", help="distil from --knowledge alone: the teacher's "
                   "weights take no part in training (losses that need them refuse)")
    _add_kd_args(p)
    _add_data_args(p, "the teacher's data, filters and split")
    _add_train_args(p)
    p.set_defaults(handler="rankdistill.commands.distill:main")

    p = sub.add_parser("recommend", help="top-K items per user of a saved model, with raw IDs, to parquet or CSV")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--users", help="file of user IDs: parquet/CSV with a 'user' column (or one column), or .txt "
                   "with one ID per line (default: every user of the model)")
    p.add_argument("--user-col", default="user", help="column of --users holding the IDs")
    p.add_argument("--k", type=int, default=100, help="items per user")
    p.add_argument("--out", required=True, help="output .parquet (or .csv/.tsv): user, item, score, rank")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RANKDISTILL_THREADS", "1")))
    p.set_defaults(handler="rankdistill.commands.recommend:main")

    p = sub.add_parser("evaluate", help="ranking metrics of a run file against qrels (any recommender), or of a "
                       "saved model", description="Either --run RUN --qrels QRELS: metrics of any recommender's "
                       "output (like trec_eval or ranx), or --model MODEL_DIR: full-ranking test metrics of a "
                       "saved model. Prints one JSON object of means over users with at least one relevant item.")
    p.add_argument("--run", help="RUN file (.csv/.tsv/.parquet) with columns user,item,score")
    p.add_argument("--qrels", help="QRELS file (.csv/.tsv/.parquet) with columns user,item and optionally relevance "
                   "(graded: gain = relevance; > 0 is relevant)")
    p.add_argument("--k", default="10,20", help="cut-offs, comma-separated (default 10,20)")
    p.add_argument("--metrics", default="ndcg,recall,precision,hit,mrr,map",
                   help="comma-separated, from ndcg, recall, precision, hit, mrr, map (default: all)")
    p.add_argument("--per-user", metavar="FILE.parquet", help="also write per-user values to this parquet file")
    p.add_argument("--model", metavar="MODEL_DIR",
                   help="a saved model directory: evaluate it on its test split instead of a run file")
    p.add_argument("--data", help="with --model: evaluate on this data (same vocabularies) instead of the model's own")
    p.add_argument("--out", help="with --model: where to write the metrics JSON (default MODEL_DIR/metrics.json)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RANKDISTILL_THREADS", "1")))
    p.set_defaults(handler="rankdistill.commands.evaluate:main")

    _add_serving_commands(sub)

    p = sub.add_parser("data", help="data utilities")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    s = dsub.add_parser("synth", help="write a synthetic implicit-feedback data set")
    s.add_argument("--users", type=int, default=6000)
    s.add_argument("--items", type=int, default=3000)
    s.add_argument("--interactions", type=int, default=300_000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output .parquet or .csv")
    s.set_defaults(handler="rankdistill.commands.data:synth")
    return parser


def _add_serving_commands(sub) -> None:
    """export and serve-check (rankdistill/serving/)."""
    from rankdistill.serving.index import IndexConfig

    ic = IndexConfig()
    p = sub.add_parser("export", help="user and item vectors (parquet, raw IDs), a faiss index and a manifest "
                       "for nearest-neighbour serving", description="Export a two_tower or lightgcn model directory "
                       "for serving: users.parquet, items.parquet, items.faiss (faiss-cpu: pip install "
                       "'rankdistill[serve]') and manifest.json (dims, counts, metric, score rule, test metrics).")
    p.add_argument("--model", required=True, help="model directory (rankdistill train / distill)")
    p.add_argument("--out", required=True, help="export directory to write (replaced if it is an export)")
    p.add_argument("--quantize", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="precision of the stored tables; int8 is fbgemm's fused 8-bit row-wise format (per-row "
                   "scale and bias); fp16/int8 also measure the test metrics after quantisation (default fp32)")
    p.add_argument("--index", default=ic.kind, choices=["flat", "hnsw"],
                   help="flat: exact inner-product search (default); hnsw: approximate (IndexHNSWFlat)")
    p.add_argument("--hnsw-m", type=int, default=ic.hnsw_m, help=f"hnsw: neighbours per node (default {ic.hnsw_m})")
    p.add_argument("--ef-construction", type=int, default=ic.ef_construction,
                   help=f"hnsw: candidate list while building (default {ic.ef_construction})")
    p.add_argument("--ef-search", type=int, default=ic.ef_search,
                   help=f"hnsw: candidate list per query, >= k (default {ic.ef_search})")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RANKDISTILL_THREADS", "1")))
    p.add_argument("--data", help="--quantize fp16/int8 measure the test metrics on the model's recorded data and "
                   "split; this reads the data from here instead (same vocabularies)")
    p.add_argument("--format", choices=["csv", "tsv", "parquet", "movielens", "lightgcn"],
                   help="force the reader of --data (default: detected from the path)")
    p.set_defaults(handler="rankdistill.commands.export:main")

    p = sub.add_parser("serve-check", help="recall@k of an export's index against exact scoring and per-user "
                       "query latency p50/p99 on this CPU")
    p.add_argument("--export", required=True, help="export directory (rankdistill export)")
    p.add_argument("--k", type=int, default=100, help="items per query (default 100)")
    p.add_argument("--users", type=int, default=1000, help="users measured, a seeded sample (default 1000)")
    p.add_argument("--ef-search", type=int, help="hnsw: override the export's efSearch")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RANKDISTILL_THREADS", "1")))
    p.set_defaults(handler="rankdistill.commands.serve_check:main")


SHARDED_COMMANDS = ("train", "distill")  # the commands that train with DistributedModelParallel under torchrun


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command not in SHARDED_COMMANDS:
            raise RankdistillError(f"'rankdistill {args.command}' runs in one process; under torchrun only "
                                   f"{' and '.join(SHARDED_COMMANDS)} are sharded (start it without torchrun)")
        module, _, func = args.handler.partition(":")  # commands import torch lazily: --help stays fast
        return getattr(importlib.import_module(module), func)(args)
    except RankdistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
