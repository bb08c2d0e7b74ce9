"""rankdistill evaluate --model MODEL_DIR: full-ranking test metrics of a saved model.

The data the model was trained on is read again and split again from what config.json records (the same
options give the same split); data whose vocabularies differ from the model's is refused. The metrics are
printed as one JSON object on stdout and written to MODEL_DIR/metrics.json (or --out).

Called by ``rankdistill.commands.evaluate.main`` when ``--model`` is given; it reads ``args.model`` and, when
present, ``args.out``, ``args.threads``, ``args.k`` and ``args.metrics`` (comma-separated; default: the
model's cut-offs and ndcg, recall, mrr) and ``args.data``, to evaluate on another file with the same
vocabularies (read with the columns and filters config.json records).
"""

from __future__ import annotations

import argparse
import json
import os
from contextlib import nullcontext
from pathlib import Path

from rankdistill.commands.options import command_device, configure_torch, parse_ks, parse_metrics
from rankdistill.commands.train import metrics_record
from rankdistill.data.load import DataSpec
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.modeldir import METRICS, load, write_metrics
from rankdistill.outlock import lock_output
from rankdistill.paths import output_file
from rankdistill.pipeline import REPORT_METRICS


def evaluate_model_dir(path: str, data: DataSpec | str | None = None, ks: tuple[int, ...] | None = None,
                       metrics: tuple[str, ...] = REPORT_METRICS, device: str = "cpu",
                       data_format: str | None = None) -> dict:
    """The metrics record of the model directory ``path`` (see commands.train.metrics_record), with the
    model's path and data, ranked on ``device``. ``data``: None, the model's recorded data; a path, that file
    read as the model's data was (the recorded columns and filters; ``data_format`` forces its reader); a
    DataSpec, as it says. ``ks`` default:
    the cut-offs the model was trained and reported with."""
    saved = load(path, device)
    if isinstance(data, (str, Path)):
        data = saved.data_at(str(data), data_format)
    _, split = saved.load_split(data)
    ks = tuple(ks or saved.config.get("ks", (10, 20)))
    values = evaluate(saved.model, split, "test", ks, metrics)
    source = (data or saved.data_spec).describe()
    return {"model": str(saved.path.resolve()), "name": saved.name, "data": source,
            **metrics_record(values, split, ks, metrics=metrics)}


def main(args: argparse.Namespace) -> int:
    configure_torch(getattr(args, "threads", None) or int(os.environ.get("RANKDISTILL_THREADS", "1")))
    if getattr(args, "out", None):
        output_file(args.out)  # before any work
    elif Path(args.model).is_dir():  # a read-only model directory: said before the evaluation, not after
        output_file(Path(args.model) / METRICS, "metrics file (choose another with --out)")
    spec = getattr(args, "data", None) or None  # another file, read with the columns and filters the model recorded
    ks = parse_ks(args.k) if getattr(args, "k", None) else None
    metrics = parse_metrics(args.metrics) if getattr(args, "metrics", None) else REPORT_METRICS
    device = command_device(getattr(args, "device", "auto"))
    out = getattr(args, "out", None)
    # into the model directory: not while a train/distill --out of that directory replaces it
    with nullcontext() if out else lock_output(args.model, "--model"):
        record = evaluate_model_dir(args.model, spec, ks, metrics, device, getattr(args, "format", None))
        write_metrics(args.model, record, out)
    print(json.dumps(record))
    return 0
