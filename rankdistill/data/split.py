"""Splits of an :class:`Interactions` log into train / validation / test per-user item lists.

- ``temporal-leave-one-out`` (default when there are timestamps): per user, the last interaction is the
  test item and the one before it the validation item; ties in time are broken by row order in the input
  (a later row counts as later). Every user needs 3 interactions.
- ``ratio`` (default without timestamps): per user, a seeded random ``test`` share of the interactions is
  the test set and a ``valid`` share the validation set, each rounded half up and at least 1; the rest is
  training. ``ratio = (train, valid, test)`` shares, default 0.8/0.1/0.1.
- ``time-cut``: a global cut in time. Interactions at or after the cut are the test set; the same number of
  interactions just before it (in time order, ties by row order) are the validation set; everything
  earlier is training. The cut is a date (``2020-06-01``), seconds since 1970, or a quantile in (0, 1)
  of the interactions in time order (``0.9``: the last 10% are test, the 10% before them validation).
- ``given``: the data set's own test split (LightGCN format); one random training interaction per user
  (seeded) becomes the validation item, for users with at least two training interactions.

Validation and test interactions whose user or item never occurs in training are dropped (an untrained
embedding cannot be ranked fairly) and counted in ``Split.dropped`` as ``{valid,test}_users_unseen_in_train``
and ``{valid,test}_items_unseen_in_train`` (interactions, not users or items), next to the counts the data
brought from reading and filtering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from rankdistill.data.csr import Csr
from rankdistill.data.interactions import Interactions
from rankdistill.errors import RankdistillError

SPLITS = ("temporal-leave-one-out", "ratio", "time-cut", "given")
DEFAULT_RATIO = (0.8, 0.1, 0.1)
DEFAULT_QUANTILE = 0.9


@dataclass(frozen=True)
class Split:
    kind: str
    n_users: int
    n_items: int
    train: Csr
    valid: Csr
    test: Csr
    dropped: dict[str, int] = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # what make_split needs to cut the same split again

    @cached_property
    def seen_before_test(self) -> Csr:
        """Each user's training and validation items, on the CPU: what test-time ranking masks. Built once
        per split (every test evaluation, fidelity pass and recommendation needs it)."""
        return self.train.to("cpu").union(self.valid.to("cpu"))

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users [nnz], items [nnz]) of the training interactions."""
        return self.train.rows().numpy(), self.train.indices.numpy()


# -- options --------------------------------------------------------------------------------------------

def parse_ratio(value: str | tuple | list) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (or three numbers in any scale, ``"8,1,1"``) -> shares (train, valid, test)."""
    try:
        parts = [float(x) for x in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 3 or not all(np.isfinite(p) and p > 0 for p in parts):
        raise RankdistillError(
            f"--split-ratio must be three positive numbers TRAIN,VALID,TEST such as 0.8,0.1,0.1, got {value!r}"
        )
    total = sum(parts)
    return tuple(round(p / total, 12) for p in parts)  # type: ignore[return-value]


def parse_cut(value: str | float | int) -> tuple[str, float]:
    """-> ("quantile", q) for a number in (0, 1), ("time", seconds) for another number or a date."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is not None and np.isfinite(number):
        if 0 < number < 1:
            return "quantile", number
        if not isinstance(value, str) or abs(number) >= 1e6:  # a bare year such as "2020" is a date
            return "time", float(int(number))
    try:
        ts = pd.Timestamp(str(value))
    except (TypeError, ValueError):
        ts = None
    if ts is None or ts is pd.NaT:
        raise RankdistillError(
            f"--split-time must be a date such as 2020-06-01, seconds since 1970, or a quantile in (0, 1) "
            f"such as 0.9, got {value!r}"
        )
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return "time", float(int(ts.timestamp()))


def default_split(data: Interactions) -> str:
    if data.given_test is not None:
        return "given"
    if data.timestamps is not None:
        return "temporal-leave-one-out"
    return "ratio"


