"""Sharded training with torchrec's DistributedModelParallel (DMP), for runs launched by ``torchrun``.

    torchrun --nproc_per_node 2 -m rankdistill train --out teacher/ ...

``rankdistill train`` and ``distill`` see torchrun's variables (WORLD_SIZE, RANK, LOCAL_RANK), start the
process group (:func:`run_command`: gloo on CPU, NCCL with one GPU per local rank when CUDA is available) and
:func:`rankdistill.pipeline.train_model` switches to :func:`train_sharded` while a process group is up.
Each of the W processes (ranks):

- **Model.** Builds the model with plain torchrec tables (``build_model(..., fused=False)``, on the meta
  device) and lets torchrec's sharding planner place them with the fused kernel and row-wise Adagrad applied
  in backward: table-wise or column-wise on CPU, row-wise as well on GPU (``RANKDISTILL_SHARDING`` narrows the
  choice, e.g. ``table_wise``). Dense weights (towers, MLP) are replicated and averaged by DDP. The initial
  weights are those of the single-process model with the same seed.
- **Data.** Every rank draws the single-process Trainer's seeded permutation and shared negatives and takes
  its contiguous share of each global batch of B rows (b_r rows). Its loss is scaled by ``b_r·W/B``: DDP and
  torchrec average gradients over ranks, so the update equals one single-process step on the global batch
  (a batch with fewer than W rows, at most the last of an epoch, is skipped).
- **Evaluation.** The full tables are gathered to rank 0, which evaluates with the ordinary full-ranking
  evaluator and broadcasts the metrics, so early stopping agrees on every rank.
- **Checkpoints.** Rank 0 writes one file with every rank's shards and optimizer state; on resume rank 0 reads
  it and hands each rank its part. It resumes only at the same world size (a clear error otherwise).
- **End.** The best weights go to every rank as an ordinary (fused, unsharded) model; rank 0 computes the
  test metrics. Every rank therefore returns the same :class:`TrainedModel`; only rank 0 writes files.

The sharding plan and the planner's per-rank memory estimate are written to the run log
(``train_log.jsonl``, one ``"event": "sharding_plan"`` line per model).

Limits: every rank builds the full initial model once and rank 0 holds full tables for evaluation, so the
tables must fit one host's memory (not one GPU's). Column-wise shards keep row-wise Adagrad's accumulator per
column block, so a table split into several column shards trains slightly differently from one process.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from rankdistill.config import ModelConfig, TrainConfig
from rankdistill.data.split import Split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.embedding import EmbeddingTable
from rankdistill.models.factory import build_model
from rankdistill.train.checkpoint import Checkpointer, fingerprint
from rankdistill.train.schedule import lr_factor
from rankdistill.train.trainer import FitResult, NonFiniteLoss, restore_loop_state, rng_state

if TYPE_CHECKING:
    from rankdistill.pipeline import RunConfig, TrainedModel

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
CPU_SHARDING = ("table_wise", "column_wise")
GPU_SHARDING = ("table_wise", "column_wise", "row_wise", "table_row_wise")

# torchrec 1.8's sharded state_dicts hold ShardedTensors, which torch now marks deprecated on every access
warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)


# -- the processes ---------------------------------------------------------------------------------------

def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE, RANK and LOCAL_RANK) started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def active() -> bool:
    """Whether a default process group is up (then train_model trains with DMP)."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0, or a process outside any process group: the one that writes files and prints."""
    return not active() or dist.get_rank() == 0


