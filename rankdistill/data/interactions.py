"""Interactions: an implicit-feedback log encoded to row indices, with its vocabularies.

Built from a DataFrame with columns ``user``, ``item`` and optionally ``timestamp`` (int64 seconds) and
``is_test`` (bool, a split given by the data set itself). Duplicated (user, item) pairs are collapsed to
their earliest occurrence and counted in ``dropped``; the rating threshold and k-core filtering happen
before, in :mod:`rankdistill.data.filters`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rankdistill.data.filters import collapse_duplicates
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError


@dataclass(frozen=True)
class Interactions:
    users: np.ndarray  # int64 [N], rows of user_vocab
    items: np.ndarray  # int64 [N], rows of item_vocab
    timestamps: np.ndarray | None  # int64 [N] or None; ties are broken by row order (earlier row = earlier)
    user_vocab: IdVocab
    item_vocab: IdVocab
    name: str
    given_test: np.ndarray | None = None  # bool [N]: the test split the data set ships with (LightGCN format)
    dropped: dict[str, int] = field(default_factory=dict)  # what reading and filtering dropped, per reason
    source: dict = field(default_factory=dict)  # where the data came from (DataSpec.to_dict()), for reports

    @property
    def n_users(self) -> int:
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab)

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, name: str, dropped: dict[str, int] | None = None,
                   source: dict | None = None) -> "Interactions":
        """Encode ``frame`` (columns user, item, [timestamp], [is_test]); rows keep their order. Repeated
        (user, item) pairs are collapsed to the earliest and added to ``dropped["duplicates"]``."""
        dropped = dict(dropped or {})
        if len(frame) == 0:
            raise RankdistillError(f"data set {name!r} has no interactions left to train on")
        frame, n_dup = collapse_duplicates(frame)
        if n_dup:
            dropped["duplicates"] = dropped.get("duplicates", 0) + n_dup
        user_vocab, users = IdVocab.fit(frame["user"])
        item_vocab, items = IdVocab.fit(frame["item"])
        timestamps = frame["timestamp"].to_numpy(np.int64) if "timestamp" in frame else None
        given_test = frame["is_test"].to_numpy(bool) if "is_test" in frame else None
        return cls(users, items, timestamps, user_vocab, item_vocab, name, given_test, dropped, dict(source or {}))

    def to_frame(self) -> pd.DataFrame:
        """Raw-ID DataFrame (user, item, [timestamp]) of these interactions."""
        out = {"user": self.user_vocab.decode(self.users), "item": self.item_vocab.decode(self.items)}
        if self.timestamps is not None:
            out["timestamp"] = self.timestamps
        return pd.DataFrame(out)
