"""Leakage between a teacher and a student: interactions the teacher trained on that the student holds out.

A teacher that trained on a student's validation or test interactions has seen the answers: the student
distilled from it is evaluated on rows its teacher learnt. Teacher and student data are often different logs,
so the check is by raw (user, item) pair, not by split options: the teacher's training pairs, mapped onto the
student's vocabularies by raw ID, against the student's held-out pairs. A held-out pair that the student also
trains on (a given split whose test file repeats a training pair) is the student's own knowledge, not a leak.
"""

from __future__ import annotations

import numpy as np

from rankdistill.data.csr import Csr
from rankdistill.data.split import Split


def _keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))


def _pairs(csr: Csr) -> tuple[np.ndarray, np.ndarray]:
    return csr.rows().cpu().numpy(), csr.indices.cpu().numpy()


def held_out_overlap(users: np.ndarray, items: np.ndarray, split: Split) -> tuple[int, int]:
    """users, items int64 [N]: (user, item) pairs in ``split``'s row indices, -1 where the ID is not in its
    vocabularies (such a pair cannot be held out) -> (distinct pairs among ``split``'s validation or test
    interactions and not among its training ones, how many such held-out pairs ``split`` has)."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    known = (users >= 0) & (items >= 0)
    n = split.n_items
    held = np.union1d(_keys(*_pairs(split.valid), n), _keys(*_pairs(split.test), n))
    held = np.setdiff1d(held, _keys(*_pairs(split.train), n), assume_unique=True)
    seen = _keys(users[known], items[known], n)
    return int(np.isin(seen, held, assume_unique=True).sum()), len(held)
