"""An export directory: a dot-product model's user and item vectors, ready for nearest-neighbour serving.

::

    EXPORT_DIR/
      manifest.json    format and version; the model it came from; dim, counts, metric, the score rule (how the
                       vectors give the model's score); the precision and bytes of the tables; the model's test
                       metrics (and, when quantised, the same metrics of the quantised vectors next to fp32);
                       the index and its settings
      users.parquet    column ``user`` (raw IDs as the data spells them), then the vector of each user
      items.parquet    column ``item``, then the vector of each item
      items.faiss      a faiss inner-product index of the item vectors (id = row of items.parquet); absent when
                       faiss is not installed (the manifest says so)

The vector columns by precision: fp32 ``v0 .. v{D-1}`` (float32); fp16 ``h0 .. h{D-1}`` (uint16 holding the
IEEE half-precision bits, parquet has no half type: ``frame[cols].to_numpy(np.uint16).view(np.float16)``);
int8 ``q0 .. q{D-1}`` (uint8) with ``scale`` and ``bias`` (float32), fbgemm's fused 8-bit row-wise format
(``x ≈ q · scale + bias``, :mod:`rankdistill.serving.quantize`). :func:`read_export` reads any of them back.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rankdistill.data.split import Split
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.modeldir import METRICS, SavedModel, read_header
from rankdistill.serving.index import INSTALL_HINT, IndexConfig, build_index, faiss_or_none, write_index
from rankdistill.serving.quantize import PRECISIONS, QuantizedTable, from_parts, quantize
from rankdistill.serving.vectors import VectorRanker, score_rule, serving_vectors

FORMAT = "rankdistill-export"
VERSION = 1
MANIFEST, USERS, ITEMS, INDEX = "manifest.json", "users.parquet", "items.parquet", "items.faiss"


@dataclass
class Export:
    """An export directory read back: raw IDs, the stored tables and the manifest."""

    path: Path
    manifest: dict
    user_ids: pd.Index
    item_ids: pd.Index
    users: QuantizedTable
    items: QuantizedTable


def export_model(saved: SavedModel, out: str | Path, precision: str = "fp32", index: IndexConfig = IndexConfig(),
                 split: Split | None = None, metrics: tuple[str, ...] = ("ndcg", "recall", "mrr")) -> dict:
    """Write the export directory of ``saved`` at ``out`` and return its manifest.

    ``split`` (the model's own, cut again): needed when ``precision`` is not fp32, to measure the test
    metrics of the quantised vectors next to those of the fp32 ones (the same full-ranking protocol)."""
    if precision not in PRECISIONS:
        raise RankdistillError(f"--quantize must be one of {', '.join(p for p in PRECISIONS if p != 'fp32')}, "
                               f"got {precision!r}")
    if precision != "fp32" and split is None:
        raise ValueError("a quantised export needs the model's split to measure its test metrics")
    out = Path(out)
    _check_replaceable(out)
    user_vecs, item_vecs = serving_vectors(saved.model)
    users, items = quantize(user_vecs, precision), quantize(item_vecs, precision)
    fp32_bytes = (user_vecs.numel() + item_vecs.numel()) * 4
    manifest = {
        "format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": str(saved.path.resolve()), "name": saved.name, "kind": saved.model_config.kind,
        "dim": users.dim, "users": len(user_vecs), "items": len(item_vecs), "metric": "inner_product",
        "score_rule": score_rule(saved.model_config), "precision": precision,
        "columns": _columns_doc(precision, users.dim),
        "bytes": {"fp32": fp32_bytes, precision: users.nbytes + items.nbytes,
                  "ratio_to_fp32": round((users.nbytes + items.nbytes) / fp32_bytes, 4)},
        "test_metrics": _test_metrics(saved, precision, users, items, split, metrics),
    }
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _vector_frame("user", saved.user_vocab, users).to_parquet(tmp / USERS, engine="fastparquet", index=False)
        _vector_frame("item", saved.item_vocab, items).to_parquet(tmp / ITEMS, engine="fastparquet", index=False)
        manifest["index"] = _write_index(items, index, tmp / INDEX)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _test_metrics(saved: SavedModel, precision: str, users: QuantizedTable, items: QuantizedTable,
                  split: Split | None, metrics: tuple[str, ...]) -> dict:
    """{"fp32": the model's test metrics, precision: those of the quantised vectors} (+ what they were on)."""
    record = _saved_metrics(saved)
    if precision == "fp32" or split is None:
        return {"fp32": record.get("metrics", {}), "on": record.get("on"), "users": record.get("users")}
    from rankdistill.evaluation.evaluator import evaluate

    ks = tuple(saved.config.get("ks", (10, 20)))
    fp32 = evaluate(saved.model, split, "test", ks, metrics)
    low = evaluate(VectorRanker(users.dequantize(), items.dequantize()), split, "test", ks, metrics)
    return {"fp32": _rounded(fp32), precision: _rounded(low), "on": "test",
            "users": int((split.test.lengths() > 0).sum()),
            "relative_change": {k: round(low[k] / fp32[k] - 1, 4) if fp32[k] else None for k in fp32}}


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in values.items()}


def _saved_metrics(saved: SavedModel) -> dict:
    """The latest metrics record of the model directory (metrics.json, else config.json's)."""
    try:
        return json.loads((saved.path / METRICS).read_text())
    except (OSError, ValueError):
        return saved.config.get("metrics") or {}


def _write_index(items: QuantizedTable, config: IndexConfig, path: Path) -> dict:
    faiss = faiss_or_none()
    if faiss is None:
        print(f"warning: faiss is not installed, so no {INDEX} index was written (the vectors were); "
              f"{INSTALL_HINT} and export again", file=sys.stderr)
        return {"file": None, "missing": f"faiss is not installed; {INSTALL_HINT}", **config.to_dict()}
    index = build_index(items.dequantize().numpy(), config)
    write_index(index, path)
    built = "the item vectors" if items.precision == "fp32" else f"the dequantised {items.precision} item vectors"
    return {"file": INDEX, **config.to_dict(), "faiss_version": faiss.__version__, "built_from": built,
            "bytes": path.stat().st_size}


def _columns_doc(precision: str, dim: int) -> dict:
    if precision == "fp32":
        return {"vector": f"v0..v{dim - 1}", "dtype": "float32"}
    if precision == "fp16":
        return {"vector": f"h0..h{dim - 1}", "dtype": "uint16 holding IEEE float16 bits (.view(np.float16))"}
    return {"vector": f"q0..q{dim - 1}", "dtype": "uint8", "scale": "float32", "bias": "float32",
            "decode": "x = q * scale + bias (fbgemm fused 8-bit row-wise)"}


def _prefix(precision: str) -> str:
    return {"fp32": "v", "fp16": "h", "int8": "q"}[precision]


def _vector_frame(key: str, vocab: IdVocab, table: QuantizedTable) -> pd.DataFrame:
    ids = vocab.ids.to_numpy()
    if table.precision == "int8":
        values, extra = table.codes().numpy(), table.scale_bias().numpy()
    elif table.precision == "fp16":
        values, extra = table.data.numpy().view(np.uint16), None
    else:
        values, extra = table.data.numpy(), None
    columns = {key: ids, **{f"{_prefix(table.precision)}{j}": values[:, j] for j in range(table.dim)}}
    if extra is not None:
        columns.update(scale=extra[:, 0], bias=extra[:, 1])
    return pd.DataFrame(columns)


def _read_table(path: Path, key: str, precision: str, dim: int) -> tuple[pd.Index, QuantizedTable]:
    try:
        frame = pd.read_parquet(path, engine="fastparquet")
    except Exception as e:  # fastparquet raises many types for damaged files
        raise RankdistillError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    cols = [f"{_prefix(precision)}{j}" for j in range(dim)]
    missing = [c for c in (key, *cols) if c not in frame.columns]
    if missing:
        raise RankdistillError(f"{path} lacks the column(s) {', '.join(missing[:5])} its manifest promises; "
                               "export again")
    ids = pd.Index(frame[key].to_numpy())
    if precision == "int8":
        codes = torch.from_numpy(frame[cols].to_numpy(np.uint8, copy=True))
        return ids, from_parts(codes, torch.from_numpy(frame[["scale", "bias"]].to_numpy(np.float32, copy=True)))
    if precision == "fp16":
        half = torch.from_numpy(frame[cols].to_numpy(np.uint16).view(np.float16).copy())
        return ids, QuantizedTable("fp16", half, dim)
    return ids, QuantizedTable("fp32", torch.from_numpy(frame[cols].to_numpy(np.float32, copy=True)), dim)


def read_export(path: str | Path) -> Export:
    """An export directory written by :func:`export_model` (``rankdistill export``)."""
    path = Path(path)
    manifest = read_header(path, MANIFEST, FORMAT, VERSION, "export",
                           "rankdistill export --model MODEL_DIR --out EXPORT_DIR")
    precision, dim = manifest["precision"], int(manifest["dim"])
    user_ids, users = _read_table(path / USERS, "user", precision, dim)
    item_ids, items = _read_table(path / ITEMS, "item", precision, dim)
    if (len(user_ids), len(item_ids)) != (manifest["users"], manifest["items"]):
        raise RankdistillError(f"export {path} is inconsistent: the manifest says {manifest['users']} users and "
                               f"{manifest['items']} items, the tables hold {len(user_ids)} and {len(item_ids)}")
    return Export(path, manifest, user_ids, item_ids, users, items)


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        return
    if not out.is_dir():
        raise RankdistillError(f"--out {out} is a file; name a directory for the export")
    if any(out.iterdir()) and not _is_export_dir(out):
        raise RankdistillError(f"--out {out} exists and is not a rankdistill export directory; "
                               "choose a new or empty directory")


def _is_export_dir(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
