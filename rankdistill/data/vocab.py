"""IdVocab: raw IDs (strings or integers, as the input file spells them) <-> contiguous row indices.

Every model directory carries its vocabularies, so every output can speak raw IDs again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


class IdVocab:
    """An ordered, duplicate-free list of raw IDs; index ``i`` is the embedding row of ``ids[i]``."""

    def __init__(self, ids: pd.Index | np.ndarray | list) -> None:
        index = pd.Index(ids)
        if not index.is_unique:
            raise ValueError("IdVocab ids must be unique")
        self._index = index

    @classmethod
    def fit(cls, raw: pd.Series | np.ndarray) -> tuple["IdVocab", np.ndarray]:
        """Vocabulary of the distinct raw IDs in order of first appearance, and the encoded column [N]."""
        codes, uniques = pd.factorize(pd.Series(raw), sort=False)
        return cls(uniques), codes.astype(np.int64)

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdVocab) and self._index.equals(other._index)

    @property
    def ids(self) -> pd.Index:
        return self._index

    def encode(self, raw: pd.Series | np.ndarray | list) -> np.ndarray:
        """Row indices [N] of ``raw``; -1 where an ID is not in the vocabulary."""
        return self._index.get_indexer(pd.Index(raw)).astype(np.int64)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Raw IDs of the row indices ``rows`` [N]."""
        return self._index.to_numpy()[np.asarray(rows, dtype=np.int64)]

    def save(self, path: str | Path) -> None:
        pd.DataFrame({"id": self._index.to_numpy()}).to_parquet(path, engine="fastparquet", index=False)

    @classmethod
    def load(cls, path: str | Path) -> "IdVocab":
        return cls(pd.read_parquet(path, engine="fastparquet")["id"].to_numpy())
