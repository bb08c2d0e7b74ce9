"""Sharding with torchrec's DistributedModelParallel (DMP): the planner, the sharded model, and moving
states between shards and full tensors. Nothing here runs a training loop (the sharded engine,
:mod:`rankdistill.train.sharded_engine`) or manages processes (:mod:`rankdistill.train.processes`).

- **Plan.** Tables are placed by torchrec's sharding planner with the fused kernel and row-wise Adagrad applied
  in backward: table-wise or column-wise on CPU, row-wise as well on GPU (``RANKDISTILL_SHARDING`` narrows the
  choice, e.g. ``table_wise``). The plan and the planner's per-rank memory estimate make a JSON-able record.
- **Model.** :func:`shard_model` wraps the blueprint model (plain torchrec tables on the meta device) in DMP;
  dense weights (towers, MLP) are replicated and averaged by DDP. It starts from the single-process model's
  initial weights with the same seed.
- **States.** :func:`gather_full_state` assembles full tensors on rank 0 (evaluation, best weights),
  :func:`load_full_state` copies a full state back into every rank's shards; :func:`local_copy` and
  :func:`copy_local_into` move one rank's part (checkpoints).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rankdistill.config import ModelConfig
from rankdistill.errors import RankdistillError
from rankdistill.models.embedding import EmbeddingTable
from rankdistill.models.factory import build_model
from rankdistill.train.processes import broadcast

CPU_SHARDING = ("table_wise", "column_wise")
GPU_SHARDING = ("table_wise", "column_wise", "row_wise", "table_row_wise")

# torchrec 1.8's sharded state_dicts hold ShardedTensors, which torch now marks deprecated on every access
warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)

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



def load_full_state(dmp: nn.Module, full: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Rank 0's full state (``full``, None elsewhere) into every rank's part of the sharded model; every rank
    must call it. -> the full state (on every rank)."""
    full = broadcast(full)
    state = dmp.state_dict()
    for key, live in state.items():
        value = full[key]
        if _is_sharded(live):
            for shard in live.local_shards():
                where = tuple(slice(o, o + n) for o, n in zip(shard.metadata.shard_offsets, shard.tensor.shape))
                shard.tensor.detach().copy_(value[where])
        else:
            live.detach().copy_(value)
    dmp.load_state_dict(state)
    return full


def is_dense(name: str) -> bool:
    """Whether a parameter of the sharded model is dense (replicated, trained with Adam), not a table's."""
    return ".ebc." not in f".{name}"

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



def plan_text(tables: list | None) -> str:
    return ", ".join(f"{t['table']} {t['sharding_type']} on {t['ranks']}" for t in tables or [])


def shard_model(blueprint: nn.Module, plan: Any, device: torch.device, initial: dict[str, torch.Tensor]) -> nn.Module:
    """DMP over ``blueprint`` (:func:`blueprint_model`) with ``plan`` (:func:`plan_sharding`), its weights set
    to ``initial`` (the single-process model's state_dict)."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", FutureWarning)  # torchrec's DDP call uses a deprecated argument
        # static_graph=False: DDP must not look for tensors in the model's output (a Forward dataclass)
        dmp = DistributedModelParallel(blueprint, device=device, plan=plan,
                                       sharders=[EmbeddingBagCollectionSharder()],
                                       data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False))
    dmp.load_state_dict(dict(initial))  # a copy: DMP rewrites the keys of the dict it is given
    return dmp


def blueprint_model(model_config: ModelConfig, n_users: int, n_items: int, seed: int) -> nn.Module:
    """The model with plain torchrec tables on the meta device: what the planner plans and DMP shards."""
    return build_model(model_config, n_users, n_items, "meta", seed=seed, fused=False)
