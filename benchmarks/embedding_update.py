"""A table's lookup and row-wise Adagrad update: fbgemm's fused CPU backward against rankdistill's own update.

    OMP_NUM_THREADS=1 python benchmarks/embedding_update.py

For a table of Gowalla's item count (40,981 rows, dim 16 as the default student, 128 as the teacher) and R
distinct rows looked up (R from a student step's 1,536 to an ``rce`` step's ~17,000), one forward of the rows
and one backward that updates them, through :class:`rankdistill.models.embedding.EmbeddingTable` with
``sparse_update`` on (the CPU default) and off (fbgemm's kernel). The two are timed interleaved, medians of
``--reps``; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from rankdistill.models.embedding import EmbeddingTable


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1536,4096,8192,16384", help="comma-separated distinct rows per lookup")
    p.add_argument("--dims", default="16,128")
    p.add_argument("--table", type=int, default=40981)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    device = f"CPU ({platform.processor() or platform.machine()}), 1 thread"
    print(f"device: {device}; torch {torch.__version__}; table {args.table:,} rows")
    print(f"{'dim':>5}{'rows':>8}{'fbgemm ms':>11}{'ours ms':>9}{'speed-up':>10}")
    out = []
    for dim in map(int, args.dims.split(",")):
        tables = {"fbgemm": EmbeddingTable("t", args.table, dim, lr=0.05), "ours": EmbeddingTable("t", args.table, dim, lr=0.05)}
        tables["fbgemm"].sparse_update = False
        for rows in map(int, args.rows.split(",")):
            ids = torch.randperm(args.table, generator=gen)[:rows]
            grad = torch.randn(rows, dim, generator=gen)

            def step(table):
                (table(ids) * grad).sum().backward()

            times = {name: [] for name in tables}
            for name, table in tables.items():
                step(table)
            for _ in range(args.reps):
                for name, table in tables.items():
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        step(table)
                    times[name].append((time.perf_counter() - t0) / args.steps)
            med = {name: statistics.median(t) for name, t in times.items()}
            print(f"{dim:>5}{rows:>8}{1000 * med['fbgemm']:>11.3f}{1000 * med['ours']:>9.3f}"
                  f"{med['fbgemm'] / med['ours']:>10.1f}")
            out.append({"dim": dim, "rows": rows, "fbgemm_ms": round(1000 * med["fbgemm"], 3),
                        "ours_ms": round(1000 * med["ours"], 3)})
    print(json.dumps({"device": device, "table_rows": args.table, "results": out}))


if __name__ == "__main__":
    main()
