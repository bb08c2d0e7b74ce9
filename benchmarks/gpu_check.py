"""One prepared check for a lent GPU machine: GPU against CPU on the same weights, then timings on the GPU.

    python3 benchmarks/gpu_check.py                          # on the GPU machine
    python3 benchmarks/gpu_check.py --wheels wheels/         # first install carried wheels (pip --no-index,
                                                             # into a temporary folder) when an import is missing
    .venv/bin/python benchmarks/gpu_check.py --device cpu    # smoke run here: small sizes, CPU against CPU
    .venv/bin/python benchmarks/gpu_check.py --device cpu --pure-torch   # the same, the pure-torch path

Two paths, chosen by what imports (the report says which ran, and why):

- **torchrec** (torchrec and an fbgemm-gpu with kernels for the device): rankdistill's own models (fused TBE
  tables) built on the CPU with a seed and copied to the device. Checks: a batch's scores (close) and the
  full-ranking test metrics (equal) on the device against the CPU, for a two-tower model (the matmul path)
  and an MLP ranker (the ``score_all`` path). Times: steps of a teacher (dim 128), a student (dim 16) and a
  listkl distillation (the student plus the frozen teacher), the teacher's top-K knowledge, and the
  full-ranking evaluation.
- **pure torch** (no torchrec: the CUDA fbgemm-gpu wheel, ~500 MB, cannot be carried to the lent machine).
  The same checks with pure-torch rankers (a dot-product ranker, an MLP ranker) through rankdistill's
  evaluator, and timed pure-torch steps of the same shapes: ``nn.Embedding`` with sparse gradients and
  Adagrad (the closest torch has to fbgemm's row-wise Adagrad), sampled softmax over the batch's shared
  negatives, listkl against a frozen teacher. These time the dense work, not fbgemm's kernels.

Timings: warm-up, then the median of ``--repeats`` device-synchronised runs. One table is printed, headed by
the device's name and the versions; the last line of output is one JSON object with everything.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


# -- environment ------------------------------------------------------------------------------------------------

def install_wheels(folder: Path) -> str:
    """pip-install every wheel in ``folder`` (no index, no dependencies) into a temporary folder put first on
    sys.path; -> what pip said, in one line."""
    wheels = sorted(str(w) for w in folder.glob("*.whl"))
    if not wheels:
        return f"no wheels in {folder}"
    target = tempfile.mkdtemp(prefix="gpu_check_wheels_")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                           "--target", target, *wheels], capture_output=True, text=True)
    sys.path.insert(0, target)
    importlib.invalidate_caches()
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["ok"]
    return f"{len(wheels)} wheels -> {target} (pip status {done.returncode}: {tail[0][:200]})"


def missing_imports(names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # ImportError, or a native library that fails to load
            out[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return out


def import_rankdistill(full: bool) -> None:
    """Put the repository first on sys.path; without ``full``, skip the package's top level (which loads
    torchrec) so that the evaluator, the losses and the Ranker interface import with torch alone."""
    sys.path.insert(0, str(ROOT))
    if full:
        importlib.import_module("rankdistill")
    elif "rankdistill" not in sys.modules:
        pkg = types.ModuleType("rankdistill")
        pkg.__path__ = [str(ROOT / "rankdistill")]
        sys.modules["rankdistill"] = pkg


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- data ---------------------------------------------------------------------------------------------------------

def random_split(n_users: int, n_items: int, train_per_user: int, seed: int = 0):
    """A Split whose training items are random (``train_per_user`` per user); the validation and test items
    are planted later from a model's own scores (:func:`plant_targets`), so the metrics are far from zero."""
    import numpy as np

    from rankdistill.data.csr import Csr
    from rankdistill.data.split import Split

    rng = np.random.default_rng(seed)
    cols = rng.integers(0, n_items, size=(n_users, train_per_user))  # a repeat is harmless: masked twice
    train = Csr.from_pairs(np.repeat(np.arange(n_users), train_per_user), cols.ravel(), n_users, n_items)
    empty = Csr(torch.zeros(n_users + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), n_items)
    return Split("given", n_users, n_items, train, empty, empty)


