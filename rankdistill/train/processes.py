"""The processes of a multi-process run (``torchrun``): the process group, which process writes, running a
command on every process and leaving cleanly. Nothing here knows about models or sharding
(:mod:`rankdistill.train.sharding`).

``rankdistill train`` and ``distill`` see torchrun's variables (WORLD_SIZE, RANK, LOCAL_RANK) and run through
:func:`run_command`: it starts the process group (gloo on CPU, NCCL with one GPU per local rank when CUDA is
available), runs the command on every process, and ends each one with :func:`clean_exit`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn

import torch
import torch.distributed as dist

from rankdistill.errors import RankdistillError

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE, RANK and LOCAL_RANK) started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def active() -> bool:
    """Whether a default process group is up (then the pipeline trains with the sharded engine)."""
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


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object); ``value`` itself outside a process group."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on rank 0 only, its result on every rank; a RankdistillError it raises is raised on every
    rank (not left for the others to wait on). Outside a process group: ``fn()``."""
    if not active():
        return fn()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except RankdistillError as e:
            error = str(e)
    result, error = broadcast((result, error))
    if error is not None:
        raise RankdistillError(error)
    return result
