"""IdVocab: raw IDs (strings or integers, as the input file spells them) <-> contiguous row indices.

Every model directory carries its vocabularies, so every output can speak raw IDs again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankdistill.data.io import beyond_int64, plain_integers


class IdVocab:
    """An ordered, duplicate-free list of raw IDs; index ``i`` is the embedding row of ``ids[i]``."""

    def __init__(self, ids: pd.Index | np.ndarray | list) -> None:
        index = pd.Index(ids)
        if pd.api.types.is_integer_dtype(index) and not beyond_int64(index):
            index = index.astype(np.int64)
        elif len(index):
            index = pd.Index(index.astype(str).to_numpy(object), dtype=object)
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

    @property
    def integer_ids(self) -> bool:
        return pd.api.types.is_integer_dtype(self._index)

    def encode(self, raw: pd.Series | np.ndarray | list) -> np.ndarray:
        """Row indices [N] of ``raw``; -1 where an ID is not in the vocabulary. IDs of the other type are
        matched by their text: ``"42"`` finds 42 in an integer vocabulary, 42 finds ``"42"`` in a string one."""
        query = pd.Index(raw)
        if len(query) and self.integer_ids and not pd.api.types.is_integer_dtype(query):
            text = pd.Series(query.astype(str))
            plain = plain_integers(text)
            codes = np.full(len(query), -1, np.int64)
            if plain.any():
                codes[plain] = self._index.get_indexer(pd.Index(text[plain].astype(np.int64))).astype(np.int64)
            return codes
        if len(query) and not self.integer_ids:
            query = pd.Index(query.astype(str).to_numpy(object), dtype=object)
        return self._index.get_indexer(query).astype(np.int64)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Raw IDs of the row indices ``rows`` [N]."""
        return self._index.to_numpy()[np.asarray(rows, dtype=np.int64)]

    def describe_difference(self, other: "IdVocab") -> str:
        """Why two vocabularies differ, in words (sizes, else the first position where the IDs differ)."""
        if len(self) != len(other):
            return f"{len(self):,} vs {len(other):,} IDs"
        a, b = self._index.to_numpy(), other._index.to_numpy()
        if self.integer_ids != other.integer_ids:
            return "integer IDs vs string IDs"
        diff = np.flatnonzero(a != b)
        return f"same size {len(self):,} but ID {diff[0]} is {a[diff[0]]!r} vs {b[diff[0]]!r}" if len(diff) else "equal"

    def save(self, path: str | Path) -> None:
        pd.DataFrame({"id": self._index.to_numpy()}).to_parquet(path, engine="fastparquet", index=False)

    @classmethod
    def load(cls, path: str | Path) -> "IdVocab":
        return cls(pd.read_parquet(path, engine="fastparquet")["id"].to_numpy())
