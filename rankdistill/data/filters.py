"""From ratings to implicit feedback: a rating threshold, duplicates collapsed, k-core filtering.

Applied in this order, each step counting what it drops (keys of ``dropped``; the unit is interactions
unless the key starts with ``users_`` or ``items_``):

- ``below_min_rating``: interactions with rating < ``min_rating`` (``rating >= min_rating`` is a positive).
- ``duplicates``: repeated (user, item) pairs, collapsed to their earliest occurrence (by timestamp, then
  row order).
- k-core: users with fewer than ``min_user_interactions`` and items with fewer than
  ``min_item_interactions`` interactions are removed, again and again until every remaining user and item
  has enough (removing an item can push a user under the threshold). Counted as
  ``users_removed_by_k_core`` and ``items_removed_by_k_core`` (users and items removed) and
  ``interactions_removed_by_k_core`` (their interactions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankdistill.errors import RankdistillError


def filter_min_rating(frame: pd.DataFrame, min_rating: float | None, source: str = "data") -> tuple[pd.DataFrame, int]:
    """Rows with ``rating >= min_rating`` (all rows when ``min_rating`` is None) and how many were dropped."""
    if min_rating is None:
        return frame, 0
    if "rating" not in frame:
        raise RankdistillError(
            f"--min-rating {min_rating:g} needs ratings and {source} has no rating column; "
            "name it with --rating-col, or leave --min-rating out to take every row as a positive"
        )
    keep = frame["rating"].to_numpy() >= min_rating
    if not keep.any():
        r = frame["rating"]
        raise RankdistillError(
            f"--min-rating {min_rating:g} drops every row of {source} (its ratings range from {r.min():g} to "
            f"{r.max():g}); choose a lower threshold"
        )
    return frame.loc[keep], int((~keep).sum())


def collapse_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the earliest occurrence of each (user, item) pair; rows keep their order. -> (frame, dropped)."""
    order = np.arange(len(frame))
    if "timestamp" in frame:
        order = np.lexsort((order, frame["timestamp"].to_numpy()))  # stable: row order breaks ties in time
    dup_sorted = frame.iloc[order].duplicated(["user", "item"], keep="first").to_numpy()
    duplicate = np.zeros(len(frame), bool)
    duplicate[order] = dup_sorted
    n = int(duplicate.sum())
    return (frame.loc[~duplicate] if n else frame), n


def k_core(frame: pd.DataFrame, min_user: int = 0, min_item: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Iterated k-core on (user, item) rows: -> (filtered frame, counts of what was removed)."""
    for name, value in (("--min-user-interactions", min_user), ("--min-item-interactions", min_item)):
        if value < 0:
            raise RankdistillError(f"{name} must be >= 0, got {value}")
    if min_user <= 1 and min_item <= 1:
        return frame, {}
    users = pd.factorize(frame["user"])[0]
    items = pd.factorize(frame["item"])[0]
    keep = np.ones(len(frame), bool)
    while True:
        u_count = np.bincount(users[keep], minlength=users.max() + 1)
        i_count = np.bincount(items[keep], minlength=items.max() + 1)
        bad = keep & ((u_count[users] < min_user) | (i_count[items] < min_item))
        if not bad.any():
            break
        keep &= ~bad
    n_users, n_items = len(np.unique(users)), len(np.unique(items))
    dropped = {
        "users_removed_by_k_core": n_users - len(np.unique(users[keep])),
        "items_removed_by_k_core": n_items - len(np.unique(items[keep])),
        "interactions_removed_by_k_core": int((~keep).sum()),
    }
    return frame.loc[keep], {k: v for k, v in dropped.items() if v}


def to_implicit(
    frame: pd.DataFrame,
    min_rating: float | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    source: str = "data",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rating threshold -> duplicates collapsed -> k-core. Returns the rows kept (without the rating column)
    and the counts of what was dropped, per reason (zero counts left out)."""
    dropped: dict[str, int] = {}
    frame, n = filter_min_rating(frame, min_rating, source)
    if n:
        dropped["below_min_rating"] = n
    frame = frame.drop(columns=["rating"], errors="ignore")
    frame, n = collapse_duplicates(frame)
    if n:
        dropped["duplicates"] = n
    frame, counts = k_core(frame, min_user_interactions, min_item_interactions)
    dropped.update(counts)
    if len(frame) == 0:
        raise RankdistillError(
            f"no interactions of {source} are left after --min-user-interactions {min_user_interactions} and "
            f"--min-item-interactions {min_item_interactions} ({counts}); lower the thresholds"
        )
    return frame, dropped
