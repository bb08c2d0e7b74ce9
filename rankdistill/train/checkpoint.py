"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
``last.pt`` (rename is atomic on POSIX), and the folder is fsync'ed: a crash, even ``kill -9``, leaves
either the previous checkpoint or the new one, never a torn file. It holds everything needed to continue
bit-for-bit on the CPU: weights, the fused embedding optimizers' state, the dense optimizer, every random
generator, the epoch, the early-stopping state and the best weights so far.

Each checkpoint carries an ``identity`` (model, training and distillation configs, a fingerprint of
the training data and, for a distilled student, of what it learns from: the teacher's weights or the
knowledge, online or cached); resuming with a different identity is refused with the list of what differs.
It also carries ``format`` (a torch file without it is not a rankdistill checkpoint and is refused) and
``checksum``, the :func:`state_checksum` of everything else: bytes changed inside the tensor data (a bad disk,
a stray write) are refused at load instead of resuming into weights of 5e36.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from rankdistill.errors import RankdistillError
from rankdistill.paths import writing

FORMAT = "rankdistill-checkpoint"
_OWN_KEYS = ("format", "identity", "checksum")  # what Checkpointer adds to the state it saves


def atomic_save(obj: object, path: Path) -> None:
    """torch.save through a temporary sibling, fsync'ed and renamed into place. The temporary is removed on
    every failure; a full disk or a read-only folder raises RankdistillError naming the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:  # a file object: torch then raises the OSError itself (ENOSPC, ...)
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def state_checksum(state: object) -> str:
    """sha256 of a (nested) state: every tensor's dtype, shape and bytes, every plain value, dict keys sorted.

    Independent of how the state was serialised, so a file read back gives the same checksum iff its contents
    are the ones saved."""
    h = hashlib.sha256()
    _hash_into(h, state)
    return h.hexdigest()


def _hash_into(h, value: object) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for k in sorted(value, key=repr):
            h.update(repr(k).encode())
            _hash_into(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for v in value:
            _hash_into(h, v)
    elif isinstance(value, np.ndarray):
        h.update(f"N{value.dtype}{value.shape}".encode())
        if value.dtype.hasobject:
            _hash_into(h, value.tolist())
        else:
            h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
    elif value is None or isinstance(value, (bool, int, float, str, bytes)):
        h.update(repr(value).encode())
    else:  # an object torch pickled (e.g. a torch.Size is a tuple; anything else by its type)
        h.update(type(value).__qualname__.encode())


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of tensors' contents (identifies the training data)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def identity_differences(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every setting that differs."""
    a, b = _flatten(json.loads(json.dumps(saved))), _flatten(json.loads(json.dumps(current)))
    return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class Checkpointer:
    """Keeps ``directory/last.pt`` for one training run identified by ``identity`` (a JSON-able dict)."""

    def __init__(self, directory: str | Path, identity: dict) -> None:
        self.directory = Path(directory)
        self.identity = json.loads(json.dumps(identity))
        self.path = self.directory / "last.pt"

    def load(self) -> dict | None:
        """The last checkpoint's state, or None when there is none. Refuses one from another run."""
        if not self.path.exists():
            return None
        state = read_checkpoint(self.path)
        diff = identity_differences(state["identity"], self.identity)
        if diff:
            raise RankdistillError(
                f"checkpoint {self.path} belongs to a different run ({'; '.join(diff[:8])}"
                f"{'; ...' if len(diff) > 8 else ''}); use another --out or delete the checkpoint to start over"
            )
        return state

    def save(self, state: dict) -> None:
        state = {k: v for k, v in state.items() if k not in _OWN_KEYS}
        atomic_save({**state, "format": FORMAT, "identity": self.identity, "checksum": state_checksum(state)},
                    self.path)


def read_checkpoint(path: Path) -> dict:
    """The state saved at ``path`` by :meth:`Checkpointer.save`, its identity included; refuses a file that is
    not a rankdistill checkpoint and one whose contents no longer match its checksum."""
    start_over = f"delete {path} to start this model's training over"
    foreign = (f"{path} is not a rankdistill checkpoint (another program's torch file, or one from an older "
               f"rankdistill); {start_over}")
    try:  # weights_only: a checkpoint holds tensors and plain values only, so no foreign pickle code ever runs
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects a checkpoint never holds
        raise RankdistillError(foreign) from None
    except Exception as e:  # a damaged or truncated file
        first = str(e).splitlines()[0] if str(e) else ""
        raise RankdistillError(f"cannot read checkpoint {path} ({type(e).__name__}: {first}); {start_over}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "identity" not in state:
        raise RankdistillError(foreign)
    saved = state.get("checksum")
    if saved != state_checksum({k: v for k, v in state.items() if k not in _OWN_KEYS}):
        raise RankdistillError(f"checkpoint {path} is damaged: its contents no longer match the checksum saved "
                               f"with them; {start_over}")
    return state
