"""Independent trainings side by side, one worker process each (``RunConfig.workers``).

One training keeps one CPU core busy (one thread: more threads spin and run slower on shared machines, see the
torchrec notes), and the models of a run are partly independent: the teacher and the student alone need
nothing from each other, and ``--kd auto``'s pilots need only the teacher. Workers train such models in
separate processes (fresh interpreters, each on as many threads as the main process uses) and write the usual
checkpoints. The main process then resumes each
model from its checkpoint (finished, or paused after a pilot's epochs), which restores weights, optimizer
state and every random generator, so a run gives the same models, to the last digit, with any number of
workers (``tests/test_workers.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rankdistill.errors import RankdistillError

MIN_PAIRS = 50_000  # auto: with fewer training interactions a run stays in one process (see resolve_workers)
MAX_AUTO = 4  # auto: at most this many workers (a run trains at most len(auto_menu) pilots side by side, one more in
#              distill, where the student alone is a pilot too; with the default menu 3 or 4)


WORKER = "import sys; from rankdistill.train.workers import _work; _work(*sys.argv[1:])"


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int, device: str, n_pairs: int) -> int:
    """The number of processes that train side by side: ``workers`` when given (>= 1); for 0 (auto) one per
    ``torch.get_num_threads()`` CPU cores, at most :data:`MAX_AUTO`, and 1 on a GPU (one device to share),
    under torchrun (the processes shard one model) or with fewer than :data:`MIN_PAIRS` training interactions
    (a worker's start, about 4 s of imports, would cost more than running side by side saves)."""
    from rankdistill.train import processes

    if workers < 0:
        raise RankdistillError(f"workers must be >= 0 (0: one per CPU core), got {workers}")
    if processes.active():
        return 1
    if workers:
        return workers
    if torch.device(device).type != "cpu" or n_pairs < MIN_PAIRS:
        return 1
    return max(1, min(MAX_AUTO, cpu_cores() // max(torch.get_num_threads(), 1)))


@contextmanager
def checkpoint_home(out_dir: str | Path | None, workers: int) -> Iterator[str | Path | None]:
    """``out_dir``; with workers and no ``out_dir``, a temporary directory for the checkpoints through which
    the workers hand their models back (removed afterwards)."""
    if out_dir is not None or workers == 1:
        yield out_dir
        return
    with tempfile.TemporaryDirectory(prefix="rankdistill-") as tmp:
        yield tmp


def side_by_side(calls: list[tuple[Callable, tuple]], workers: int) -> list:
    """``[fn(*args) for fn, args in calls]``, each call in its own worker process, ``workers`` at a time -> their
    results in order. ``fn`` must be a module-level function; it, ``args`` and its result must pickle
    (configs, splits, tensors). A call that raises stops the others, and its error is raised here.

    A worker is a fresh interpreter running :data:`WORKER` with a job and a result file (no forked torch or
    OpenMP state) that never imports the caller's ``__main__``, so a script calling :func:`rankdistill.run`
    needs no ``if __name__ == "__main__":`` guard (multiprocessing's spawn would)."""
    with tempfile.TemporaryDirectory(prefix="rankdistill-workers-") as tmp:
        pending, running, results = list(enumerate(calls)), {}, {}
        try:
            while pending or running:
                while pending and len(running) < max(1, workers):
                    i, (fn, args) = pending.pop(0)
                    job, result = Path(tmp) / f"{i}.job", Path(tmp) / f"{i}.result"
                    job.with_suffix(".path").write_text(json.dumps(sys.path))  # where fn's module is found
                    torch.save((torch.get_num_threads(), fn, args), job)
                    running[i] = (subprocess.Popen([sys.executable, "-c", WORKER, str(job), str(result)]), result)
                i = _wait_any(running)
                process, result = running.pop(i)
                results[i] = _outcome(process.returncode, result, calls[i][0])
        finally:
            for process, _ in running.values():  # an error or an interrupt: stop the others
                process.terminate()
                process.wait()
    return [results[i] for i in range(len(calls))]


def _wait_any(running: dict) -> int:
    """The key of a finished process of ``running`` (waits for one)."""
    while True:
        for i, (process, _) in running.items():
            if process.poll() is not None:
                return i
        time.sleep(0.05)


def _outcome(returncode: int, result: Path, fn: Callable):
    """A worker's result, or its error raised here."""
    if not result.exists():
        raise RankdistillError(f"a worker running {fn.__name__} ended with exit status {returncode} and no result "
                               "(out of memory?); run with workers=1 to see the error in this process")
    ok, value = torch.load(result, weights_only=False)
    if not ok:
        raise value
    return value


def _work(job: str, result: str) -> None:
    sys.path[:] = json.loads(Path(job).with_suffix(".path").read_text())
    threads, fn, args = torch.load(job, weights_only=False)
    torch.set_num_threads(threads)
    try:
        out = (True, fn(*args))
    except Exception as e:  # handed back to the caller, which raises it
        out = (False, e)
    try:
        torch.save(out, result)
    except Exception:  # an error that does not pickle: its text
        torch.save((False, RankdistillError(f"{type(out[1]).__name__}: {out[1]}")), result)
