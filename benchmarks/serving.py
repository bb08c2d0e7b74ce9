"""Serving benchmark: teacher, student alone and distilled student exported at fp32, fp16 and int8, the faiss
index checked against exact scoring, and each model's serving cost.

    python benchmarks/serving.py --data ../shared/data/ml-100k/u.data --out runs/serving-ml100k --kd rce:10

Trains the three models with the commands' defaults (``train``: teacher dim 128; ``train --dim 16``: student
alone; ``distill --kd KD``), then per model: ``export`` at each precision (bytes, test metrics after
quantisation next to fp32), ``serve-check`` of the flat index and of an HNSW index at each ``--ef-search``
(recall@100 against exact scoring, per-user latency p50/p99), and the time the PyTorch model takes to score
all items for one user and take the top 100. Writes OUT/serving.md and OUT/serving.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from pathlib import Path

import torch

from rankdistill.cli import main as cli
from rankdistill.modeldir import load
from rankdistill.serving.cost import serving_cost
from rankdistill.serving.export import read_export


def _run(args: list[str]) -> dict | None:
    """One rankdistill command in this process; its last stdout line parsed as JSON when it is JSON."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = cli(args)
    if status != 0:
        raise SystemExit(f"rankdistill {' '.join(args)} exited with {status}")
    lines = buf.getvalue().strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--format")
    p.add_argument("--out", required=True)
    p.add_argument("--kd", default="rce:10")
    p.add_argument("--ef-search", default="64,128,256,512,768", help="HNSW efSearch values to measure")
    p.add_argument("--users", type=int, default=1000, help="users measured by serve-check")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ["--data", a.data, *(["--format", a.format] if a.format else []), "--threads", str(a.threads), "--quiet"]
    start = time.perf_counter()
    steps = {"teacher": ["train", "--out", str(out / "teacher"), *data],
             "student": ["train", "--out", str(out / "student"), "--dim", "16", "--lr", "0.2",
                         "--score-temperature", "0.2", *data],
             "distilled": ["distill", "--teacher", str(out / "teacher"), "--out", str(out / "distilled"),
                           "--kd", a.kd, *data]}
    seconds = {}
    for name, args in steps.items():
        t = time.perf_counter()
        if not (out / name / "config.json").exists():
            _run(args)
        seconds[name] = round(time.perf_counter() - t, 1)
    rows = []
    for name in steps:
        saved = load(out / name)
        cost = serving_cost(saved.model)
        exports = {}
        for precision in ("fp32", "fp16", "int8"):
            target = out / f"export-{name}-{precision}"
            _run(["export", "--model", str(out / name), "--out", str(target), "--quantize", precision,
                  "--threads", str(a.threads)])
            m = read_export(target).manifest
            check = _run(["serve-check", "--export", str(target), "--users", str(a.users), "--threads",
                          str(a.threads)])
            exports[precision] = {"bytes": m["bytes"][precision], "ratio": m["bytes"]["ratio_to_fp32"],
                                  "metrics": m["test_metrics"].get(precision, m["test_metrics"]["fp32"]),
                                  "flat": {k: check[k] for k in ("recall@100", "latency_ms", "exact_latency_ms")}}
        hnsw_dir = out / f"export-{name}-hnsw"
        _run(["export", "--model", str(out / name), "--out", str(hnsw_dir), "--index", "hnsw"])
        hnsw = {}
        for ef in (int(x) for x in a.ef_search.split(",")):
            check = _run(["serve-check", "--export", str(hnsw_dir), "--users", str(a.users), "--ef-search", str(ef),
                          "--threads", str(a.threads)])
            hnsw[ef] = {k: check[k] for k in ("recall@100", "recall@100_min", "latency_ms")}
        rows.append({"model": name, "dim": saved.model.embedding_dim, "users": saved.model.n_users,
                     "items": saved.model.n_items, "cost": cost, "exports": exports, "hnsw": hnsw})
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": a.threads,
           "cpu": platform.processor() or platform.machine(), "seconds": round(time.perf_counter() - start, 1),
           "train_seconds": seconds}
    result = {"data": a.data, "kd": a.kd, "environment": env, "rows": rows}
    (out / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "serving.md").write_text(markdown(result))
    print(json.dumps(result))


def markdown(result: dict) -> str:
    env, rows = result["environment"], result["rows"]
    lines = [f"# Serving on {result['data']} ({rows[0]['users']:,} users, {rows[0]['items']:,} items)", "",
             f"CPU {env['cpu']}, {env['threads']} thread(s), torch {env['torch']}; distilled with `--kd "
             f"{result['kd']}`; total {env['seconds']:.0f} s.", "",
             "## Precision: bytes of the exported tables and test metrics", "",
             "| model | dim | precision | bytes | ×fp32 | ndcg@20 | recall@20 | ndcg@20 change |", "|" + "---|" * 8]
    for r in rows:
        base = r["exports"]["fp32"]["metrics"]["ndcg@20"]
        for precision, e in r["exports"].items():
            m = e["metrics"]
            lines.append(f"| {r['model']} | {r['dim']} | {precision} | {e['bytes']:,} | {e['ratio']:.3f} | "
                         f"{m['ndcg@20']:.4f} | {m['recall@20']:.4f} | {100 * (m['ndcg@20'] / base - 1):+.2f}% |")
    lines += ["", "## Serving cost of the PyTorch model and of the faiss index (per user, top 100)", "",
              "| model | dim | model ms p50 | model ms p99 | flat index ms p50 | p99 | exact matmul ms p50 | "
              "flat recall@100 |", "|" + "---|" * 8]
    for r in rows:
        c, f = r["cost"]["ms_per_user"], r["exports"]["fp32"]["flat"]
        lines.append(f"| {r['model']} | {r['dim']} | {c['p50']:.3f} | {c['p99']:.3f} | {f['latency_ms']['p50']:.3f} | "
                     f"{f['latency_ms']['p99']:.3f} | {f['exact_latency_ms']['p50']:.3f} | {f['recall@100']:.4f} |")
    lines += ["", "## HNSW (M 32, efConstruction 200): recall@100 against exact scoring by efSearch", "",
              "| model | efSearch | recall@100 mean | worst user | ms p50 | ms p99 |", "|" + "---|" * 6]
    for r in rows:
        for ef, h in r["hnsw"].items():
            lines.append(f"| {r['model']} | {ef} | {h['recall@100']:.4f} | {h['recall@100_min']:.2f} | "
                         f"{h['latency_ms']['p50']:.3f} | {h['latency_ms']['p99']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
