"""rankdistill export: a model directory's user and item vectors for nearest-neighbour serving.

Writes EXPORT_DIR (layout in :mod:`rankdistill.serving.export`) and prints its manifest's summary as one
JSON object. ``--quantize fp16|int8`` stores the tables at reduced precision and measures the test metrics of
the quantised vectors next to fp32 (the model's data is read and split again for that, as ``evaluate --model``
does). Without faiss the vectors and manifest are still written, with a warning naming what to install.
"""

from __future__ import annotations

import argparse
import json

from rankdistill.serving.index import IndexConfig


def main(args: argparse.Namespace) -> int:
    from rankdistill.commands.run import configure_torch
    from rankdistill.modeldir import load
    from rankdistill.serving.export import export_model

    from rankdistill.paths import input_path, output_dir

    input_path(args.model, "model directory")
    output_dir(args.out, "--out", replaces=True)  # before any work: a file, a read-only parent, the working dir
    configure_torch(args.threads)
    index = IndexConfig(kind=args.index, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                        ef_search=args.ef_search)
    saved = load(args.model)
    split = None
    if args.quantize != "fp32":
        # --data: another file read as the model's data was (its recorded columns and filters)
        _, split = saved.load_split(saved.data_at(args.data, args.format) if args.data else None)
    manifest = export_model(saved, args.out, args.quantize, index, split)
    shown = {k: manifest[k] for k in ("dim", "users", "items", "metric", "precision", "bytes", "test_metrics")}
    print(json.dumps({"export": args.out, **shown, "index": manifest["index"].get("file")}))
    return 0
