"""Teacher knowledge: the teacher's top-K items and scores per user, computed once in chunks of users,
kept in memory or stored as parquet so later runs can distil from the file alone, without the teacher.

The user's training items are excluded (they are known positives, not knowledge). A user with fewer than K
other items gets a short list: the missing entries are padding, marked False in ``valid``.

:meth:`TeacherKnowledge.from_frame` builds the same lists from any teacher's scores (user, item, score in raw
IDs, for example a production ranker's logged top-200), looked up in the student's vocabularies; the rows
whose IDs they lack are counted in ``dropped``.

Parquet layout (one row per real entry)::

    user int64 | rank int32 (0 = best) | item int64 | score float32        (row indices, not raw ids)

with the key-value metadata ``rankdistill.teacher_knowledge`` = JSON {version, n_users, n_items, k,
train_fingerprint}. Loading refuses a file whose sizes (or training data, when the split is given) differ
from the run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rankdistill.data.csr import Csr
from rankdistill.data.interactions import Interactions
from rankdistill.data.split import Split
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import DEFAULT_MEMORY_BUDGET, chunk_size, rank_all
from rankdistill.evaluation.topk import topk_ties_by_index
from rankdistill.models.base import DotProductRanker, Ranker
from rankdistill.train.discrepancy import list_positions

METADATA_KEY = "rankdistill.teacher_knowledge"
VERSION = 1
COLUMNS = ("user", "rank", "item", "score")


def train_fingerprint(train: Csr) -> str:
    """A short hash of the training interactions the top-K lists exclude."""
    h = hashlib.sha256()
    for t in (train.indptr, train.indices):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(train.n_cols).encode())
    return h.hexdigest()[:16]


@dataclass
class TeacherKnowledge:
    items: torch.Tensor  # int64 [U, K] the teacher's top-K items per user, best first (0 where padding)
    scores: torch.Tensor  # float32 [U, K] their teacher scores (0 where padding)
    n_items: int | None = None  # catalogue size; None: inferred as items.max() + 1 (a lower bound)
    valid: torch.Tensor | None = None  # bool [U, K] real entries (padding must still hold a real item index);
    #                                    None: where ``scores`` is finite, padding set to item 0, score 0
    exclude: Csr | None = None  # the training items left out of the lists (dcd and rrd use it; not saved)
    fingerprint: str | None = None  # train_fingerprint(exclude) at computation time
    dropped: dict[str, int] | None = None  # from_frame: the rows left out, per reason (None: not from a frame)

    def __post_init__(self) -> None:
        if self.valid is None:  # padding from the scores; give it item 0 and score 0 (any real index will do)
            self.valid = torch.isfinite(self.scores)
            self.items = torch.where(self.valid, self.items, torch.zeros_like(self.items))
            self.scores = torch.where(self.valid, self.scores, torch.zeros_like(self.scores))
        self.valid = self.valid.to(torch.bool)
        self.items, self.scores = self.items.to(torch.int64), self.scores.to(torch.float32)
        if self.n_items is None:
            self.n_items = int(self.items.max()) + 1 if self.items.numel() else 0

    @property
    def k(self) -> int:
        return self.items.shape[1]

    @property
    def n_users(self) -> int:
        return self.items.shape[0]

    def to(self, device: torch.device | str) -> "TeacherKnowledge":
        return replace(self, items=self.items.to(device), scores=self.scores.to(device), valid=self.valid.to(device))

    def content_fingerprint(self) -> str:
        """A short hash of the lists: items, scores, which entries are real, and the catalogue size."""
        h = hashlib.sha256(f"{self.n_items}:{self.n_users}x{self.k}".encode())
        for t in (self.items, self.scores, self.valid):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def truncate(self, k: int) -> "TeacherKnowledge":
        """The first ``k`` entries of every list."""
        return replace(self, items=self.items[:, :k], scores=self.scores[:, :k], valid=self.valid[:, :k])

    # -- computing -----------------------------------------------------------------------------------
    @classmethod
    def compute(cls, teacher: Ranker, split: Split, k: int = 100,
                memory_budget: int | None = None) -> "TeacherKnowledge":
        """The teacher's top-``k`` of every user, training items excluded, users scored in chunks
        (``memory_budget``: bytes per chunk, None: the evaluator's default for the teacher's device)."""
        ranking = rank_all(teacher, split.train, k, memory_budget=memory_budget)
        return cls(ranking.items, ranking.scores, split.n_items, exclude=split.train,
                   fingerprint=train_fingerprint(split.train))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, vocab: Interactions | tuple[IdVocab, IdVocab], k: int | None = None,
                   exclude: Csr | None = None) -> "TeacherKnowledge":
        """Knowledge from any teacher's scores, mapped onto the student's vocabularies by raw ID.

        ``frame``: columns user, item, score (raw IDs as the data spells them; any number of scored items per
        user, for example a production ranker's top-200); ``vocab``: the student's data (``Interactions``) or
        its (user, item) vocabularies. Each user's items are sorted by score, best first (ties: the lower item
        row first, as :meth:`compute`), the first ``k`` kept (None: all; K is the longest list). With
        ``exclude`` (Csr [U, I], the student's training items) those are left out, as :meth:`compute` does.

        Every row left out is counted in ``dropped``: ``unknown_user`` (rows whose user is not in the
        vocabulary), ``unknown_item`` (user known, item not), ``unknown_user_ids``/``unknown_item_ids`` (distinct
        IDs), ``in_training`` (the user's training items). Refused: a missing column, a score that is not a
        finite number, a (user, item) listed twice, no row left."""
        user_vocab, item_vocab = (vocab.user_vocab, vocab.item_vocab) if isinstance(vocab, Interactions) else vocab
        n_users, n_items = len(user_vocab), len(item_vocab)
        missing = [c for c in ("user", "item", "score") if c not in frame.columns]
        if missing:
            raise RankdistillError(f"teacher scores lack the column(s) {', '.join(missing)}; they have "
                                   f"{', '.join(map(str, frame.columns)) or 'no columns'} (expected user, item, score)")
        score = pd.to_numeric(frame["score"], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(score)
        if bad.any():
            r = int(np.argmax(bad))
            raise RankdistillError(f"teacher scores: {int(bad.sum())} score(s) are not finite numbers (first at data "
                                   f"row {r + 1}: {frame['score'].iloc[r]!r}); give every (user, item) a number")
        users, items = user_vocab.encode(frame["user"].to_numpy()), item_vocab.encode(frame["item"].to_numpy())
        unknown_user, unknown_item = users < 0, (users >= 0) & (items < 0)
        dropped = {"unknown_user": int(unknown_user.sum()), "unknown_item": int(unknown_item.sum()),
                   "unknown_user_ids": int(frame["user"][unknown_user].nunique()),
                   "unknown_item_ids": int(frame["item"][items < 0].nunique())}
        keep = ~unknown_user & ~unknown_item
        users, items, score = users[keep], items[keep], score[keep]
        key = users * n_items + items
        unique, first, counts = np.unique(key, return_index=True, return_counts=True)
        if (counts > 1).any():
            r = int(first[np.argmax(counts > 1)])
            u, i = (vocab_.decode(rows[r:r + 1])[0] for vocab_, rows in ((user_vocab, users), (item_vocab, items)))
            raise RankdistillError(f"teacher scores list user {_plain(u)!r}, item {_plain(i)!r} "
                                   f"{int(counts[counts > 1][0])} times; keep one score per (user, item)")
        if exclude is not None:
            seen = np.isin(key, exclude.rows().cpu().numpy() * n_items + exclude.indices.cpu().numpy())
            dropped["in_training"] = int(seen.sum())
            users, items, score = users[~seen], items[~seen], score[~seen]
        if len(users) == 0:
            raise RankdistillError(f"none of the {len(frame):,} teacher scores is left for the data's users and items "
                                   f"(left out: {dropped}); check that the scores use the data's raw IDs")
        order = np.lexsort((items, -score, users))  # by user, then best score first, then the lower item row
        users, items, score = users[order], items[order], score[order]
        starts = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=starts[1:])
        rank = np.arange(len(users)) - starts[users]
        big_k = int(np.diff(starts).max()) if k is None else min(k, int(np.diff(starts).max()))
        keep = rank < big_k
        slot = users[keep] * big_k + rank[keep]
        top, scores, valid = np.zeros(n_users * big_k, np.int64), np.zeros(n_users * big_k, np.float32), np.zeros(
            n_users * big_k, bool)
        top[slot], scores[slot], valid[slot] = items[keep], score[keep], True
        shape = (n_users, big_k)
        return cls(torch.from_numpy(top.reshape(shape)), torch.from_numpy(scores.reshape(shape)), n_items,
                   torch.from_numpy(valid.reshape(shape)), exclude,
                   train_fingerprint(exclude) if exclude is not None else None, dropped)

    @classmethod
    def load_or_compute(cls, path: str | Path, split: Split, k: int = 100,
                        teacher: Ranker | None = None) -> "TeacherKnowledge":
        """Reuse the file at ``path`` when it exists (checked against ``split``; lists cut to ``k``),
        else compute with ``teacher`` and write it there."""
        path = Path(path)
        if path.exists():
            knowledge = cls.load(path, split)
            if knowledge.k < k:
                raise RankdistillError(f"teacher knowledge {path} holds the top-{knowledge.k} per user, fewer than the "
                                       f"{k} asked for; lower --kd-topk to {knowledge.k} or recompute the file")
            return knowledge.truncate(k)
        if teacher is None:
            raise RankdistillError(f"no teacher knowledge at {path} and no teacher to compute it; "
                                   "train or load a teacher first")
        knowledge = cls.compute(teacher, split, k)
        knowledge.save(path)
        return knowledge

    # -- parquet -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the real entries to ``path`` (parquet, atomically: a temporary file then a rename)."""
        import fastparquet

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        valid = self.valid.cpu().numpy()
        users, ranks = np.nonzero(valid)
        frame = pd.DataFrame({
            "user": users.astype(np.int64), "rank": ranks.astype(np.int32),
            "item": self.items.cpu().numpy()[valid].astype(np.int64),
            "score": self.scores.cpu().numpy()[valid].astype(np.float32),
        })
        meta = {"version": VERSION, "n_users": self.n_users, "n_items": int(self.n_items), "k": self.k,
                "train_fingerprint": self.fingerprint}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            fastparquet.write(str(tmp), frame, custom_metadata={METADATA_KEY: json.dumps(meta)})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path, split: Split | None = None, *, n_users: int | None = None,
             n_items: int | None = None) -> "TeacherKnowledge":
        """Read a file written by :meth:`save`. With ``split`` (or ``n_users``/``n_items``) a file computed for
        other sizes is refused, naming both; with ``split`` also one computed on other training data, and
        ``exclude`` is set to ``split.train``."""
        path = Path(path)
        meta, frame = _read(path)
        if split is not None:
            n_users, n_items = split.n_users, split.n_items
        for what, expected in (("users", n_users), ("items", n_items)):
            if expected is not None and meta[f"n_{what}"] != expected:
                raise RankdistillError(
                    f"teacher knowledge {path} was computed for {meta['n_users']} users and {meta['n_items']} items, "
                    f"but this data has {n_users} users and {n_items} items; recompute it from the teacher on this "
                    "data (same vocabulary)")
        if split is not None and meta.get("train_fingerprint") not in (None, train_fingerprint(split.train)):
            raise RankdistillError(f"teacher knowledge {path} was computed on other training interactions than "
                                   "this split's (same sizes, different contents); recompute it on this split")
        u, k, i = meta["n_users"], meta["k"], meta["n_items"]
        user, rank = frame["user"].to_numpy(np.int64), frame["rank"].to_numpy(np.int64)
        item, score = frame["item"].to_numpy(np.int64), frame["score"].to_numpy(np.float32)
        bad = (user < 0) | (user >= u) | (rank < 0) | (rank >= k) | (item < 0) | (item >= i) | ~np.isfinite(score)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise RankdistillError(f"teacher knowledge {path}: row {r} (user {user[r]}, rank {rank[r]}, "
                                   f"item {item[r]}, score {score[r]}) is outside {u} users, top-{k}, {i} items "
                                   "or not finite")
        slot = user * k + rank
        if len(np.unique(slot)) != len(slot):
            raise RankdistillError(f"teacher knowledge {path} has two entries for the same (user, rank)")
        items, scores, valid = np.zeros(u * k, np.int64), np.zeros(u * k, np.float32), np.zeros(u * k, bool)
        items[slot], scores[slot], valid[slot] = item, score, True
        return cls(torch.from_numpy(items.reshape(u, k)), torch.from_numpy(scores.reshape(u, k)), i,
                   torch.from_numpy(valid.reshape(u, k)), split.train if split is not None else None,
                   meta.get("train_fingerprint"))


def _plain(value: object) -> object:
    """A numpy scalar as the Python value (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _read(path: Path):
    import fastparquet

    if not path.exists():
        raise RankdistillError(f"teacher knowledge file {path} does not exist")
    try:
        pf = fastparquet.ParquetFile(str(path))
        raw = pf.key_value_metadata.get(METADATA_KEY)
        frame = pf.to_pandas() if raw is not None else None
    except Exception as e:  # fastparquet raises many types for damaged files
        raise RankdistillError(f"cannot read teacher knowledge {path}: {type(e).__name__}: {e}") from None
    if raw is None:
        raise RankdistillError(f"{path} is not a teacher-knowledge file (no {METADATA_KEY!r} metadata); "
                               "write it with TeacherKnowledge.save")
    meta = json.loads(raw)
    if meta.get("version") != VERSION:
        raise RankdistillError(f"teacher knowledge {path} has format version {meta.get('version')}, "
                               f"this rankdistill reads version {VERSION}; recompute it")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise RankdistillError(f"teacher knowledge {path} lacks the column(s) {', '.join(missing)}")
    return meta, frame


@torch.no_grad()
def rank_with_positions(
    model: Ranker, exclude: Csr, k: int, items: torch.Tensor, valid: torch.Tensor | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET, with_ranks: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One full-catalogue pass of ``model`` over every user, ``exclude`` masked, set against given per-user
    lists ``items`` int64 [U, K] (``valid`` bool [U, K], None = all real):

    -> (top items int64 [U, k] best first, their validity bool [U, k] (False: fewer than k candidates),
        ranks int64 [U, K] of ``items`` in the user's ranking (the number of candidates scored strictly
        higher, 0 = best), positions int64 [U, k] of the top items in ``items`` (K where absent)).

    Costs about one validation pass plus a sort of every row, users in chunks under ``memory_budget`` (dcd
    avoids the sort: :mod:`rankdistill.train.discrepancy`). ``with_ranks=False`` skips the sort (ranks come back None):
    rce needs only the top items and their positions, about one validation pass.
    """
    was_training = model.training
    model.eval()
    device = items.device
    n_users, n_items = exclude.n_rows, exclude.n_cols
    valid = torch.ones_like(items, dtype=torch.bool) if valid is None else valid
    c = chunk_size(n_items, memory_budget // 2)  # scores, their sorted copy, the position map
    item_t = model.item_matrix().T.contiguous() if isinstance(model, DotProductRanker) else None
    k_out = min(k, n_items)
    top = torch.empty(n_users, k_out, dtype=torch.int64, device=device)
    top_valid = torch.empty(n_users, k_out, dtype=torch.bool, device=device)
    positions = torch.empty(n_users, k_out, dtype=torch.int64, device=device)
    ranks = torch.empty_like(items) if with_ranks else None
    for a in range(0, n_users, c):
        b = min(n_users, a + c)
        users = torch.arange(a, b, device=device)
        scores = model.user_vectors(users) @ item_t if item_t is not None else model.score_all(users)
        rows, cols = exclude.block(a, b)
        scores[rows.to(device), cols.to(device)] = float("-inf")
        values, top[a:b] = topk_ties_by_index(scores, k_out)
        top_valid[a:b] = torch.isfinite(values)
        if with_ranks:
            ascending = scores.sort(dim=1).values
            ranks[a:b] = n_items - torch.searchsorted(ascending, scores.gather(1, items[a:b]), right=True)
        # the top items' places in the given lists: a binary search per row, not a [chunk, n_items] map
        positions[a:b] = list_positions(top[a:b], torch.ones_like(top[a:b], dtype=torch.bool), items[a:b], valid[a:b])
    model.train(was_training)
    return top, top_valid, ranks, positions
