"""rankdistill serve-check: recall@k of an export's index against exact scoring, and per-user query latency
p50/p99 on this CPU (:mod:`rankdistill.serving.check`). Prints one JSON object; ``--out`` also writes it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rankdistill.errors import RankdistillError


def main(args: argparse.Namespace) -> int:
    from rankdistill.commands.run import configure_torch
    from rankdistill.serving.check import serve_check
    from rankdistill.serving.export import read_export
    from rankdistill.serving.index import require_faiss

    configure_torch(args.threads)
    for name in ("k", "users"):
        if getattr(args, name) < 1:
            raise RankdistillError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.ef_search is not None and args.ef_search < 1:
        raise RankdistillError(f"--ef-search must be >= 1, got {args.ef_search}")
    if args.out:
        from rankdistill.paths import output_file

        output_file(args.out, "--out")  # before any work
    require_faiss()  # before reading the tables: the message names what to install
    result = serve_check(read_export(args.export), args.k, args.users, args.ef_search, args.threads)
    text = json.dumps(result)
    if args.out:
        from rankdistill.paths import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(text)
    return 0
