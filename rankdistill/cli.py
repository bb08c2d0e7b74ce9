"""The ``rankdistill`` command: offline jobs, files in and files out.

This module only parses arguments; each command lives in ``rankdistill/commands/<name>.py`` as a function
of the parsed arguments that returns the exit status.

User mistakes (bad paths, bad options, bad data) and a broken environment (a full disk, a read-only folder:
:func:`rankdistill.paths.environment_error`) print one ``error: ...`` line on stderr and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from rankdistill.commands.options import JOB_COMMANDS, add_job_options, resolve
from rankdistill.errors import RankdistillError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2, like every other user error
        raise RankdistillError(f"{self.prog}: {message}")


def _add_device_arg(p: argparse.ArgumentParser, what: str) -> None:
    from rankdistill.pipeline import RunConfig

    device = RunConfig.__dataclass_fields__["device"]
    p.add_argument("--device", choices=device.metadata["choices"], default=device.default,
                   help=f"{what}: cpu, cuda, or auto (CUDA when torch sees a GPU; default {device.default})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, with the options of run, train and distill resolved (flags, then the
    --config job file, then the defaults: rankdistill.commands.options.resolve)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "config":  # the options after --show COMMAND are that command's
        args.rest = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    elif args.command in JOB_COMMANDS:
        resolve(args)
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rankdistill", description="Distil large recommender ranking models into small ones.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="teacher, student alone and distilled student on one split, with a report")
    add_job_options(p, "run")
    p.set_defaults(handler="rankdistill.commands.run:main")

    p = sub.add_parser("train", help="train a teacher on the true labels and write a model directory")
    add_job_options(p, "train")
    p.set_defaults(handler="rankdistill.commands.train:main")

    p = sub.add_parser("distill", help="distil a saved teacher into a small student and write its model directory")
    add_job_options(p, "distill")
    p.set_defaults(handler="rankdistill.commands.distill:main")

    p = sub.add_parser("config", help="the resolved configuration of run, train or distill, as a job file",
                       description="Prints every option of COMMAND as TOML (defaults, then the --config file, then "
                       "the flags given after COMMAND's name); --config JOB.toml reads it back.",
                       usage="rankdistill config --show {run,train,distill} [--config JOB.toml] [COMMAND's flags]")
    p.add_argument("--show", required=True, choices=JOB_COMMANDS, metavar="COMMAND",
                   help="run, train or distill; the options after it are that command's")
    p.set_defaults(handler="rankdistill.commands.config:show")

    p = sub.add_parser("recommend", help="top-K items per user of a saved model, with raw IDs, to parquet or CSV")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--users", help="file of user IDs: parquet/CSV with a 'user' column (or one column), or .txt "
                   "with one ID per line (default: every user of the model)")
    p.add_argument("--user-col", default="user", help="column of --users holding the IDs")
    p.add_argument("--k", type=int, default=100, help="items per user")
    p.add_argument("--out", required=True, help="output .parquet (or .csv/.tsv): user, item, score, rank")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RANKDISTILL_THREADS", "1")))
    _add_device_arg(p, "where the model scores the items")
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
    p.add_argument("--data", help="with --model: evaluate on this file instead of the model's own data, read with "
                   "the columns and filters the model recorded (same vocabularies)")
    p.add_argument("--format", choices=["csv", "tsv", "parquet", "movielens", "lightgcn"],
                   help="with --data: force its reader (default: the format the model forced, else detected)")
    p.add_argument("--out", help="with --model: where to write the metrics JSON (default MODEL_DIR/metrics.json)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RANKDISTILL_THREADS", "1")))
    _add_device_arg(p, "with --model: where the model ranks the items (run files are evaluated on the CPU)")
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
                   "split; this reads the data from here instead, with the recorded columns and filters (same "
                   "vocabularies)")
    p.add_argument("--format", choices=["csv", "tsv", "parquet", "movielens", "lightgcn"],
                   help="force the reader of --data (default: the format the model forced, else detected)")
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
        args = parse_args(argv)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command not in SHARDED_COMMANDS:
            raise RankdistillError(f"'rankdistill {args.command}' runs in one process; under torchrun only "
                                   f"{' and '.join(SHARDED_COMMANDS)} are sharded (start it without torchrun)")
        module, _, func = args.handler.partition(":")  # commands import torch lazily: --help stays fast
        return getattr(importlib.import_module(module), func)(args)
    except RankdistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:  # a full disk or read-only folder no check caught: one line, status 2
        from rankdistill.paths import environment_error

        if (error := environment_error(e)) is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
