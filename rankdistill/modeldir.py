"""A model directory: a trained ranker with everything needed to use it alone.

::

    MODEL_DIR/
      config.json          format and version; the model's ModelConfig, n_users, n_items; the data it was
                           trained on (DataSpec: path, format, columns, filters) and the split (Split.options),
                           so the same split can be cut again; training (and distillation) settings; the test
                           metrics at save time
      user_vocab.parquet   raw user IDs, row i = embedding row i (IdVocab.save)
      item_vocab.parquet   raw item IDs
      weights.pt           the model's state_dict (torch.save), the torchrec tables' live weights included;
                           config.json's ``weights_checksum`` is its state_checksum, checked at every load
      metrics.json         the latest test metrics (train / distill, then ``rankdistill evaluate --model``)
      train_pairs.parquet  the training interactions, user and item rows (raw IDs through the vocabularies):
                           what ``distill``'s leakage guard compares with a student's held-out interactions

``rankdistill.load(path)`` rebuilds the model with :func:`rankdistill.models.factory.build_model` and loads
the weights into it. A directory is written to a temporary sibling first and renamed into place, so a job
killed mid-write never leaves a half-written model under the final name; on any failure (a full disk
included: RankdistillError naming the path) the temporary is removed and a model already at the path is kept.

Commands check their ``--out`` with :func:`check_output` before any work, so nothing is trained, and no
checkpoint or log written, for a directory that would then be refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rankdistill.config import ModelConfig
from rankdistill.data.interactions import Interactions
from rankdistill.data.load import DataSpec
from rankdistill.data.split import Split, make_split, split_arguments
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.models.base import Ranker
from rankdistill.models.factory import build_model
from rankdistill.paths import atomic_write_text, input_path, output_dir, writing
from rankdistill.train.checkpoint import state_checksum

FORMAT = "rankdistill-model"
VERSION = 1
CONFIG, WEIGHTS, USER_VOCAB, ITEM_VOCAB, METRICS = (
    "config.json", "weights.pt", "user_vocab.parquet", "item_vocab.parquet", "metrics.json")
TRAIN_PAIRS = "train_pairs.parquet"


@dataclass
class SavedModel:
    """A model directory loaded: the ranker (eval mode, on ``device``), its vocabularies and its records."""

    path: Path
    model: Ranker
    model_config: ModelConfig
    user_vocab: IdVocab
    item_vocab: IdVocab
    data_spec: DataSpec | None  # None: trained on an in-memory table; pass the data explicitly
    split_options: dict  # Split.options of the split it was trained on
    config: dict  # the whole config.json

    @property
    def name(self) -> str:
        return self.config.get("name", self.path.name)

    def check_vocab(self, data: Interactions, fix: str = "use the data and filters the model was trained on") -> None:
        """Raise unless ``data`` has exactly this model's user and item vocabularies (sizes named)."""
        check_same_vocab(f"model {self.path}", self.user_vocab, self.item_vocab, data, fix)

    def load_data(self, spec: DataSpec | None = None) -> Interactions:
        """Read the data again (``spec`` or the recorded one) and check it has this model's vocabularies."""
        spec = spec or self.data_spec
        if spec is None:
            raise RankdistillError(f"model {self.path} was trained on an in-memory table and records no data "
                                   "path; pass the data with --data")
        data = spec.load()
        self.check_vocab(data)
        return data

    def data_at(self, path: str, format: str | None = None) -> DataSpec:
        """Another file read as this model's data was (its recorded columns and filters; defaults for a model
        trained on an in-memory table): what ``--data`` of ``evaluate --model`` and ``export`` reads."""
        return (self.data_spec or DataSpec()).at(path, format)

    def load_split(self, spec: DataSpec | None = None) -> tuple[Interactions, Split]:
        """The data and the same split the model was trained on, cut again (deterministic)."""
        data = self.load_data(spec)
        return data, make_split(data, **split_arguments(self.split_options))

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users [N], items [N]) int64 rows of the interactions the model trained on: read from the directory,
        or (written by an older rankdistill) recovered by cutting its recorded data and split again."""
        path = self.path / TRAIN_PAIRS
        if not path.exists():
            _, split = self.load_split()
            return split.train.rows().numpy(), split.train.indices.numpy()
        try:
            frame = pd.read_parquet(path, engine="fastparquet")
        except Exception as e:  # fastparquet raises many types for damaged files
            raise RankdistillError(f"cannot read {path}: {type(e).__name__}: {e}") from None
        return frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64)


def check_same_vocab(owner: str, user_vocab: IdVocab, item_vocab: IdVocab, data: Interactions, fix: str) -> None:
    if user_vocab == data.user_vocab and item_vocab == data.item_vocab:
        return
    where = data.source.get("path") or data.name
    raise RankdistillError(
        f"{owner} has {len(user_vocab):,} users and {len(item_vocab):,} items but the data ({where}) has "
        f"{data.n_users:,} users and {data.n_items:,} items (users: {user_vocab.describe_difference(data.user_vocab)}; "
        f"items: {item_vocab.describe_difference(data.item_vocab)}); {fix}"
    )


def save_model(path: str | Path, model: Ranker, model_config: ModelConfig, data: Interactions, split: Split,
               name: str = "model", records: dict | None = None, metrics: dict | None = None) -> Path:
    """Write a model directory (layout in the module docstring). ``records`` adds JSON-able entries to
    config.json (training settings, the teacher, ...); ``metrics`` goes to config.json and metrics.json.
    An existing model directory at ``path`` is replaced; any other existing, non-empty path is refused."""
    out = check_output(path)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT, "version": VERSION, "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": asdict(model_config), "n_users": data.n_users, "n_items": data.n_items,
        "data": {**(data.source or {}), "name": data.name, "interactions": len(data),
                 "dropped": split.dropped},  # reading, filtering and the split's unseen users and items
        "split": split.options or {"kind": split.kind},
        **(records or {}),
        "weights_checksum": state_checksum(state),
        "metrics": metrics or {},
    }
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    with writing(out):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with open(tmp / WEIGHTS, "wb") as f:  # a file object: a full disk raises OSError, not torch's RuntimeError
                torch.save(state, f)
            data.user_vocab.save(tmp / USER_VOCAB)
            data.item_vocab.save(tmp / ITEM_VOCAB)
            users, items = split.train_pairs()
            pd.DataFrame({"user": users.astype(np.int32), "item": items.astype(np.int32)}).to_parquet(
                tmp / TRAIN_PAIRS, engine="fastparquet", index=False)
            (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=_json_default) + "\n")
            if metrics is not None:
                write_metrics(tmp, metrics)
            _move_into_place(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    """The training run's checkpoints and logs move into ``tmp``, which then replaces ``out``; on a failure
    the run's files go back and an old model at ``out`` stays where it was."""
    moved = []
    try:
        for name in RUN_ARTIFACTS:  # the training run's checkpoints and logs stay with the model
            if (out / name).exists():
                (out / name).rename(tmp / name)
                moved.append(name)
        if not out.exists():
            tmp.rename(out)
            return
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        for name in moved:
            if (tmp / name).exists() and out.is_dir():
                (tmp / name).rename(out / name)
        raise


