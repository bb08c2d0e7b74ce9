"""One command at a time per output directory.

Two ``rankdistill train --out M`` started together would both train, both append to ``M/train_log.jsonl``
and both write ``M/checkpoints``. :func:`lock_output` takes an exclusive lock on ``.M.lock`` beside ``M``
(``fcntl.flock`` through the ``filelock`` package, which torch already depends on) for as long as the command
runs; a second command on the same directory is refused at once. The lock file sits beside the directory, not
in it, because a finished model directory is renamed into place over the old one.

The kernel releases a ``flock`` when its process ends, however it ends (``kill -9`` included), so a crashed
run never leaves a lock that blocks the next one; the empty lock file that stays behind holds no state.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from rankdistill.errors import RankdistillError
from rankdistill.paths import writing


def lock_path(out: str | Path) -> Path:
    out = Path(out).resolve()
    return out.with_name(f".{out.name}.lock")


@contextmanager
def lock_output(out: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold the lock of directory ``out`` for the block; RankdistillError at once when another process holds it.
    Under torchrun only rank 0 takes it (the other ranks of the same command would otherwise be refused)."""
    if os.environ.get("RANK", "0") != "0":
        yield lock_path(out)
        return
    path = lock_path(out)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, blocking=False)
    try:
        with writing(path):
            lock.acquire()
    except Timeout:
        raise RankdistillError(f"{option} {out} is in use by another rankdistill command (lock {path} is held); "
                               "wait for it to finish, or choose another --out") from None
    try:
        yield path
    finally:
        lock.release()
