"""The device a command or a RunConfig names: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto`` (CUDA when torch
sees a CUDA device, else the CPU). Asking for CUDA where there is none is a user error naming what torch sees.
"""

from __future__ import annotations

import torch

from rankdistill.errors import RankdistillError

DEVICES = ("auto", "cpu", "cuda")  # the command line's choices; Python also takes "cuda:N"


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` -> that device, checked.
    A CUDA device always comes back with its index (``cuda`` is the current one), so devices compare equal."""
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise RankdistillError(f"device must be cpu, cuda (or cuda:N) or auto, got {str(name)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise RankdistillError(f"device {text!r} asks for CUDA, but torch {torch.__version__} ({built}) sees no "
                                   "CUDA device here; use --device cpu, or --device auto to take a GPU only when "
                                   "there is one")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RankdistillError(f"device {text!r}: torch sees {count} CUDA device(s), numbered from 0")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device