def resolve_options(data: Interactions, kind: str | None = None, seed: int = 0,
                    ratio: str | tuple | None = None, cut: str | float | None = None) -> dict:
    """The split to make, validated: {"kind": ..., and "ratio"/"cut"/"seed" where that kind uses them}."""
    if kind is not None and kind not in SPLITS:
        raise RankdistillError(f"unknown split {kind!r}; choose one of {', '.join(SPLITS)}")
    if kind is None:
        if ratio is not None and cut is not None:
            raise RankdistillError("--split-ratio and --split-time belong to different splits; pass --split ratio "
                                   "or --split time-cut")
        kind = "ratio" if ratio is not None else "time-cut" if cut is not None else default_split(data)
    if ratio is not None and kind != "ratio":
        raise RankdistillError(f"--split-ratio applies to --split ratio only, and the split is {kind}")
    if cut is not None and kind != "time-cut":
        raise RankdistillError(f"--split-time applies to --split time-cut only, and the split is {kind}")
    if kind == "ratio":
        return {"kind": kind, "ratio": list(parse_ratio(ratio if ratio is not None else DEFAULT_RATIO)), "seed": seed}
    if kind == "time-cut":
        cut = DEFAULT_QUANTILE if cut is None else cut
        parse_cut(cut)
        return {"kind": kind, "cut": cut}
    if kind == "given":
        return {"kind": kind, "seed": seed}
    return {"kind": kind}


def make_split(data: Interactions, kind: str | None = None, seed: int = 0,
               ratio: str | tuple | None = None, cut: str | float | None = None) -> Split:
    """Split ``data`` (see the module docstring). ``kind=None`` picks: the data set's given split, else
    temporal leave-one-out when there are timestamps, else ``ratio`` (or the kind ``ratio``/``cut`` imply).
    ``seed`` drives the random choices of ``ratio`` and ``given``; the same arguments give the same split."""
    options = resolve_options(data, kind, seed, ratio, cut)
    kind = options["kind"]
    if kind == "temporal-leave-one-out":
        split = temporal_leave_one_out(data)
    elif kind == "ratio":
        split = ratio_split(data, tuple(options["ratio"]), seed)
    elif kind == "time-cut":
        split = time_cut_split(data, options["cut"])
    else:
        split = given_split(data, seed)
    return Split(split.kind, split.n_users, split.n_items, split.train, split.valid, split.test, split.dropped,
                 options)


def describe_dropped(dropped: dict[str, int]) -> str:
    """The line every command prints: ``dropped: duplicates 2, test_items_unseen_in_train 5`` (counts as in
    ``Split.dropped``: interactions, unless the key starts with ``users_`` or ``items_``), or
    ``dropped: nothing``."""
    return "dropped: " + (", ".join(f"{reason} {n:,}" for reason, n in dropped.items()) or "nothing")


def split_arguments(options: dict) -> dict:
    """The keyword arguments of make_split that cut the split ``options`` (a Split.options) again."""
    return {"kind": options["kind"], "seed": options.get("seed", 0), "ratio": options.get("ratio"),
            "cut": options.get("cut")}


# -- the splits -----------------------------------------------------------------------------------------

def _no_timestamps(data: Interactions, what: str) -> RankdistillError:
    given = ", --split given (the data set's own split)" if data.given_test is not None else ""
    return RankdistillError(
        f"{what} needs timestamps and data set {data.name!r} has none; use --split ratio (per-user random "
        f"holdout, seeded, --split-ratio 0.8,0.1,0.1){given}, or name the time column with --timestamp-col"
    )


def _require_per_user(data: Interactions, counts: np.ndarray, enough: np.ndarray, minimum: int, what: str) -> None:
    """Raise naming how many users have too few interactions for the split and the filter that fixes it."""
    few = int((~enough).sum())
    if few:
        raise RankdistillError(
            f"{few} of {data.n_users} users have too few interactions for {what} (the fewest is "
            f"{int(counts[~enough].min())}, at least {minimum} are needed for train, validation and test); "
            f"drop them with --min-user-interactions {minimum}"
        )