RUN_ARTIFACTS = ("checkpoints", "train_log.jsonl", "tensorboard")  # written while training, before the model


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def check_output(path: str | Path, option: str = "--out") -> Path:
    """The absolute ``path`` a model directory may be written to, checked before any work: not a file, not the
    working directory, in a folder that accepts files (:func:`rankdistill.paths.output_dir`), and new, empty,
    holding only a run's checkpoints and logs, or a model directory (which is then replaced)."""
    out = output_dir(path, option)
    if out.exists() and any(p.name not in RUN_ARTIFACTS for p in out.iterdir()) and not _is_model_dir(out):
        raise RankdistillError(f"{option} {path} exists and is not a rankdistill model directory; "
                               "choose a new or empty directory")
    return out


def _is_model_dir(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_metrics(model_dir: str | Path, metrics: dict, path: str | Path | None = None) -> Path:
    """metrics.json in ``model_dir`` (or ``path``), written atomically."""
    target = Path(path) if path is not None else Path(model_dir) / METRICS
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(target, json.dumps(metrics, indent=2, default=_json_default) + "\n")


def read_header(path: Path, name: str, fmt: str, version: int, what: str, how: str) -> dict:
    """The JSON file ``name`` that heads a directory written by rankdistill (a model directory's config, an
    export's manifest), checked: present, readable, of format ``fmt`` and a version this code reads."""
    if not (path / name).exists():
        raise RankdistillError(f"{path} is not a rankdistill {what} directory (no {name}); write one with {how}")
    try:
        header = json.loads((path / name).read_text())
    except (OSError, ValueError) as e:
        raise RankdistillError(f"cannot read {path / name}: {e}") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise RankdistillError(f"{path / name} is not a rankdistill {what} {name.split('.')[0]}")
    if header.get("version", 0) > version:
        raise RankdistillError(f"{path} was written by a newer rankdistill ({what} format {header['version']}, "
                               f"this one reads {version}); upgrade rankdistill")
    return header


def load(path: str | Path, device: torch.device | str = "cpu") -> SavedModel:
    """Load a model directory written by ``rankdistill train`` / ``distill`` (or :func:`save_model`)."""
    input_path(path, "model directory")  # exists, readable, no link loop
    path = Path(path)
    config = read_header(path, CONFIG, FORMAT, VERSION, "model", "rankdistill train --out")
    for name in (WEIGHTS, USER_VOCAB, ITEM_VOCAB):
        if not (path / name).exists():
            raise RankdistillError(f"model directory {path} has no {name}; it is incomplete, write it again")
    model_config = ModelConfig(**config["model"])
    try:
        user_vocab, item_vocab = IdVocab.load(path / USER_VOCAB), IdVocab.load(path / ITEM_VOCAB)
    except Exception as e:  # fastparquet raises many types for damaged files
        raise RankdistillError(f"cannot read the vocabularies of {path}: {type(e).__name__}: {e}") from None
    n_users, n_items = config["n_users"], config["n_items"]
    if (len(user_vocab), len(item_vocab)) != (n_users, n_items):
        raise RankdistillError(f"model directory {path} is inconsistent: {CONFIG} says {n_users} users and "
                               f"{n_items} items, the vocabularies hold {len(user_vocab)} and {len(item_vocab)}")
    model = build_model(model_config, n_users, n_items, device)
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file raises from the unpickler or zipfile
        raise RankdistillError(f"cannot load {path / WEIGHTS}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    saved_sum = config.get("weights_checksum")  # absent in directories written before checksums
    if saved_sum is not None and saved_sum != state_checksum(state):
        raise RankdistillError(f"{path / WEIGHTS} is damaged: its contents no longer match the checksum in "
                               f"{CONFIG}; write the model again (rankdistill train / distill --out {path})")
    try:
        model.load_state_dict(state)
    except Exception as e:  # shapes that do not fit the model of config.json
        raise RankdistillError(f"cannot load {path / WEIGHTS}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    model.eval()
    spec = DataSpec.from_dict(config["data"]) if "path" in config.get("data", {}) else None
    return SavedModel(path, model, model_config, user_vocab, item_vocab, spec, dict(config.get("split", {})), config)
