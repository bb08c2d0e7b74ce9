"""Splits: ratio holdout, global time cut, the given split and what each drops, on tiny hand-made logs."""

import numpy as np
import pandas as pd
import pytest

from rankdistill.data.interactions import Interactions
from rankdistill.data.split import make_split, parse_cut, parse_ratio, split_arguments


def _data(rows, columns=("user", "item", "timestamp"), name="t"):
    return Interactions.from_frame(pd.DataFrame(rows, columns=list(columns)), name)


def _lists(data, csr):
    """{raw user: sorted raw items} of a Csr."""
    out = {}
    for u in range(csr.n_rows):
        items = csr.indices[csr.indptr[u]:csr.indptr[u + 1]].numpy()
        if len(items):
            out[data.user_vocab.decode([u])[0]] = sorted(data.item_vocab.decode(items).tolist())
    return out


def _grid(n_users=6, n_items=10):
    """Every user has every item, each user in its own order of time: user u meets item i at step
    (i + u) mod n_items, so no split leaves an item or a user without training interactions."""
    return _data([(u, i, ((i + u) % n_items) * n_users + u) for u in range(n_users) for i in range(n_items)])


# -- ratio -------------------------------------------------------------------------------------------

def test_ratio_split_sizes_per_user():
    # 10 interactions, shares 0.6/0.2/0.2: test = floor(10*0.2 + 0.5) = 2, valid = 2, train = 6
    data = _grid(n_users=4, n_items=10)
    s = make_split(data, "ratio", seed=0, ratio="0.6,0.2,0.2")
    assert s.train.lengths().tolist() == [6] * 4
    assert s.valid.lengths().tolist() == [2] * 4 and s.test.lengths().tolist() == [2] * 4
    assert s.options == {"kind": "ratio", "ratio": [0.6, 0.2, 0.2], "seed": 0}


def test_ratio_split_holds_out_at_least_one():
    # 3 interactions at 0.8/0.1/0.1: 3*0.1 rounds to 0, raised to 1 -> 1 train, 1 valid, 1 test
    data = _grid(n_users=20, n_items=3)
    s = make_split(data, "ratio")
    assert s.train.lengths().tolist() == [1] * 20
    assert s.test.nnz + s.dropped.get("test_items_unseen_in_train", 0) == 20  # one each, before unseen ones drop
    assert s.valid.nnz + s.dropped.get("valid_items_unseen_in_train", 0) == 20


def test_ratio_split_partitions_every_user_interactions():
    data = _grid()
    s = make_split(data, "ratio", seed=3)
    union = s.train.union(s.valid).union(s.test)
    assert union.nnz == len(data) and union.lengths().tolist() == [10] * 6


def test_ratio_split_same_seed_same_split_other_seed_other_split():
    data = _grid()
    a, b, c = (make_split(data, "ratio", seed=s) for s in (1, 1, 2))
    assert a.test.indices.tolist() == b.test.indices.tolist()
    assert a.test.indices.tolist() != c.test.indices.tolist()


def test_ratio_is_the_default_without_timestamps():
    data = _data([(u, i) for u in range(3) for i in range(4)], ("user", "item"))
    assert make_split(data).kind == "ratio"


def test_parse_ratio_normalises_any_scale():
    assert parse_ratio("8,1,1") == (0.8, 0.1, 0.1)


# -- time cut -----------------------------------------------------------------------------------------

def test_time_cut_at_a_date():
    # days 8 and 9 are at or after the cut: test; the 2 interactions before (days 6, 7): validation
    day = 86400
    rows = [("u", "a", 0), ("v", "a", 1), ("u", "b", 2), ("v", "b", 3), ("u", "c", 4), ("w", "c", 5),
            ("v", "c", 6), ("u", "e", 7),  # validation: e is never trained on -> dropped
            ("w", "a", 8), ("w", "z", 9)]  # test: z is never trained on -> dropped
    data = _data([(u, i, t * day) for u, i, t in rows])
    s = make_split(data, "time-cut", cut="1970-01-09")
    assert _lists(data, s.train) == {"u": ["a", "b", "c"], "v": ["a", "b"], "w": ["c"]}
    assert _lists(data, s.valid) == {"v": ["c"]} and _lists(data, s.test) == {"w": ["a"]}
    assert s.dropped == {"valid_items_unseen_in_train": 1, "test_items_unseen_in_train": 1}
    assert s.options == {"kind": "time-cut", "cut": "1970-01-09"}