def temporal_leave_one_out(data: Interactions) -> Split:
    if data.timestamps is None:
        raise _no_timestamps(data, "temporal leave-one-out")
    counts = np.bincount(data.users, minlength=data.n_users)
    _require_per_user(data, counts, counts >= 3, 3, "temporal leave-one-out")
    order = np.lexsort((np.arange(len(data)), data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    ends = np.cumsum(counts)  # position after each user's last interaction in sorted order
    from_end = ends[users] - 1 - np.arange(len(users))  # 0 = last, 1 = second to last
    return _assemble("temporal-leave-one-out", data, users, items, from_end == 0, from_end == 1)


def _held_out(n: np.ndarray, share: float) -> np.ndarray:
    """Interactions held out of ``n`` for a ``share``: rounded half up, at least 1."""
    return np.maximum(1, np.floor(n * share + 0.5)).astype(np.int64)


def ratio_split(data: Interactions, ratio: tuple[float, float, float] = DEFAULT_RATIO, seed: int = 0) -> Split:
    shares = parse_ratio(ratio)
    _, valid_share, test_share = shares
    counts = np.bincount(data.users, minlength=data.n_users)
    n_test, n_valid = _held_out(counts, test_share), _held_out(counts, valid_share)
    enough = counts - n_test - n_valid >= 1
    if not enough.all():
        # the smallest count from which on every user keeps a training interaction
        m = np.arange(1, counts.max() + 2)
        ok = m - _held_out(m, test_share) - _held_out(m, valid_share) >= 1
        minimum = int(m[np.flatnonzero(~ok).max() + 1]) if (~ok).any() else 3
        _require_per_user(data, counts, enough, minimum, f"a {shares[0]:g}/{shares[1]:g}/{shares[2]:g} ratio split")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data))
    order = perm[np.argsort(data.users[perm], kind="stable")]  # grouped by user, random within a user
    users = data.users[order]
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(order)) - starts[users]  # position within the user's shuffled interactions
    test, valid = np.zeros(len(data), bool), np.zeros(len(data), bool)
    test[order] = pos < n_test[users]
    valid[order] = (pos >= n_test[users]) & (pos < n_test[users] + n_valid[users])
    return _assemble("ratio", data, data.users, data.items, test, valid)


def time_cut_split(data: Interactions, cut: str | float = DEFAULT_QUANTILE) -> Split:
    if data.timestamps is None:
        raise _no_timestamps(data, "a time cut")
    how, value = parse_cut(cut)
    t = data.timestamps
    n = len(data)
    order = np.lexsort((np.arange(n), t))  # global time order, ties by row order
    n_test = n - int(np.floor(value * n)) if how == "quantile" else int((t >= value).sum())
    span = f"the data runs from {_date(t.min())} to {_date(t.max())}"
    if n_test == 0:
        raise RankdistillError(f"--split-time {cut} leaves no interaction at or after the cut ({span}); "
                               "choose an earlier cut")
    if 2 * n_test >= n:
        raise RankdistillError(
            f"--split-time {cut} puts {n_test:,} of {n:,} interactions at or after the cut; as many before it "
            f"are held out for validation, which leaves nothing to train on ({span}); choose a later cut, "
            "e.g. --split-time 0.9"
        )
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    test = pos >= n - n_test
    valid = (pos >= n - 2 * n_test) & ~test
    return _assemble("time-cut", data, data.users, data.items, test, valid)


def _date(seconds: int) -> str:
    return str(pd.Timestamp(int(seconds), unit="s", tz="UTC").date()) if -2**40 < seconds < 2**40 else str(seconds)


def given_split(data: Interactions, seed: int = 0) -> Split:
    if data.given_test is None:
        raise RankdistillError(
            f"data set {data.name!r} ships no split (only the LightGCN format does); use --split "
            f"temporal-leave-one-out, time-cut or ratio"
        )
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


def _assemble(kind: str, data: Interactions, users: np.ndarray, items: np.ndarray, test: np.ndarray,
              valid: np.ndarray) -> Split:
    """Train = the rest; valid/test rows whose user or item has no training row are dropped and counted."""
    train = ~(test | valid)
    seen_user = np.zeros(data.n_users, bool)
    seen_user[users[train]] = True
    seen_item = np.zeros(data.n_items, bool)
    seen_item[items[train]] = True
    dropped = dict(data.dropped)
    kept = {}
    for name, mask in (("valid", valid), ("test", test)):
        cold_user = mask & ~seen_user[users]
        cold_item = mask & seen_user[users] & ~seen_item[items]
        for reason, cold in (("users", cold_user), ("items", cold_item)):
            if cold.any():
                dropped[f"{name}_{reason}_unseen_in_train"] = int(cold.sum())
        kept[name] = mask & ~cold_user & ~cold_item
        if not kept[name].any():
            raise RankdistillError(
                f"the {kind} split of {data.name!r} leaves no {name} interaction whose user and item also occur in "
                f"training ({mask.sum():,} before dropping); choose another split or less filtering"
            )
    csr = lambda m: Csr.from_pairs(users[m], items[m], data.n_users, data.n_items)  # noqa: E731
    return Split(kind, data.n_users, data.n_items, csr(train), csr(kept["valid"]), csr(kept["test"]), dropped)
