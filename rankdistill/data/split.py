"""Splits of an :class:`Interactions` log into train / validation / test per-user item lists.

- ``temporal_leave_one_out``: per user, the last interaction is the test item and the one before it the
  validation item; ties in time are broken by row order in the input (a later row counts as later).
- ``given``: the data set's own test split (LightGCN format); one random training item per user (seeded)
  becomes the validation item, for users with at least two training items.

Validation and test items never seen in training are dropped (an untrained embedding cannot be ranked
fairly) and counted in ``Split.dropped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rankdistill.data.csr import Csr
from rankdistill.data.interactions import Interactions
from rankdistill.errors import RankdistillError

SPLITS = ("temporal-leave-one-out", "given")


@dataclass(frozen=True)
class Split:
    kind: str
    n_users: int
    n_items: int
    train: Csr
    valid: Csr
    test: Csr
    dropped: dict[str, int] = field(default_factory=dict)

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users [nnz], items [nnz]) of the training interactions."""
        return self.train.rows().numpy(), self.train.indices.numpy()


def default_split(data: Interactions) -> str:
    if data.given_test is not None:
        return "given"
    if data.timestamps is not None:
        return "temporal-leave-one-out"
    raise RankdistillError(
        f"data set {data.name!r} has no timestamps: a temporal split is impossible; "
        "add a timestamp column or use a data set with a given split"
    )


def make_split(data: Interactions, kind: str | None = None, seed: int = 0) -> Split:
    kind = kind or default_split(data)
    if kind == "temporal-leave-one-out":
        return temporal_leave_one_out(data)
    if kind == "given":
        return given_split(data, seed)
    raise RankdistillError(f"unknown split {kind!r}; choose one of {', '.join(SPLITS)}")


def temporal_leave_one_out(data: Interactions) -> Split:
    if data.timestamps is None:
        raise RankdistillError(
            f"temporal leave-one-out needs timestamps and {data.name!r} has none; "
            "use --split given for a data set that ships its own split"
        )
    counts = np.bincount(data.users, minlength=data.n_users)
    few = int((counts < 3).sum())
    if few:
        raise RankdistillError(
            f"{few} of {data.n_users} users have fewer than 3 interactions, too few for temporal leave-one-out "
            "(train, validation, test); drop them with --min-user-interactions 3"
        )
    order = np.lexsort((np.arange(len(data)), data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    ends = np.cumsum(counts)  # position after each user's last interaction in sorted order
    from_end = ends[users] - 1 - np.arange(len(users))  # 0 = last, 1 = second to last
    return _assemble("temporal-leave-one-out", data, users, items, from_end == 0, from_end == 1)


def given_split(data: Interactions, seed: int) -> Split:
    if data.given_test is None:
        raise RankdistillError(f"data set {data.name!r} ships no split; use --split temporal-leave-one-out")
    test = data.given_test
    rng = np.random.default_rng(seed)
    train_rows = np.flatnonzero(~test)
    # One random training interaction per user with >= 2 of them becomes validation.
    shuffled = train_rows[rng.permutation(len(train_rows))]
    u = data.users[shuffled]
    first = np.unique(u, return_index=True)[1]
    n_train = np.bincount(data.users[train_rows], minlength=data.n_users)
    pick = shuffled[first[n_train[u[first]] >= 2]]
    valid = np.zeros(len(data), bool)
    valid[pick] = True
    return _assemble("given", data, data.users, data.items, test, valid)


def _assemble(kind: str, data: Interactions, users: np.ndarray, items: np.ndarray, test: np.ndarray, valid: np.ndarray) -> Split:
    train = ~(test | valid)
    seen = np.zeros(data.n_items, bool)
    seen[items[train]] = True
    dropped = dict(data.dropped)
    kept = {}
    for name, mask in (("valid", valid), ("test", test)):
        cold = mask & ~seen[items]
        if cold.any():
            dropped[f"{name}_items_unseen_in_train"] = int(cold.sum())
        kept[name] = mask & ~cold
    valid, test = kept["valid"], kept["test"]
    csr = lambda m: Csr.from_pairs(users[m], items[m], data.n_users, data.n_items)  # noqa: E731
    return Split(kind, data.n_users, data.n_items, csr(train), csr(valid), csr(test), dropped)