def test_time_cut_at_a_quantile():
    # 20 interactions in time order; q = 0.9 -> test = the last 20 - floor(0.9 * 20) = 2, validation the 2 before
    data = _data([("u", i, i) for i in range(10)] + [("w", i, 100 + i) for i in range(10)])
    s = make_split(data, "time-cut", cut=0.9)
    assert _lists(data, s.test) == {"w": [8, 9]} and _lists(data, s.valid) == {"w": [6, 7]}
    assert s.train.nnz == 16 and s.dropped == {}


def test_time_cut_drops_test_users_without_training():
    # cut at second 10: test = new@10, old@11; validation = mid@8, old@9
    data = _data([("old", "e", 0), ("old", "a", 1), ("old", "b", 2), ("mid", "a", 3), ("mid", "d", 4),
                  ("mid", "b", 8), ("old", "c", 9), ("new", "a", 10), ("old", "d", 11)])
    s = make_split(data, "time-cut", cut=10)
    assert s.dropped == {"valid_items_unseen_in_train": 1, "test_users_unseen_in_train": 1}
    assert _lists(data, s.valid) == {"mid": ["b"]} and _lists(data, s.test) == {"old": ["d"]}


def test_parse_cut_date_seconds_and_quantile():
    assert parse_cut("0.9") == ("quantile", 0.9)
    assert parse_cut("1970-01-02") == ("time", 86400.0)
    assert parse_cut("900000001") == ("time", 900000001.0)
    assert parse_cut("2020") == ("time", 1577836800.0)  # a bare year is a date


# -- defaults and re-cutting ---------------------------------------------------------------------------

def test_split_options_cut_the_same_split_again():
    data = _grid()
    for kind, extra in (("ratio", {"ratio": "0.7,0.15,0.15"}), ("time-cut", {"cut": "0.75"}),
                        ("temporal-leave-one-out", {})):
        a = make_split(data, kind, seed=5, **extra)
        b = make_split(data, **split_arguments(a.options))
        assert a.options == b.options and a.test.indices.tolist() == b.test.indices.tolist()
        assert a.valid.indices.tolist() == b.valid.indices.tolist()


def test_options_imply_the_split_kind():
    data = _grid()
    assert make_split(data, ratio="0.8,0.1,0.1").kind == "ratio"
    assert make_split(data, cut=0.9).kind == "time-cut"
    assert make_split(data).kind == "temporal-leave-one-out"


def test_given_split_drops_test_users_without_training():
    full = [(u, i, False) for u in (3, 4) for i in range(6)]  # every item trained on twice
    rows = [(0, 0, False), (0, 1, False), (0, 2, False), (1, 0, False), (1, 1, False)] + full
    rows += [(0, 3, True), (1, 2, True), (2, 0, True)]  # user 2 has no training interaction
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "is_test"]), "g")
    s = make_split(data, "given", seed=0)
    assert s.dropped == {"test_users_unseen_in_train": 1}
    assert _lists(data, s.test) == {0: [3], 1: [2]}
    assert s.valid.lengths().tolist() == [1, 1, 1, 1, 0]  # one per user with >= 2 training items


@pytest.mark.parametrize("kind", ["temporal-leave-one-out", "ratio", "time-cut"])
def test_every_split_is_disjoint(kind):
    data = _grid(8, 12)
    s = make_split(data, kind, seed=1)
    keys = lambda c: set((c.rows() * 100 + c.indices).tolist())  # noqa: E731
    assert not (keys(s.train) & keys(s.valid)) and not (keys(s.train) & keys(s.test)) and not (keys(s.valid) & keys(s.test))
    assert np.all(s.test.lengths().numpy() >= 0)