@torch.no_grad()
def plant_targets(model, split, candidates: int = 50, seed: int = 1):
    """Each user's test (and validation) item: the model's best of ``candidates`` random unseen items, so it
    tends to rank high and the metrics are sensitive to the order (CPU model, chunked)."""
    from dataclasses import replace

    from rankdistill.data.csr import Csr

    g = torch.Generator().manual_seed(seed)
    picks = []
    for _ in range(2):
        cand = torch.randint(split.n_items, (split.n_users, candidates), generator=g)
        best = []
        for a in range(0, split.n_users, 1024):
            users = torch.arange(a, min(a + 1024, split.n_users))
            best.append(cand[users].gather(1, model.score(users, cand[users]).argmax(1, keepdim=True))[:, 0])
        picks.append(torch.cat(best))
    keep = [~_member(split.train, p) for p in picks]  # an item already in training is not a target
    keep[1] &= picks[1] != picks[0]  # nor a test item that is the validation item (masked at test time)
    valid, test = (Csr(torch.cat([torch.zeros(1, dtype=torch.int64), k.long().cumsum(0)]), p[k], split.n_items)
                   for p, k in zip(picks, keep))
    return replace(split, valid=valid, test=test)


def _member(csr, items: torch.Tensor) -> torch.Tensor:
    """bool [U]: items[u] is in row u of ``csr``."""
    rows = csr.rows()
    hit = torch.zeros(csr.n_rows, dtype=torch.bool)
    hit[rows[csr.indices == items[rows]]] = True
    return hit


# -- pure-torch rankers ---------------------------------------------------------------------------------------------

