"""rankdistill data ...: data utilities (synthetic data of any size)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.errors import RankdistillError


def synth(args: argparse.Namespace) -> int:
    cfg = SyntheticConfig(users=args.users, items=args.items, interactions=args.interactions, seed=args.seed)
    out = Path(args.out)
    frame = make_synthetic(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix in (".parquet", ".pq"):
        frame.to_parquet(out, engine="fastparquet", index=False)
    else:
        raise RankdistillError(f"--out must end in .parquet or .csv, got {out}")
    print(f"wrote {len(frame):,} interactions to {out}")
    return 0
