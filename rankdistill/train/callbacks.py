"""What the trainer reports while it runs: a progress bar or plain lines, a JSON-lines log, TensorBoard.

Each callback receives ``on_epoch_start(epoch, steps)``, ``on_step(loss_parts, examples)`` and
``on_epoch_end(record)``; the record is a JSON-able dict (epoch, losses, validation metrics, seconds,
examples/s, learning rate).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rankdistill.paths import writing


class Callback:
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...

    def on_step(self, parts: dict[str, float], examples: int) -> None: ...

    def on_epoch_end(self, record: dict) -> None: ...

    def close(self) -> None: ...


def format_record(record: dict) -> str:
    losses = " ".join(f"{k}={v:.4f}" for k, v in record["loss"].items())
    valid = " ".join(f"{k}={v:.4f}" for k, v in record["valid"].items())
    return (f"[{record['model']}] epoch {record['epoch']}: {losses} | valid {valid} | "
            f"{record['examples_per_second']:,.0f} ex/s | {record['train_seconds']:.1f} s"
            + (f" + valid {record['valid_seconds']:.1f} s" if "valid_seconds" in record else ""))


class Progress(Callback):
    """A tqdm bar per epoch (steps, examples/s, loss, ETA) on a terminal; one plain line per epoch otherwise."""

    def __init__(self, name: str, stream=None) -> None:
        self.name, self.stream = name, stream or sys.stderr
        self.bar = None
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"{self.name} epoch {epoch}", unit="step", file=self.stream,
                            leave=False, dynamic_ncols=True)
            self._examples = 0

    def on_step(self, parts: dict[str, float], examples: int) -> None:
        if self.bar is not None:
            self._examples += examples
            rate = self._examples / max(self.bar.format_dict["elapsed"], 1e-9)
            self.bar.set_postfix(loss=f"{sum(parts.values()):.4f}", ex_s=f"{rate:,.0f}", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print("  " + format_record(record), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class JsonlLog(Callback):
    """Appends one JSON object per epoch to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, record: dict) -> None:
        with writing(self.path), open(self.path, "a") as f:  # a full disk: one error naming the file
            f.write(json.dumps(record) + "\n")


class TensorBoard(Callback):
    """Scalars per epoch under ``log_dir`` when the tensorboard package is installed (silently off otherwise)."""

    def __init__(self, log_dir: str | Path, name: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
            return
        self.writer = SummaryWriter(str(Path(log_dir) / name))

    @property
    def active(self) -> bool:
        return self.writer is not None

    def on_epoch_end(self, record: dict) -> None:
        if self.writer is None:
            return
        for k, v in record["loss"].items():
            self.writer.add_scalar(f"loss/{k}", v, record["epoch"])
        for k, v in record["valid"].items():
            self.writer.add_scalar(f"valid/{k}", v, record["epoch"])
        self.writer.add_scalar("examples_per_second", record["examples_per_second"], record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