def process_device() -> torch.device:
    """This rank's device: cuda:LOCAL_RANK under NCCL, else the CPU (also outside a process group)."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_process_group() -> None:
    """Start the default process group from torchrun's variables (NCCL when CUDA is available, else gloo);
    does nothing when one is already up."""
    if active():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def clean_exit(status: int = 0) -> NoReturn:
    """End this process without running the interpreter's finalisation.

    At interpreter exit a gloo thread can still be freeing finished work from backward; it needs the GIL, which
    finalisation no longer hands out, and the process aborts (SIGABRT in 5 of 32 runs). ``os._exit`` skips
    finalisation (measured: 0 of 32; shared notes ``torchrec-cpu.md`` §3): atexit handlers do not run, so close
    your files before calling it; stdout and stderr are flushed here. After an error on this rank the barrier
    is skipped: the other ranks may never reach it.
    """
    if active():
        try:
            if status == 0:
                dist.barrier()
            dist.destroy_process_group()
        except Exception:  # a peer already gone: nothing left to wait for
            status = status or 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_command(main: Callable[[Any], int], args: Any) -> NoReturn:
    """Run a command's ``main(args)`` on every rank and exit cleanly with its status.

    A RankdistillError exits with status 2 and prints one ``error: ...`` line per machine (rank 0's plain, the
    first process of each other machine's with its rank: a missing file may be missing there only); any other
    exception keeps its traceback (every rank that has one) and exits with status 1."""
    import traceback

    status = 1
    try:
        init_process_group()
        status = main(args)
    except RankdistillError as e:
        if is_main_process():
            print(f"error: {e}", file=sys.stderr)
        elif os.environ.get("LOCAL_RANK") == "0":
            print(f"error: [rank {dist.get_rank()}] {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        status = 130
    except BaseException:  # noqa: BLE001 - a bug: keep its traceback, and leave without hanging
        traceback.print_exc()
        status = 1
    clean_exit(status)


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _on_rank0(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on rank 0 only, its result on every rank; a RankdistillError it raises is raised on every
    rank (not left for the others to wait on)."""
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except RankdistillError as e:
            error = str(e)
    result, error = _broadcast((result, error))
    if error is not None:
        raise RankdistillError(error)
    return result


# -- shards <-> full tensors -----------------------------------------------------------------------------

def _is_sharded(value: Any) -> bool:
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    return isinstance(value, ShardedTensor)


def local_copy(value: Any) -> Any:
    """This rank's part of a (nested) state: each ShardedTensor becomes the list of its local shard tensors,
    each tensor a CPU copy; other values as they are."""
    if isinstance(value, dict):
        return {k: local_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(local_copy(v) for v in value)
    if _is_sharded(value):
        return [s.tensor.detach().to("cpu", copy=True) for s in value.local_shards()]
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    return value


def copy_local_into(live: Any, saved: Any) -> None:
    """Copy a :func:`local_copy` back into a live state of the same structure and sharding, in place."""
    if isinstance(live, dict):
        for k, v in live.items():
            copy_local_into(v, saved[k])
    elif isinstance(live, (list, tuple)):
        for a, b in zip(live, saved):
            copy_local_into(a, b)
    elif _is_sharded(live):
        shards = live.local_shards()
        if len(shards) != len(saved):
            raise RankdistillError("the checkpoint's shards do not match this run's sharding plan; "
                                   "resume with the same number of processes and RANKDISTILL_SHARDING")
        for shard, tensor in zip(shards, saved):
            shard.tensor.detach().copy_(tensor)
    elif isinstance(live, torch.Tensor):
        live.detach().copy_(saved)


def _pieces(value: Any) -> Any:
    """What rank 0 needs to rebuild ``value``: (global size, [(offsets, local tensor)]) for a ShardedTensor."""
    if _is_sharded(value):
        return ("sharded", list(value.size()), [(list(s.metadata.shard_offsets), s.tensor.detach().to("cpu", copy=True))
                                                for s in value.local_shards()])
    return value.detach().to("cpu", copy=True)


def _assemble(parts: list) -> torch.Tensor:
    """The full tensor from every rank's :func:`_pieces` of it."""
    if not (isinstance(parts[0], tuple) and parts[0][0] == "sharded"):
        return parts[0]  # replicated: rank 0's copy
    size, dtype = parts[0][1], next(t.dtype for p in parts for _, t in p[2])
    full = torch.empty(size, dtype=dtype)
    for _, _, shards in parts:
        for offsets, tensor in shards:
            full[tuple(slice(o, o + n) for o, n in zip(offsets, tensor.shape))] = tensor
    return full


def gather_full_state(dmp: nn.Module) -> dict[str, torch.Tensor] | None:
    """The sharded model's full state_dict (CPU tensors) on rank 0, None elsewhere; every rank must call it."""
    pieces = {k: _pieces(v) for k, v in dmp.state_dict().items()}
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(pieces, gathered, dst=0)
    if gathered is None:
        return None
    return {k: _assemble([g[k] for g in gathered]) for k in pieces}


# -- the sharding plan -------------------------------------------------------------------------------------

def sharding_types(device: torch.device) -> tuple[str, ...]:
    """The sharding types the planner may choose: RANKDISTILL_SHARDING (comma-separated) or every type the
    device supports (row-wise needs CUDA: torchrec's CPU kernels have no row-wise sharding)."""
    allowed = GPU_SHARDING if device.type == "cuda" else CPU_SHARDING
    text = os.environ.get("RANKDISTILL_SHARDING", "").strip()
    if not text:
        return allowed
    asked = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in asked if t not in allowed]
    if bad:
        hint = " (row-wise sharding needs CUDA)" if any("row" in t for t in bad) and device.type != "cuda" else ""
        raise RankdistillError(f"RANKDISTILL_SHARDING={text!r}: {', '.join(bad)} not available on {device.type}"
                               f"{hint}; choose from {', '.join(allowed)}")
    return asked


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def plan_sharding(model: nn.Module, device: torch.device, batch_size: int, types: tuple[str, ...],
                  dense_bytes: int) -> tuple[Any, dict]:
    """Run torchrec's planner (on this rank) -> (ShardingPlan, JSON-able record of the plan and the per-rank
    memory estimate). ``batch_size``: rows per rank per step; ``dense_bytes``: replicated dense state per rank."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
    from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
    from torchrec.distributed.planner.types import KernelConfig, PlannerError, TopologyFactory, TrainerConfig

    world = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    hbm = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    # the CPU's memory is shared by the local ranks; a GPU's memory is its own
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=world, local_world_size=local, hbm_cap_bytes=hbm,
                      ddr_cap_bytes=_host_memory() // max(local, 1)),
        kernel_config=KernelConfig(compute_device=device.type))
    tables = [m.name for m in model.modules() if isinstance(m, EmbeddingTable)]
    constraints = {t: ParameterConstraints(sharding_types=list(types), compute_kernels=["fused"]) for t in tables}
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=batch_size, constraints=constraints,
                                       storage_reservation=FixedPercentageStorageReservation(0.15))
    try:
        plan = planner.plan(model, [EmbeddingBagCollectionSharder()])
    except PlannerError as e:
        raise RankdistillError(f"torchrec's planner found no sharding of the tables over {world} processes with "
                               f"{', '.join(types)} ({str(e).splitlines()[0]})") from None
    return plan, plan_record(plan, getattr(planner, "_best_plan", None) or [], world, dense_bytes, topology)


def plan_record(plan: Any, best_plan: list, world: int, dense_bytes: int, topology: Any) -> dict:
    """JSON-able: every table's sharding type, kernel and shards, and the estimated bytes per rank (the
    planner's estimate for the embedding shards, plus the replicated dense weights, gradients and Adam state)."""
    tables = []
    for module, params in sorted(plan.plan.items()):
        for table, p in sorted(params.items()):
            shards = [{"rank": s.placement.rank(), "offsets": list(s.shard_offsets), "sizes": list(s.shard_sizes)}
                      for s in p.sharding_spec.shards]
            tables.append({"module": module, "table": table, "sharding_type": p.sharding_type,
                           "compute_kernel": p.compute_kernel, "ranks": list(p.ranks or []), "shards": shards})
    memory = [{"rank": r, "embedding_hbm_bytes": 0, "embedding_ddr_bytes": 0, "dense_bytes": dense_bytes}
              for r in range(world)]
    for option in best_plan:
        for shard in option.shards:
            memory[shard.rank]["embedding_hbm_bytes"] += int(shard.storage.hbm)
            memory[shard.rank]["embedding_ddr_bytes"] += int(shard.storage.ddr)
    for m in memory:
        m["total_bytes"] = m["embedding_hbm_bytes"] + m["embedding_ddr_bytes"] + dense_bytes
    devices = topology.devices
    capacity = {"hbm_bytes": int(devices[0].storage.hbm), "ddr_bytes": int(devices[0].storage.ddr)}
    return {"tables": tables, "memory_per_rank": memory, "capacity_per_rank": capacity}


def plan_summary(record: dict) -> str:
    """One line: where each table went and the largest per-rank estimate."""
    where = "; ".join(f"{t['table']} {t['sharding_type']} on rank{'s' if len(t['ranks']) > 1 else ''} "
                      f"{','.join(map(str, t['ranks']))}" for t in record["tables"])
    peak = max(m["total_bytes"] for m in record["memory_per_rank"])
    return f"{where}; estimated memory per rank up to {_bytes(peak)}"


def _bytes(n: float) -> str:
    unit = 0
    while n >= 1024 and unit < 3:
        n, unit = n / 1024, unit + 1
    return f"{n:,.0f} B" if unit == 0 else f"{n:,.1f} {('KiB', 'MiB', 'GiB')[unit - 1]}"


# -- training ----------------------------------------------------------------------------------------------

def train_sharded(split: Split, model_config: ModelConfig, run: RunConfig, name: str,
                  objective: nn.Module | None = None, out_dir: str | Path | None = None) -> TrainedModel:
    """:func:`rankdistill.pipeline.train_model` under a process group: train with DMP, return the same
    TrainedModel on every rank (the best weights as an ordinary fused model; test metrics from rank 0).
    Only rank 0 logs, prints and writes; every rank must call it."""
    from rankdistill.pipeline import REPORT_METRICS, TrainedModel
    from rankdistill.train.callbacks import JsonlLog, Progress, TensorBoard
    from rankdistill.train.objectives import DistillationObjective, SupervisedObjective

    if model_config.kind == "lightgcn":
        raise RankdistillError("--model lightgcn propagates over the whole training graph at every step and trains "
                               "in one process only; run it without torchrun")
    device = process_device()
    objective = objective or SupervisedObjective.from_config(run.train, split)
    ranking = [n for n in ("dcd", "rce") if isinstance(objective, DistillationObjective) and n in objective.terms]
    if ranking:
        raise RankdistillError(f"--kd {ranking[0]} ranks the student's whole catalogue every epoch, which the sharded "
                               "student cannot do yet; train it in one process")
    main = dist.get_rank() == 0
    callbacks, log = [], None
    if main and not run.quiet:
        callbacks.append(Progress(name))
    if out_dir is not None:
        log = Path(out_dir) / "train_log.jsonl"
        if main:
            callbacks += [JsonlLog(log), TensorBoard(Path(out_dir) / "tensorboard", name)]
    identity = {"model_config": asdict(model_config)}
    if isinstance(objective, DistillationObjective):
        identity["distill"] = run.distill.to_dict()
        identity["teacher"] = objective.source_identity()  # weights or knowledge, online or cached
    checkpoints = Path(out_dir) / "checkpoints" / name if out_dir is not None else None
    config = replace(run.train, seed=run.seed)
    fit = ShardedFit(split, model_config, objective, config, name, device, run.seed, callbacks, checkpoints,
                     identity, log, quiet=run.quiet)
    best_state, result = fit.fit()
    del fit
    model = build_model(model_config, split.n_users, split.n_items, device, seed=run.seed)
    model.load_state_dict(_broadcast(best_state))
    metrics = _on_rank0(lambda: evaluate(model, split, "test", run.ks, REPORT_METRICS))
    return TrainedModel(model, result, metrics)


class ShardedFit:
    """One model trained with DMP on every rank: the same loop, batches, learning rates, early stopping and
    checkpoints as :class:`rankdistill.train.trainer.Trainer`, with the sharded model inside."""

    def __init__(self, split: Split, model_config: ModelConfig, objective: nn.Module, config: TrainConfig,
                 name: str, device: torch.device, seed: int, callbacks: list, checkpoint_dir: Path | None,
                 identity: dict, log: Path | None = None, quiet: bool = True) -> None:
        self.split, self.objective, self.config, self.name, self.device = split, objective, config, name, device
        self.callbacks, self.model_config = callbacks, model_config
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        users, items = split.train_pairs()
        self.users, self.items = torch.from_numpy(users).to(device), torch.from_numpy(items).to(device)
        self.steps_per_epoch = math.ceil(len(self.users) / config.batch_size)
        self.step, self.epoch, self.epoch_steps = 0, 1, 0
        self.dmp, self.plan = self._shard(model_config, seed, log, quiet)
        self.dense_params = [p for n, p in self.dmp.named_parameters() if ".ebc." not in f".{n}" and p.requires_grad]
        self.objective_params = [p for p in objective.parameters() if p.requires_grad]
        dense = self.dense_params + self.objective_params
        self.dense_optimizer = torch.optim.Adam(dense, lr=config.dense_lr) if dense else None
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        metric, _, k = config.select_metric.partition("@")
        self.select_k, self.metric_name = int(k), metric
        self.table_lr = model_config.lr
        self.eval_model = (build_model(model_config, split.n_users, split.n_items, device, seed=seed)
                           if self.rank == 0 else None)
        self.checkpointer = None
        if checkpoint_dir is not None:
            ident = {"model": name, "train": asdict(config), "data": {
                "n_users": split.n_users, "n_items": split.n_items, "split": split.kind,
                "train": fingerprint(split.train.indptr, split.train.indices),
                "valid": fingerprint(split.valid.indptr, split.valid.indices)},
                **identity, "distributed": {"world_size": self.world}}
            self.checkpointer = ShardedCheckpointer(checkpoint_dir, ident, self.world)

    # -- building --------------------------------------------------------------------------------------
    def _shard(self, model_config: ModelConfig, seed: int, log: Path | None, quiet: bool):
        """DMP over the blueprint model, planned on rank 0, started from the single-process initial weights."""
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel

        split, device = self.split, self.device
        blueprint = build_model(model_config, split.n_users, split.n_items, "meta", seed=seed, fused=False)
        dense_bytes = 4 * sum(p.numel() * p.element_size() for n, p in blueprint.named_parameters()
                              if ".ebc." not in f".{n}")  # weights, gradients, Adam's two moments
        types = sharding_types(device)
        rows = math.ceil(self.config.batch_size / self.world)
        plan, record = _on_rank0(lambda: plan_sharding(blueprint, device, rows, types, dense_bytes))
        if self.rank == 0:
            entry = {"model": self.name, "event": "sharding_plan", "world_size": self.world,
                     "backend": dist.get_backend(), "device": device.type, **record}
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            if not quiet:
                print(f"  [{self.name}] sharded over {self.world} processes ({dist.get_backend()}): "
                      f"{plan_summary(record)}", file=sys.stderr, flush=True)
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore", FutureWarning)  # torchrec's DDP call uses a deprecated argument
            # static_graph=False: DDP must not look for tensors in the model's output (a Forward dataclass)
            dmp = DistributedModelParallel(blueprint, device=device, plan=plan,
                                           sharders=[EmbeddingBagCollectionSharder()],
                                           data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False))
        initial = build_model(model_config, split.n_users, split.n_items, "cpu", seed=seed).state_dict()
        dmp.load_state_dict(dict(initial))  # a copy: DMP rewrites the keys of the dict it is given
        return dmp, record

    # -- batches ---------------------------------------------------------------------------------------
    def batches(self):
        """Yields (users [b_r], positives [b_r], shared negatives [S], B): this rank's contiguous share of each
        global batch of the single-process Trainer (same permutation, same negatives)."""
        c, r, w = self.config, self.rank, self.world
        perm = torch.randperm(len(self.users), generator=self.generator, device=self.device)
        for a in range(0, len(perm), c.batch_size):
            idx = perm[a : a + c.batch_size]
            negs = torch.randint(self.split.n_items, (c.negatives,), generator=self.generator, device=self.device)
            if len(idx) < w:  # a rank would get no rows
                continue
            mine = idx[len(idx) * r // w : len(idx) * (r + 1) // w]
            yield self.users[mine], self.items[mine], negs, len(idx)

    # -- one epoch -------------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        c = self.config
        if c.lr_schedule == "constant" and not c.warmup_steps:
            return
        f = lr_factor(c.lr_schedule, self.step, c.epochs * self.steps_per_epoch, c.warmup_steps)
        self.table_lr = self.model_config.lr * f
        opt = self.dmp.fused_optimizer
        for g in opt.param_groups:
            g["lr"] = self.table_lr
        opt.step()  # pushes the learning rate into the kernels; the update itself happens in backward
        if self.dense_optimizer is not None:
            for g in self.dense_optimizer.param_groups:
                g["lr"] = c.dense_lr * f

    def _average_objective_grads(self) -> None:
        """The objective's own weights (distillation projections) are outside DDP: average their gradients."""
        grads = [p.grad for p in self.objective_params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def train_step(self, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor, total: int) -> dict[str, float]:
        """One step on this rank's rows (users [b_r], pos [b_r], negs [S]) of a global batch of ``total`` rows
        -> the global batch's loss parts (the same on every rank)."""
        self._set_lr()
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.config.bf16 and self.device.type == "cuda" else nullcontext())
        with autocast:
            loss, parts = self.objective(self.dmp, users, pos, negs)
        scale = len(users) * self.world / total  # averaging over ranks then gives the global batch mean
        names = list(parts)
        stats = torch.stack([loss.detach().float(), *(parts[k].float() for k in names)]) * scale
        dist.all_reduce(stats)  # the global batch's loss and parts, and one verdict on finiteness for all
        stats = (stats / self.world).tolist()
        values = dict(zip(names, stats[1:]))
        if not math.isfinite(stats[0]):  # before backward: the fused update has not run yet
            raise NonFiniteLoss(self.epoch, self.epoch_steps + 1, values)
        if self.dense_optimizer is not None:
            self.dense_optimizer.zero_grad(set_to_none=True)
        (loss * scale).backward()  # embedding rows are updated here, on the rank that holds them
        self._average_objective_grads()
        if self.dense_optimizer is not None:
            if self.config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.dense_params + self.objective_params, self.config.clip_grad_norm)
            self.dense_optimizer.step()
        self.step += 1
        self.epoch_steps += 1
        return values

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.dmp.train()
        self.objective.train()
        if hasattr(self.objective, "on_epoch_start"):
            self.objective.on_epoch_start(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(epoch, self.steps_per_epoch)
        self.epoch, self.epoch_steps = epoch, 0
        sums: dict[str, float] = {}
        for users, pos, negs, total in self.batches():
            values = self.train_step(users, pos, negs, total)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            for cb in self.callbacks:
                cb.on_step(values, total)
        return {k: v / max(self.epoch_steps, 1) for k, v in sums.items()}

    def validate(self) -> tuple[dict[str, float], dict | None]:
        """(validation metrics on every rank, the full state on rank 0 / None elsewhere)."""
        full = gather_full_state(self.dmp)

        def run() -> dict[str, float]:
            self.eval_model.load_state_dict(full)
            return evaluate(self.eval_model, self.split, "valid", (self.select_k,), (self.metric_name,))

        return _on_rank0(run), full

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self) -> tuple[dict | None, FitResult]:
        """-> (the best full state on rank 0, None elsewhere; the fit's record, the same on every rank)."""
        c = self.config
        best, best_state, best_epoch, since, history, start_epoch, elapsed = -math.inf, None, 0, 0, [], 1, 0.0
        resumed = self._resume()
        if resumed is not None:
            best, best_epoch, since = resumed["best"], resumed["best_epoch"], resumed["since"]
            history, start_epoch, elapsed = resumed["history"], resumed["epoch"] + 1, resumed["seconds"]
            best_state = resumed.get("best_state")
            if resumed["finished"]:
                start_epoch = c.epochs + 1
        select = f"{self.metric_name}@{self.select_k}"
        start = time.perf_counter() - elapsed
        try:
            for epoch in range(start_epoch, c.epochs + 1):
                t0 = time.perf_counter()
                try:
                    losses = self.train_epoch(epoch)
                except NonFiniteLoss as e:
                    raise RankdistillError(f"training {self.name} stopped: {e}; lower the learning rate "
                                           "or add --l2") from None
                train_s = time.perf_counter() - t0
                valid, full = self.validate()
                record = {"model": self.name, "epoch": epoch, "loss": losses, "valid": valid,
                          "train_seconds": round(train_s, 3),
                          "examples_per_second": round(len(self.users) / max(train_s, 1e-9), 1),
                          "lr": [self.table_lr] * len(self.plan["tables"]), "world_size": self.world}
                history.append(record)
                for cb in self.callbacks:
                    cb.on_epoch_end(record)
                if valid[select] > best:
                    best, best_epoch, since, best_state = valid[select], epoch, 0, full
                else:
                    since += 1
                finished = since >= c.patience or epoch == c.epochs
                if self.checkpointer:
                    self._save(epoch, best, best_state, best_epoch, since, history, time.perf_counter() - start,
                               finished)
                if finished:
                    break
        finally:
            for cb in self.callbacks:
                cb.close()
        best_valid = history[best_epoch - 1]["valid"] if history and best_epoch else {}
        if _broadcast(best_state is None):  # rank 0's verdict: no best epoch yet, keep the current weights
            best_state = gather_full_state(self.dmp)
        return best_state, FitResult(best_epoch, best_valid, time.perf_counter() - start, history,
                                     resumed["epoch"] if resumed is not None else 0)

    # -- checkpoints -----------------------------------------------------------------------------------
    def local_state(self) -> dict:
        """This rank's part of the training state (CPU tensors); every rank must call it together."""
        objective = {k: v for k, v in self.objective.state_dict().items() if not k.startswith("teacher.")}
        return local_copy({
            "model": self.dmp.state_dict(), "tables": self.dmp.fused_optimizer.state_dict(),
            "dense_optimizer": self.dense_optimizer.state_dict() if self.dense_optimizer else None,
            "objective": objective, "step": self.step,
            "rng": rng_state(self),
        })

    def load_local_state(self, state: dict) -> None:
        model = self.dmp.state_dict()
        copy_local_into(model, state["model"])
        self.dmp.load_state_dict(model)
        tables = self.dmp.fused_optimizer.state_dict()
        copy_local_into(tables, state["tables"])
        self.dmp.fused_optimizer.load_state_dict(tables)
        restore_loop_state(self, state)

    def _save(self, epoch, best, best_state, best_epoch, since, history, seconds, finished) -> None:
        ranks = [None] * self.world if self.rank == 0 else None
        dist.gather_object(self.local_state(), ranks, dst=0)
        if self.rank == 0:
            self.checkpointer.save({
                "epoch": epoch, "best": best, "best_state": best_state, "best_epoch": best_epoch, "since": since,
                "history": history, "seconds": seconds, "finished": finished, "world_size": self.world,
                "plan": self.plan["tables"], "ranks": ranks})

    def _resume(self) -> dict | None:
        """Rank 0 reads the checkpoint (refusing another run's or another world size's), every rank gets its
        part; -> the shared fields (best_state on rank 0 only), or None when there is none."""
        if self.checkpointer is None:
            return None
        state = _on_rank0(lambda: self._read_checkpoint(self.checkpointer))
        if not state:
            return None
        mine = [None]
        dist.scatter_object_list(mine, self._aside.pop("ranks") if self.rank == 0 else None, src=0)
        self.load_local_state(mine[0])
        if self.rank == 0:
            state["best_state"] = self._aside.pop("best_state")
        return state

    def _read_checkpoint(self, checkpointer: "ShardedCheckpointer") -> dict | None:
        """Rank 0: the checkpoint's shared fields; the ranks' parts and the best weights are kept aside (not
        broadcast to every rank)."""
        state = checkpointer.load()
        if state is None:
            return None
        if state.get("plan") != self.plan["tables"]:
            raise RankdistillError(f"checkpoint {checkpointer.path} was written with another sharding plan "
                                   f"({_plan_text(state.get('plan'))}; this run: {_plan_text(self.plan['tables'])}); "
                                   "resume with the same RANKDISTILL_SHARDING, or delete the checkpoint to start over")
        self._aside = {"ranks": state.pop("ranks"), "best_state": state.pop("best_state")}
        return state


def _plan_text(tables: list | None) -> str:
    return ", ".join(f"{t['table']} {t['sharding_type']} on {t['ranks']}" for t in tables or [])


class ShardedCheckpointer(Checkpointer):
    """A :class:`Checkpointer` whose refusal names the world sizes when they differ."""

    def __init__(self, directory: str | Path, identity: dict, world_size: int) -> None:
        super().__init__(directory, identity)
        self.world_size = world_size

    def load(self) -> dict | None:
        try:
            return super().load()
        except RankdistillError:
            saved = self._saved_world_size()
            if saved is not None and saved != self.world_size:
                raise RankdistillError(
                    f"checkpoint {self.path} was written by a run of {_processes(saved)} and this run has "
                    f"{_processes(self.world_size)}; a sharded checkpoint resumes only with as many processes "
                    f"(torchrun --nnodes × --nproc_per_node = {saved}), or use another --out or delete the "
                    "checkpoint to start over") from None
            raise

    def _saved_world_size(self) -> int | None:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:
            return None
        return int(state.get("identity", {}).get("distributed", {}).get("world_size", 1))


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"
