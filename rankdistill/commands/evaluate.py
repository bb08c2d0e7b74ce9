"""rankdistill evaluate: ranking metrics of any recommender's output, or of a saved model.

- ``--run RUN --qrels QRELS [--k 10,20] [--metrics ...] [--per-user FILE.parquet]``: RUN has columns
  user,item,score and QRELS user,item with an optional relevance (CSV, TSV or parquet by extension). Prints
  one JSON object of means over users with at least one relevant item, keys ``metric@k`` ordered by k then
  metric (see :mod:`rankdistill.evaluation.run_file` for the conventions).
- ``--model MODEL_DIR``: handled by :mod:`rankdistill.commands.evaluate_model`.
"""

from __future__ import annotations

import argparse
import json

from rankdistill.commands.options import command_device, configure_torch, parse_ks, parse_metrics  # noqa: F401
from rankdistill.errors import RankdistillError


def main(args: argparse.Namespace) -> int:
    if getattr(args, "model", None):
        if args.run or args.qrels:
            raise RankdistillError("give either --model MODEL_DIR or --run RUN --qrels QRELS, not both")
        from rankdistill.commands import evaluate_model  # another command's module, imported only when used

        return evaluate_model.main(args)
    if not args.run or not args.qrels:
        missing = " and ".join(name for name, v in (("--run", args.run), ("--qrels", args.qrels)) if not v)
        raise RankdistillError(f"evaluate needs {missing}: either --run RUN --qrels QRELS (a recommender's output "
                               "against judgements) or --model MODEL_DIR (a saved model on its test split)")
    ks, metrics = parse_ks(args.k), parse_metrics(args.metrics)
    if args.per_user and not str(args.per_user).lower().endswith((".parquet", ".pq")):
        raise RankdistillError(f"--per-user must end in .parquet, got {args.per_user}")
    if args.per_user:
        from rankdistill.paths import output_file

        output_file(args.per_user, "--per-user")  # before any work
    from rankdistill.evaluation.run_file import evaluate_run_files

    configure_torch(getattr(args, "threads", 1) or 1)
    command_device(getattr(args, "device", "auto"))  # checked like everywhere; run files are scored on the CPU
    means = evaluate_run_files(args.run, args.qrels, ks, metrics, args.per_user)
    print(json.dumps(means))
    return 0
