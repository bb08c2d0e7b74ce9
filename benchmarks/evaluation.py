"""How fast is exact full-ranking evaluation? Top-K of every user over the whole catalogue, seen items masked.

Default job: 10,000 users × 500,000 items, dim 64, top-100, 50 seen items per user. Compared with

- the **matmul floor**: users × items × dim × 2 FLOP at the best fp32 matmul rate measured here, on this
  device (a square 2048³ sgemm and the evaluator's own [chunk × dim] @ [dim × items] shape into a
  preallocated buffer; the faster one is the floor), i.e. the time of the scoring matmul alone;
- a **per-user Python loop** (matrix-vector product, mask, top-K for one user at a time), timed on
  ``--naive-users`` users and scaled to all users.

The evaluator's lists are checked against the loop's on those users. Every row records the device, versions
and sizes; the last line of output is one JSON object with ``seconds``, ``floor_seconds`` and
``naive_seconds`` (and the rest).

    .venv/bin/python benchmarks/evaluation.py                          # the full job, tens of seconds
    .venv/bin/python benchmarks/evaluation.py --users 2000 --items 100000 --repeats 1
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import resource
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch


def import_evaluation():
    """The evaluator needs torch only; import it without the package's top level (which loads torchrec) so the
    benchmark also runs where torchrec is not installed."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    if "rankdistill" not in sys.modules:
        try:
            importlib.import_module("rankdistill")
        except ImportError:
            pkg = types.ModuleType("rankdistill")
            pkg.__path__ = [str(root / "rankdistill")]
            sys.modules["rankdistill"] = pkg
    return importlib.import_module("rankdistill.evaluation.evaluator")


ev = import_evaluation()
from rankdistill.evaluation import streaming  # noqa: E402
from rankdistill.data.csr import Csr  # noqa: E402
from rankdistill.evaluation.topk import topk_ties_by_index  # noqa: E402
from rankdistill.models.base import DotProductRanker  # noqa: E402