def pure_rankers():
    from rankdistill.models.base import DotProductRanker, Forward, Ranker

    class PureMF(DotProductRanker):
        """Matrix factorisation on nn.Embedding (sparse gradients)."""

        def __init__(self, n_users: int, n_items: int, dim: int) -> None:
            super().__init__()
            self.n_users, self.n_items, self.embedding_dim = n_users, n_items, dim
            self.user = nn.Embedding(n_users, dim, sparse=True)
            self.item = nn.Embedding(n_items, dim, sparse=True)
            nn.init.normal_(self.user.weight, 0, 0.1)
            nn.init.normal_(self.item.weight, 0, 0.1)

        def user_vectors(self, users):
            return self.user(users)

        def item_vectors(self, items):
            return self.item(items)

        def item_matrix(self):
            return self.item.weight

        def forward(self, users, items, shared=None):
            b, l = items.shape
            flat = items.reshape(-1) if shared is None else torch.cat([items.reshape(-1), shared])
            u, rows = self.user(users), self.item(flat)  # one lookup per table, as rankdistill's models
            i = rows[: b * l].view(b, l, -1)
            scores = torch.einsum("bd,bld->bl", u, i)
            if shared is None:
                return Forward(scores, u, i, None, u, i, None)
            s = rows[b * l:]
            return Forward(torch.cat([scores, u @ s.T], 1), u, i, s, u, i, s)

    class PureMLP(Ranker):
        """score = MLP([e_u ; e_i]) on nn.Embedding; full scoring through score_all, by item blocks."""

        def __init__(self, n_users: int, n_items: int, dim: int, hidden: int = 64) -> None:
            super().__init__()
            self.n_users, self.n_items, self.embedding_dim = n_users, n_items, dim
            self.user, self.item = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
            nn.init.normal_(self.user.weight, 0, 0.1)
            nn.init.normal_(self.item.weight, 0, 0.1)
            self.first, self.out = nn.Linear(2 * dim, hidden), nn.Linear(hidden, 1)

        def _score(self, u, i):  # u [B, D], i [B, L, D] -> [B, L]
            d = self.embedding_dim
            w = self.first.weight
            h = (u @ w[:, :d].T)[:, None, :] + i @ w[:, d:].T + self.first.bias
            return self.out(torch.relu(h)).squeeze(-1)

        def forward(self, users, items, shared=None):
            u, i = self.user(users), self.item(items)
            return Forward(self._score(u, i), u, i, None, u, i, None)

        @torch.no_grad()
        def score_all(self, users):
            u = self.user(users)
            out = torch.empty(len(users), self.n_items, device=u.device)
            block = max(1, (1 << 24) // max(1, len(users) * self.first.out_features))
            for a in range(0, self.n_items, block):
                items = self.item.weight[a: a + block]
                out[:, a: a + block] = self._score(u, items[None].expand(len(users), -1, -1))
            return out

    return PureMF, PureMLP


# -- checks ---------------------------------------------------------------------------------------------------------

def compare(make_model, split_cpu_fn, device: torch.device, ks=(10, 20)) -> dict:
    """The same weights on the CPU and on ``device``: a batch's scores, the top-K lists, the test metrics."""
    from rankdistill.evaluation.evaluator import evaluate, rank_all

    cpu = make_model("cpu").eval()
    split = split_cpu_fn(cpu)
    dev = make_model(device)
    dev.load_state_dict(cpu.state_dict())
    dev.eval()
    g = torch.Generator().manual_seed(5)
    users = torch.randint(split.n_users, (256,), generator=g)
    items = torch.randint(split.n_items, (256, 64), generator=g)
    with torch.no_grad():
        a, b = cpu.score(users, items), dev.score(users.to(device), items.to(device)).cpu()
    metrics = ("ndcg", "recall", "mrr")
    m_cpu = evaluate(cpu, split, "test", ks, metrics)
    m_dev = evaluate(dev, split, "test", ks, metrics)
    exclude = split.train.union(split.valid)
    r_cpu, r_dev = rank_all(cpu, exclude, max(ks)), rank_all(dev, exclude, max(ks))
    same_lists = float((r_cpu.items == r_dev.items.cpu()).all(1).double().mean())
    return {
        "score_max_abs_diff": float((a - b).abs().max()), "score_scale": float(a.abs().max()),
        "topk_lists_identical": same_lists,
        "topk_score_max_abs_diff": float((r_cpu.scores - r_dev.scores.cpu()).abs().max()),
        "metrics_cpu": m_cpu, "metrics_device": m_dev,
        "metrics_max_abs_diff": max(abs(m_cpu[k] - m_dev[k]) for k in m_cpu),
    }


def check_rows(name: str, c: dict) -> list[tuple[str, str, str]]:
    close = c["score_max_abs_diff"] <= 1e-4 * max(1.0, c["score_scale"])
    equal = c["metrics_max_abs_diff"] <= 1e-6
    # Lists may differ only where fp32 scores of two items are within rounding of each other (CPU and GPU
    # kernels round differently); the ranked scores then agree to ~1e-7 and the metrics move by ~1e-6.
    near_ties = c["topk_score_max_abs_diff"] <= 1e-5 * max(1.0, c["score_scale"])
    verdict = "equal" if equal else "equal up to near-ties" if near_ties else "DIFFER"
    shown = ", ".join(f"{k} {v:.4f}" for k, v in c["metrics_cpu"].items() if k.endswith("@20"))
    return [
        (f"{name}: scores", "close" if close else "DIFFER", f"max |device-cpu| {c['score_max_abs_diff']:.2e}"),
        (f"{name}: top-20 lists", f"{100 * c['topk_lists_identical']:.2f}% identical",
         f"max score diff {c['topk_score_max_abs_diff']:.2e}"),
        (f"{name}: test metrics", verdict, f"max diff {c['metrics_max_abs_diff']:.1e}; {shown}"),
    ]


# -- timed steps ----------------------------------------------------------------------------------------------------

def torchrec_steps(args, device: torch.device, split) -> tuple[list, dict]:
    """rankdistill's objectives on its fused-table models: teacher, student and distillation steps."""
    from rankdistill.config import DistillConfig, ModelConfig
    from rankdistill.evaluation.evaluator import evaluate
    from rankdistill.models.factory import build_model
    from rankdistill.train.knowledge import TeacherKnowledge
    from rankdistill.train.objectives import DistillationObjective, SupervisedObjective

    n_u, n_i = split.n_users, split.n_items
    teacher = build_model(ModelConfig(embedding_dim=args.teacher_dim), n_u, n_i, device, seed=0)
    student = build_model(ModelConfig(embedding_dim=args.student_dim, lr=0.2), n_u, n_i, device, seed=1)
    kd = DistillConfig(kd="listkl", topk=args.kd_topk, topk_samples=args.kd_samples)
    rows, out = [], {}
    t = median_seconds(lambda: TeacherKnowledge.compute(teacher, split, kd.topk), device, args.repeats, 1)
    rows.append(("teacher top-K knowledge", f"{n_u:,} users x {n_i:,} items, K={kd.topk}", t, n_u / t))
    out["knowledge_s"] = t
    knowledge = TeacherKnowledge.compute(teacher, split, kd.topk)
    g = torch.Generator(device=device).manual_seed(0)

    def stepper(model, objective):
        dense = [p for p in list(model.dense_parameters()) + list(objective.parameters()) if p.requires_grad]
        opt = torch.optim.Adam(dense) if dense else None

        def step():
            users = torch.randint(n_u, (args.batch,), generator=g, device=device)
            pos = torch.randint(n_i, (args.batch,), generator=g, device=device)
            negs = torch.randint(n_i, (args.negatives,), generator=g, device=device)
            loss, _ = objective(model, users, pos, negs)
            loss.backward()  # the tables update here (fused optimizer)
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
        return step

    sup = SupervisedObjective("softmax", 0.01)
    shapes = f"B={args.batch}, S={args.negatives}"
    for name, model, objective in (
        (f"teacher step (dim {args.teacher_dim})", teacher, sup),
        (f"student step (dim {args.student_dim})", student, sup),
        (f"distillation step (listkl, {args.kd_samples} top-K)", student, None),
    ):
        if objective is None:  # built last: it freezes the teacher
            objective = DistillationObjective(teacher, knowledge, kd, "softmax", 0.01, seed=0, device=device)
        t = median_seconds(stepper(model, objective), device, args.repeats)
        rows.append((name, shapes, t, args.batch / t))
    t = median_seconds(lambda: evaluate(teacher, split, "test", (10, 20)), device, args.repeats, 1)
    rows.append((f"full-ranking evaluation (teacher, dim {args.teacher_dim})", f"{n_u:,} x {n_i:,}", t, n_u / t))
    return rows, out


def pure_steps(args, device: torch.device, split) -> tuple[list, dict]:
    """The same shapes in pure torch: nn.Embedding (sparse) + Adagrad, sampled softmax, listkl."""
    from rankdistill.evaluation.evaluator import evaluate, rank_all
    from rankdistill.losses.listwise import listwise_kl
    from rankdistill.losses.supervised import sampled_softmax

    PureMF, _ = pure_rankers()
    torch.sparse.check_sparse_tensor_invariants.disable()  # say so explicitly (torch warns when it is implicit)
    n_u, n_i = split.n_users, split.n_items
    torch.manual_seed(0)
    teacher = PureMF(n_u, n_i, args.teacher_dim).to(device)
    student = PureMF(n_u, n_i, args.student_dim).to(device)
    rows, out = [], {}
    exclude = split.train.to(device)
    t = median_seconds(lambda: rank_all(teacher, exclude, args.kd_topk), device, args.repeats, 1)
    rows.append(("teacher top-K knowledge", f"{n_u:,} users x {n_i:,} items, K={args.kd_topk}", t, n_u / t))
    top = rank_all(teacher, exclude, args.kd_topk).items  # [U, K]
    g = torch.Generator(device=device).manual_seed(0)

    def batch():
        users = torch.randint(n_u, (args.batch,), generator=g, device=device)
        pos = torch.randint(n_i, (args.batch,), generator=g, device=device)
        negs = torch.randint(n_i, (args.negatives,), generator=g, device=device)
        return users, pos, negs

    def supervised_step(model, opt):
        def step():
            users, pos, negs = batch()
            f = model(users, pos[:, None], negs)
            loss = sampled_softmax(f.scores) + 0.01 * (f.user_emb.square().sum(-1).mean()
                                                       + f.item_emb.square().sum(-1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def distillation_step(opt):
        ranks = torch.arange(args.kd_samples, device=device)

        def step():
            users, pos, negs = batch()
            own = torch.cat([pos[:, None], top[users][:, ranks]], 1)  # [B, 1 + M]
            f = student(users, own, negs)  # [B, 1 + M + S]
            with torch.no_grad():
                tf = teacher(users, own, negs)
            sup = sampled_softmax(torch.cat([f.scores[:, :1], f.scores[:, own.shape[1]:]], 1))
            loss = sup + listwise_kl(f.scores, tf.scores)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    shapes = f"B={args.batch}, S={args.negatives}"
    adagrad = torch.optim.Adagrad  # supports sparse gradients; lr as rankdistill's defaults
    for name, fn in (
        (f"teacher step (dim {args.teacher_dim})", supervised_step(teacher, adagrad(teacher.parameters(), 0.05))),
        (f"student step (dim {args.student_dim})", supervised_step(student, adagrad(student.parameters(), 0.2))),
        (f"distillation step (listkl, {args.kd_samples} top-K)", distillation_step(adagrad(student.parameters(), 0.2))),
    ):
        t = median_seconds(fn, device, args.repeats)
        rows.append((name, shapes, t, args.batch / t))
    t = median_seconds(lambda: evaluate(teacher, split, "test", (10, 20)), device, args.repeats, 1)
    rows.append((f"full-ranking evaluation (teacher, dim {args.teacher_dim})", f"{n_u:,} x {n_i:,}", t, n_u / t))
    return rows, out


# -- main -----------------------------------------------------------------------------------------------------------

def torchrec_usable(device: torch.device) -> str | None:
    """None when rankdistill's torchrec models run on ``device``, else why not (one line)."""
    missing = missing_imports(("torchrec", "fbgemm_gpu"))
    if missing:
        return "; ".join(f"{k}: {v}" for k, v in missing.items())
    try:
        import_rankdistill(full=True)
        from rankdistill.config import ModelConfig
        from rankdistill.models.factory import build_model

        model = build_model(ModelConfig(embedding_dim=8), 4, 4, device)
        items = torch.zeros(2, 1, dtype=torch.int64, device=device)
        model(torch.arange(2, device=device), items).scores.sum().backward()
        sync(device)
    except Exception as e:
        return f"a fused table does not run on {device.type}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run with --small sizes)")
    p.add_argument("--wheels", type=Path, help="folder of carried wheels to install when an import is missing")
    p.add_argument("--pure-torch", action="store_true", help="take the pure-torch path even if torchrec imports")
    p.add_argument("--small", action="store_true", help="small sizes (implied by --device cpu)")
    p.add_argument("--users", type=int, help="timed job: users (default 100,000; small 2,000)")
    p.add_argument("--items", type=int, help="timed job: items (default 50,000; small 1,000)")
    p.add_argument("--check-users", type=int, help="CPU-vs-device check: users (default 4,000; small 300)")
    p.add_argument("--check-items", type=int, help="CPU-vs-device check: items (default 3,000; small 200)")
    p.add_argument("--teacher-dim", type=int, default=128)
    p.add_argument("--student-dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--negatives", type=int, default=256)
    p.add_argument("--kd-topk", type=int, default=100)
    p.add_argument("--kd-samples", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU (torch.cuda.is_available() is False); "
                         "use --device cpu for a smoke run")
    small = args.small or device.type == "cpu"
    args.users = args.users or (2_000 if small else 100_000)
    args.items = args.items or (1_000 if small else 50_000)
    args.check_users = args.check_users or (300 if small else 4_000)
    args.check_items = args.check_items or (200 if small else 3_000)
    if small:
        args.batch, args.negatives, args.repeats = min(args.batch, 512), min(args.negatives, 64), min(args.repeats, 3)

    notes = []
    base = missing_imports(("numpy", "pandas"))
    why_not = None if args.pure_torch else torchrec_usable(device)
    if args.wheels is not None and (base or why_not):
        notes.append(f"installed carried wheels: {install_wheels(args.wheels)}")
        base = missing_imports(("numpy", "pandas"))
        why_not = None if args.pure_torch else torchrec_usable(device)
    if base:
        raise SystemExit(f"error: the evaluator needs {', '.join(base)} ({'; '.join(base.values())}); carry their "
                         "wheels and pass --wheels DIR")
    path = "pure torch" if (args.pure_torch or why_not) else "torchrec"
    if args.pure_torch:
        notes.append("pure-torch path asked for (--pure-torch)")
    elif why_not:
        notes.append(f"torchrec NOT usable here, so rankdistill's fused-table models and fbgemm's kernels are NOT "
                     f"checked or timed on this device ({why_not}); pure-torch checks and timings instead")
    import_rankdistill(full=path == "torchrec")

    env = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(), "path": path,
           "torchrec": _version("torchrec"), "fbgemm_gpu": _version("fbgemm_gpu")}
    print(f"# {env['device_name']} ({device}) | torch {env['torch']} (CUDA {env['cuda']}) | torchrec "
          f"{env['torchrec']} | fbgemm_gpu {env['fbgemm_gpu']} | path: {path}")
    for n in notes:
        print(f"# {n}")

    split_small = random_split(args.check_users, args.check_items, 20)
    plant = lambda model: plant_targets(model, split_small)  # noqa: E731
    n_u, n_i = args.check_users, args.check_items
    if path == "torchrec":
        from rankdistill.config import ModelConfig
        from rankdistill.models.factory import build_model

        dot_config = ModelConfig(embedding_dim=32, tower_layers=(32,))
        mlp_config = ModelConfig(kind="mlp", embedding_dim=16, mlp_layers=(32, 16))
        dot = lambda d: build_model(dot_config, n_u, n_i, d, seed=0)  # noqa: E731
        mlp = lambda d: build_model(mlp_config, n_u, n_i, d, seed=0)  # noqa: E731
    else:
        PureMF, PureMLP = pure_rankers()
        dot = lambda d: (torch.manual_seed(0), PureMF(n_u, n_i, 32))[1].to(d)  # noqa: E731
        mlp = lambda d: (torch.manual_seed(0), PureMLP(n_u, n_i, 16))[1].to(d)  # noqa: E731
    checks = {"two_tower" if path == "torchrec" else "dot product": compare(dot, plant, device),
              "mlp": compare(mlp, plant, device)}

    split = plant_targets(_timing_model(path, args), random_split(args.users, args.items, 20))
    steps = torchrec_steps if path == "torchrec" else pure_steps
    rows, extra = steps(args, device, split)

    table = [("check", "result", "detail")] + [r for name, c in checks.items() for r in check_rows(name, c)]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    print()
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("-|-".join("-" * w for w in widths))
    print()
    timing = [("timed on " + env["device_name"], "shapes", "ms (median)", "per second")]
    timing += [(n, s, f"{1e3 * t:,.2f}", f"{rate:,.0f}") for n, s, t, rate in rows]
    widths = [max(len(r[i]) for r in timing) for i in range(4)]
    for i, r in enumerate(timing):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("-|-".join("-" * w for w in widths))
    if device.type == "cuda":
        print(f"\npeak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    sizes = {k: getattr(args, k) for k in ("users", "items", "check_users", "check_items", "teacher_dim",
                                           "student_dim", "batch", "negatives", "kd_topk", "kd_samples", "repeats")}
    print(json.dumps({**env, "notes": notes, "sizes": sizes, "checks": checks,
                      "timings": [{"what": n, "shapes": s, "seconds": t, "per_second": r} for n, s, t, r in rows],
                      **extra}))


def _timing_model(path: str, args) -> nn.Module:
    """A CPU model (dim 16) only to plant the timed split's targets (their values do not matter for timing)."""
    if path == "torchrec":
        from rankdistill.config import ModelConfig
        from rankdistill.models.factory import build_model

        return build_model(ModelConfig(embedding_dim=16), args.users, args.items, "cpu", seed=9)
    PureMF, _ = pure_rankers()
    torch.manual_seed(9)
    return PureMF(args.users, args.items, 16)


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:
        return None


if __name__ == "__main__":
    main()
