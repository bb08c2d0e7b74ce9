"""A teacher from elsewhere on the student's vocabularies, by raw ID.

The student's rows are its data's vocabularies; the teacher's are its own (a teacher is often trained on
another log: other rows, other order, IDs the student's data lacks or adds). :class:`TeacherAlignment` maps
each student user and item to the teacher's row of the same raw ID, counts the IDs the teacher lacks, and
gives the teacher seen through the student's rows (:func:`rankdistill.models.reindexed.reindexed`). It refuses
only a teacher that cannot score the student's items (or users) at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.models.base import Ranker
from rankdistill.models.reindexed import reindexed


@dataclass(frozen=True)
class TeacherAlignment:
    users: torch.Tensor  # int64 [U] the teacher's row of each student user (-1: the teacher lacks the ID)
    items: torch.Tensor  # int64 [I] the teacher's row of each student item
    teacher_users: int  # the teacher's vocabulary sizes
    teacher_items: int

    @classmethod
    def by_raw_id(cls, teacher_users: IdVocab, teacher_items: IdVocab, users: IdVocab,
                  items: IdVocab) -> "TeacherAlignment":
        """The teacher's vocabularies (``teacher_*``) against the student's (``users``, ``items``); integer and
        text IDs match by their text (:meth:`IdVocab.encode`)."""
        return cls(torch.from_numpy(teacher_users.encode(users.ids)), torch.from_numpy(teacher_items.encode(items.ids)),
                   len(teacher_users), len(teacher_items))

    @property
    def missing_users(self) -> int:
        return int((self.users < 0).sum())

    @property
    def missing_items(self) -> int:
        return int((self.items < 0).sum())

    @property
    def complete(self) -> bool:
        """The teacher holds every student user and item."""
        return self.missing_users == 0 and self.missing_items == 0

    @property
    def is_identity(self) -> bool:
        """Same vocabularies in the same order: the teacher's rows are the student's."""
        return ((len(self.users), len(self.items)) == (self.teacher_users, self.teacher_items)
                and torch.equal(self.users, torch.arange(len(self.users)))
                and torch.equal(self.items, torch.arange(len(self.items))))

    def describe_missing(self) -> str:
        return (f"the teacher lacks {self.missing_users:,} of the data's {len(self.users):,} users and "
                f"{self.missing_items:,} of its {len(self.items):,} items")

    def record(self) -> dict:
        """What config.json records."""
        return {"users_missing": self.missing_users, "items_missing": self.missing_items,
                "teacher_users": self.teacher_users, "teacher_items": self.teacher_items,
                "same_vocabularies": self.is_identity}

    def check(self, teacher: str) -> None:
        """Refuse a teacher that shares no item (or no user) with the student's data: it cannot score any."""
        for what, ids in (("items", self.items), ("users", self.users)):
            if len(ids) and bool((ids < 0).all()):
                raise RankdistillError(
                    f"the teacher {teacher} holds none of the data's {len(ids):,} {what} (matched by raw ID), so it "
                    f"cannot score any of them; check that the data and the teacher's data spell IDs the same way "
                    "(columns, prefixes), or train a teacher on this data")

    def ranker(self, teacher: Ranker) -> Ranker:
        """``teacher`` on the student's rows (``teacher`` itself when the vocabularies are the same)."""
        return teacher if self.is_identity else reindexed(teacher, self.users, self.items)