class Vectors(DotProductRanker):
    """A dot-product ranker over fixed user and item matrices."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.n_users, self.n_items, self.embedding_dim = users.shape[0], items.shape[0], users.shape[1]
        self.register_buffer("U", users)
        self.register_buffer("I", items)

    def user_vectors(self, users):
        return self.U[users]

    def item_vectors(self, items):
        return self.I[items]

    def item_matrix(self):
        return self.I

    def forward(self, users, items, shared=None):
        raise NotImplementedError


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def tile_rates(dim: int, n_items: int, users: int, tile: int, block: int, device: torch.device,
               reps: int) -> dict[str, float]:
    """GFLOP/s of the streaming path's own matmul, [tile × dim] @ [dim × users] item tiles over the whole
    catalogue into one reused buffer, alone (``tiles``) and followed by the one read of every score that any
    exact top-K needs, the block maxima (``tiles_amax``): what the evaluator could reach if everything else
    were free. Median of ``reps`` after a warm-up."""
    g = torch.Generator(device="cpu").manual_seed(2)
    items = torch.randn(n_items, dim, generator=g).to(device)
    vectors_t = torch.randn(dim, users, generator=g).to(device)
    buf = torch.empty(tile, users, device=device)
    starts = range(0, n_items - tile + 1, tile)  # whole tiles only

    def tiles(amax: bool) -> None:
        for s in starts:
            torch.mm(items[s : s + tile], vectors_t, out=buf)
            if amax:
                buf.view(tile // block, block, users).amax(1)

    flop = 2 * len(starts) * tile * dim * users
    out = {}
    for name, amax in (("tiles", False), ("tiles_amax", True)):
        tiles(amax)
        out[name] = flop / statistics.median(timed(lambda a=amax: tiles(a), device, reps)) / 1e9
    return out


def matmul_rates(dim: int, n_items: int, chunk: int, device: torch.device) -> dict[str, float]:
    """GFLOP/s of fp32 matmuls into preallocated outputs, median of 5 after a warm-up."""
    g = torch.Generator(device="cpu").manual_seed(1)
    a, b = torch.randn(2048, 2048, generator=g).to(device), torch.randn(2048, 2048, generator=g).to(device)
    out = torch.empty(2048, 2048, device=device)
    reps = 5 if device.type == "cpu" else 50
    square = lambda: [torch.mm(a, b, out=out) for _ in range(1 if device.type == "cpu" else 10)]  # noqa: E731
    square()
    per = 1 if device.type == "cpu" else 10
    sq = statistics.median(timed(square, device, reps)) / per
    u = torch.randn(chunk, dim, generator=g).to(device)
    it = torch.randn(dim, n_items, generator=g).to(device)
    buf = torch.empty(chunk, n_items, device=device)
    job = lambda: torch.mm(u, it, out=buf)  # noqa: E731
    job()
    js = statistics.median(timed(job, device, reps))
    return {"square_2048": 2 * 2048**3 / sq / 1e9, "job_shape": 2 * chunk * n_items * dim / js / 1e9}


def naive_topk(model: Vectors, exclude: Csr, users: list[int], k: int) -> list[list[int]]:
    """One user at a time: scores = I @ u, seen items -inf, top-k with the same tie rule."""
    out = []
    item_matrix = model.I
    for u in users:
        scores = item_matrix @ model.U[u]
        seen = exclude.indices[exclude.indptr[u] : exclude.indptr[u + 1]]
        scores[seen] = float("-inf")
        out.append(topk_ties_by_index(scores[None], k)[1][0].tolist())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--items", type=int, default=500_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seen", type=int, default=50, help="masked (seen) items per user")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the whole job (median reported)")
    p.add_argument("--naive-users", type=int, default=200, help="users timed in the per-user loop, then scaled")
    p.add_argument("--memory-budget-mb", type=int, help="score buffer budget (default: the evaluator's default for "
                   "the device, 512 MiB on CPU, up to 4 GiB on a GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    budget = args.memory_budget_mb * 2**20 if args.memory_budget_mb else ev.default_memory_budget(device)

    g = torch.Generator().manual_seed(0)
    user_vecs = torch.randn(args.users, args.dim, generator=g)
    item_vecs = torch.randn(args.items, args.dim, generator=g)
    rng = np.random.default_rng(0)
    seen_cols = rng.integers(0, args.items, size=(args.users, args.seen))
    exclude = Csr.from_pairs(np.repeat(np.arange(args.users), args.seen), seen_cols.ravel(), args.users, args.items)
    exclude = Csr(exclude.indptr, exclude.indices, args.items)  # duplicates are harmless for masking
    model = Vectors(user_vecs, item_vecs).to(device)
    exclude_dev = exclude.to(device)
    chunk = ev.chunk_size(args.items, budget)
    env = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
           else cpu_name(), "torch": torch.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads()}
    sizes = {"users": args.users, "items": args.items, "dim": args.dim, "k": args.k, "seen": args.seen,
             "chunk": chunk, "memory_budget_mb": budget // 2**20}
    print(f"# {json.dumps({**env, **sizes})}")

    ev.rank_all(model, exclude_dev, args.k, torch.arange(min(chunk, args.users), device=device), budget)  # warm-up
    result = {}

    def job():
        result["ranking"] = ev.rank_all(model, exclude_dev, args.k, memory_budget=budget)

    def whole_rows():  # the path the evaluator took before streaming (and still takes on a GPU)
        original = streaming.tile_users
        streaming.tile_users = lambda *a: 0
        try:
            result["whole"] = ev.rank_all(model, exclude_dev, args.k, memory_budget=budget)
        finally:
            streaming.tile_users = original

    streams = (device.type == "cpu" and torch.get_num_threads() == 1
               and streaming.tile_users(args.items, args.k, budget) > 0)  # as rank_all decides
    times, whole_times = [], []
    for _ in range(args.repeats):  # alternated, so both see the same load on a shared machine
        times += timed(job, device, 1)
        if streams:
            whole_times += timed(whole_rows, device, 1)
    seconds = statistics.median(times)
    print(f"evaluator: {', '.join(f'{t:.2f}' for t in times)} s (median {seconds:.2f} s)")
    if streams:
        whole_seconds = statistics.median(whole_times)
        same_whole = bool(torch.equal(result["ranking"].items, result["whole"].items)
                          and torch.equal(result["ranking"].scores, result["whole"].scores))
        print(f"whole-row path (before): {', '.join(f'{t:.2f}' for t in whole_times)} s (median "
              f"{whole_seconds:.2f} s); bit-identical rankings: {same_whole}")

    rates = matmul_rates(args.dim, args.items, chunk, device)
    flop = 2 * args.users * args.items * args.dim
    floor = flop / (max(rates.values()) * 1e9)
    print(f"matmul: square 2048^3 {rates['square_2048']:.1f} GFLOP/s, job shape [{chunk}x{args.dim}]@"
          f"[{args.dim}x{args.items}] {rates['job_shape']:.1f} GFLOP/s -> floor {floor:.2f} s for "
          f"{flop / 1e9:.0f} GFLOP")
    pass_users = streaming.tile_users(args.items, args.k, budget) or min(chunk, args.users)
    tiles = tile_rates(args.dim, args.items, pass_users, streaming.TILE_ITEMS, streaming.BLOCK, device,
                       3 if device.type == "cpu" else 10)
    print(f"matmul of the evaluator's tiles [{streaming.TILE_ITEMS}x{args.dim}]@[{args.dim}x{pass_users}] into a "
          f"reused buffer: {tiles['tiles']:.1f} GFLOP/s ({flop / tiles['tiles'] / 1e9:.2f} s); with the block "
          f"maxima read: {tiles['tiles_amax']:.1f} GFLOP/s ({flop / tiles['tiles_amax'] / 1e9:.2f} s)")

    n_naive = min(args.naive_users, args.users)
    check_users = list(range(0, args.users, max(1, args.users // n_naive)))[:n_naive]
    naive_lists: list = []
    naive_t = timed(lambda: naive_lists.append(naive_topk(model, exclude_dev, check_users, args.k)), device, 1)[0]
    naive_seconds = naive_t * args.users / len(check_users)
    ours = result["ranking"].items[check_users].cpu()
    theirs = torch.tensor(naive_lists[0])
    same = float((ours == theirs).all(1).double().mean())
    # Lists can differ where two items' fp32 scores are tied or nearly so: a matmul of another shape rounds
    # differently. The fp64 scores of the two lists, position by position, show how close such swaps are.
    u64 = user_vecs[check_users].double()[:, None, :]
    gap = float(((u64 * item_vecs[ours].double()).sum(-1) - (u64 * item_vecs[theirs].double()).sum(-1)).abs().max())
    print(f"per-user loop: {naive_t:.2f} s for {len(check_users)} users -> {naive_seconds:.1f} s for {args.users}; "
          f"identical lists for {100 * same:.1f}% of them, largest fp64 score difference at a position {gap:.2e}")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {**sizes, **env, "seconds": round(seconds, 3), "runs": [round(t, 3) for t in times],
           "floor_seconds": round(floor, 3), "ratio_to_floor": round(seconds / floor, 3),
           "naive_seconds": round(naive_seconds, 2), "naive_users_timed": len(check_users),
           "speedup_vs_naive": round(naive_seconds / seconds, 1), "identical_to_naive": round(same, 4),
           "max_score_gap_vs_naive": gap,
           "matmul_gflops": {k: round(v, 1) for k, v in rates.items()},
           "floor_seconds_job_shape": round(flop / (rates["job_shape"] * 1e9), 3),
           "tile_gflops": {k: round(v, 1) for k, v in tiles.items()},
           "floor_seconds_tiles": round(flop / (tiles["tiles"] * 1e9), 3),
           "ratio_to_tiles": round(seconds * tiles["tiles"] * 1e9 / flop, 3),
           "floor_seconds_tiles_amax": round(flop / (tiles["tiles_amax"] * 1e9), 3),
           "ratio_to_tiles_amax": round(seconds * tiles["tiles_amax"] * 1e9 / flop, 3),
           "peak_rss_mb": round(peak_mb)}
    if streams:
        row.update(tile_users=pass_users, tile_items=streaming.TILE_ITEMS, block=streaming.BLOCK,
                   whole_row_seconds=round(whole_seconds, 3), whole_row_runs=[round(t, 3) for t in whole_times],
                   speedup_vs_whole_row=round(whole_seconds / seconds, 2), identical_to_whole_row=same_whole)
    if device.type == "cuda":
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
