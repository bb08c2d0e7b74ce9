"""rankdistill data ...: data utilities (synthetic data of any size)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rankdistill.data.io import write_table
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.errors import RankdistillError
from rankdistill.paths import output_file

SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")


def synth(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:  # before minutes of generation, not after
        raise RankdistillError(f"--out must end in .parquet or .csv (or .pq, .tsv), got {out}")
    output_file(out)
    cfg = SyntheticConfig(users=args.users, items=args.items, interactions=args.interactions, seed=args.seed)
    frame = make_synthetic(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(frame, out)
    print(f"wrote {len(frame):,} interactions ({cfg.users:,} users, {cfg.items:,} items) to {out}")
    return 0
