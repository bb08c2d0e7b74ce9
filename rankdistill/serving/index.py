"""A faiss inner-product index of the item vectors (faiss-cpu is the optional extra ``rankdistill[serve]``).

Two kinds:

- ``flat`` (default): ``faiss.IndexFlatIP``, exact maximum inner-product search (recall 1 against exact
  scoring up to ties); a brute-force scan of the items per query, the right choice up to a few hundred
  thousand items at these dims.
- ``hnsw``: ``faiss.IndexHNSWFlat`` with the inner-product metric, approximate. Settings: ``M = 32``
  neighbours per node, ``efConstruction = 200``, ``efSearch = 768``: on MovieLens 100K (1,682 items) they keep
  recall@100 against exact scoring at 0.994 for the dim-128 teacher and 1.0 for the dim-16 students
  (efSearch 256 gave the teacher only 0.981, 512 gave 0.990; benchmarks/results/serving-ml100k.md).
  ``serve-check`` measures it for each export; ``--ef-search`` trades recall for time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rankdistill.errors import RankdistillError

INDEX_KINDS = ("flat", "hnsw")
INSTALL_HINT = "pip install 'rankdistill[serve]' (or pip install faiss-cpu)"


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "flat"  # flat | hnsw
    hnsw_m: int = 32  # hnsw: neighbours per node
    ef_construction: int = 200  # hnsw: candidate list while building
    ef_search: int = 768  # hnsw: candidate list per query (>= k); recall@100 >= 0.99 on MovieLens 100K

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise RankdistillError(f"unknown index kind {self.kind!r}; choose {' or '.join(INDEX_KINDS)}")
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise RankdistillError(f"{name} must be an integer >= 1, got {value!r}")

    def to_dict(self) -> dict:
        if self.kind == "flat":
            return {"kind": "flat", "faiss": "IndexFlatIP", "exact": True}
        return {**asdict(self), "faiss": "IndexHNSWFlat", "metric": "METRIC_INNER_PRODUCT", "exact": False}


def faiss_or_none():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def require_faiss():
    faiss = faiss_or_none()
    if faiss is None:
        raise RankdistillError(f"faiss is not installed; {INSTALL_HINT}")
    return faiss


def build_index(items: np.ndarray, config: IndexConfig = IndexConfig()):
    """items float32 [I, D] -> a faiss index of them, inner-product metric; row i of ``items`` is id i."""
    faiss = require_faiss()
    items = np.ascontiguousarray(items, dtype=np.float32)
    d = items.shape[1]
    if config.kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    index.add(items)
    return index


def write_index(index, path: Path) -> None:
    require_faiss().write_index(index, str(path))


def read_index(path: Path, config: dict | None = None):
    """The index at ``path``; ``config`` (the manifest's ``index`` entry) sets HNSW's efSearch again."""
    faiss = require_faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise RankdistillError(f"cannot read the faiss index {path}: {str(e).splitlines()[0]}") from None
    if config and config.get("kind") == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(config["ef_search"])
    return index
