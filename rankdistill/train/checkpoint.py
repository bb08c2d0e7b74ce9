"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
``last.pt`` (rename is atomic on POSIX), and the folder is fsync'ed: a crash, even ``kill -9``, leaves
either the previous checkpoint or the new one, never a torn file. It holds everything needed to continue
bit-for-bit on the CPU: weights, the fused embedding optimizers' state, the dense optimizer, every random
generator, the epoch, the early-stopping state and the best weights so far.

Each checkpoint carries an ``identity`` (model, training and distillation configs, a fingerprint of
the training data and, for a distilled student, of what it learns from: the teacher's weights or the
knowledge, online or cached); resuming with a different identity is refused with the list of what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from rankdistill.errors import RankdistillError


def atomic_save(obj: object, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # a checkpoint we did not write, or a damaged disk
            raise RankdistillError(f"cannot read checkpoint {self.path} ({type(e).__name__}: {e}); "
                                   "delete it to start over") from None
        diff = identity_differences(state["identity"], self.identity)
        if diff:
            raise RankdistillError(
                f"checkpoint {self.path} belongs to a different run ({'; '.join(diff[:8])}"
                f"{'; ...' if len(diff) > 8 else ''}); use another --out or delete the checkpoint to start over"
            )
        return state

    def save(self, state: dict) -> None:
        atomic_save({**state, "identity": self.identity}, self.path)
