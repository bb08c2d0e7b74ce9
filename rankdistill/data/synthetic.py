"""The embedded default data: a seeded synthetic implicit-feedback log.

There are ``genres`` random directions in a ``taste_dim``-dimensional taste space. Each item belongs to
one genre (its vector is the genre's direction plus noise) and each user likes one to
``max_genres_per_user`` genres (the normalised sum of their directions plus noise); each item also has a
popularity bias following a Zipf law. With many genres the preference matrix has a high rank, so a wide
teacher can represent more of it than a narrow student: there is a gap for distillation to close.
A user with n_u interactions draws n_u distinct items without replacement from

    p(i | u) ∝ exp(<x_u, y_i> / temperature + popularity_weight · log pop_i)

(Gumbel-top-k trick, vectorised over all users). n_u is log-normal, at least ``min_per_user``; the
interactions of a user are spread over time in a random order, so the last one (the test item of a
temporal leave-one-out split) is a fresh draw from the same preferences: learnable, and far above popularity
for a model that recovers the tastes. The same seed gives the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rankdistill.errors import RankdistillError


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 6000
    items: int = 3000
    interactions: int = 300_000
    taste_dim: int = 96
    genres: int = 200
    max_genres_per_user: int = 3
    noise: float = 0.6
    temperature: float = 0.1
    popularity_weight: float = 0.3
    min_per_user: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("users", "items", "interactions", "taste_dim", "genres", "max_genres_per_user", "min_per_user"):
            if getattr(self, name) < 1:
                raise RankdistillError(f"synthetic {name} must be >= 1, got {getattr(self, name)}")
        if self.items < self.min_per_user + 2:
            raise RankdistillError(f"synthetic items must be >= {self.min_per_user + 2}, got {self.items}")
        if self.interactions < self.users * self.min_per_user:
            raise RankdistillError(
                f"synthetic interactions ({self.interactions}) must be at least users × {self.min_per_user} "
                f"= {self.users * self.min_per_user}"
            )
        if self.interactions > self.users * self.items // 2:
            raise RankdistillError(
                f"synthetic interactions ({self.interactions}) must be at most half of users × items "
                f"({self.users * self.items // 2})"
            )
        if self.temperature <= 0:
            raise RankdistillError(f"synthetic temperature must be > 0, got {self.temperature}")


def _counts_per_user(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    raw = rng.lognormal(mean=0.0, sigma=0.8, size=cfg.users)
    extra = cfg.interactions - cfg.min_per_user * cfg.users
    counts = cfg.min_per_user + np.floor(raw / raw.sum() * extra).astype(np.int64)
    cap = cfg.items // 2
    counts = np.minimum(counts, cap)
    short = cfg.interactions - counts.sum()  # hand out the rounding remainder to users below the cap
    while short > 0:
        room = np.flatnonzero(counts < cap)
        take = rng.choice(room, size=min(short, len(room)), replace=False)
        counts[take] += 1
        short = cfg.interactions - counts.sum()
    return counts


def _top_n_per_row(values: np.ndarray, n: int) -> np.ndarray:
    """Column indices [R, n] of each row's n largest values, largest first, ties by lower index: the first n
    columns of a stable descending argsort (except for a tie exactly at the n-th place, which the continuous
    Gumbel noise makes a measure-zero event), in O(columns) per row instead of O(columns log columns)."""
    if n >= values.shape[1]:
        return np.argsort(-values, axis=1, kind="stable")
    part = np.argpartition(-values, n - 1, axis=1)[:, :n]
    picked = np.take_along_axis(values, part, axis=1)
    within = np.lexsort((part, -picked), axis=1)  # value descending, then index ascending
    return np.take_along_axis(part, within, axis=1)


def make_synthetic(cfg: SyntheticConfig = SyntheticConfig(), chunk: int = 1024,
                   chunk_bytes: int = 256 * 2**20) -> pd.DataFrame:
    """DataFrame with columns user, item (int64 raw IDs), timestamp (int64 seconds), ``cfg.interactions`` rows.

    Users are drawn ``chunk`` at a time, fewer when their [chunk, items] score matrix would pass
    ``chunk_bytes``, so any catalogue size fits in memory; the chunking does not change the data."""
    chunk = max(1, min(chunk, chunk_bytes // (4 * cfg.items)))
    rng = np.random.default_rng(cfg.seed)
    centres = rng.normal(size=(cfg.genres, cfg.taste_dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def noisy_unit(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        x = x + cfg.noise * rng.normal(size=x.shape).astype(np.float32) / np.sqrt(cfg.taste_dim)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    y_item = noisy_unit(centres[rng.integers(cfg.genres, size=cfg.items)])
    n_liked = rng.integers(1, cfg.max_genres_per_user + 1, size=cfg.users)
    liked = rng.integers(cfg.genres, size=(cfg.users, cfg.max_genres_per_user))
    weights = (np.arange(cfg.max_genres_per_user)[None, :] < n_liked[:, None]).astype(np.float32)
    x_user = noisy_unit(np.einsum("ug,ugd->ud", weights, centres[liked]))
    log_pop = -np.log(rng.permutation(cfg.items) + 1.0).astype(np.float32)  # Zipf(1): pop ∝ 1 / rank
    counts = _counts_per_user(cfg, rng)

    users, items = [], []
    for u0 in range(0, cfg.users, chunk):
        u1 = min(u0 + chunk, cfg.users)
        logits = x_user[u0:u1] @ y_item.T / cfg.temperature + cfg.popularity_weight * log_pop
        gumbel = -np.log(-np.log(rng.random(logits.shape, dtype=np.float32) + 1e-12) + 1e-12)
        n = counts[u0:u1]
        order = _top_n_per_row(logits + gumbel, int(n.max()))
        take = np.arange(order.shape[1])[None, :] < n[:, None]
        users.append(np.repeat(np.arange(u0, u1), n))
        items.append(order[take])
    user = np.concatenate(users)
    item = np.concatenate(items)
    # Time: each user starts somewhere in a year and acts every few hours to days, in a random order.
    start = rng.integers(0, 365 * 86400, size=cfg.users)
    gaps = rng.exponential(3 * 86400, size=len(user)).astype(np.int64) + 1
    perm = np.argsort(user * 1.0 + rng.random(len(user)), kind="stable")  # shuffle within each user
    user, item = user[perm], item[perm]
    first = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    csum = np.cumsum(gaps)
    offset = csum - np.repeat(csum[first] - gaps[first], np.diff(np.r_[first, len(user)]))
    timestamp = 1_600_000_000 + start[user] + offset
    return pd.DataFrame({"user": user.astype(np.int64), "item": item.astype(np.int64), "timestamp": timestamp})
