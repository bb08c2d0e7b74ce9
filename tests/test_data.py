import numpy as np
import pandas as pd
import pytest

from rankdistill.data.interactions import Interactions
from rankdistill.data.split import make_split, temporal_leave_one_out
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError


def test_synthetic_same_seed_same_data():
    cfg = SyntheticConfig(users=100, items=80, interactions=1500, seed=5)
    pd.testing.assert_frame_equal(make_synthetic(cfg), make_synthetic(cfg))


def test_synthetic_other_seed_other_data():
    a = make_synthetic(SyntheticConfig(users=100, items=80, interactions=1500, seed=5))
    b = make_synthetic(SyntheticConfig(users=100, items=80, interactions=1500, seed=6))
    assert not a.equals(b)


def test_synthetic_sizes_and_no_duplicates():
    cfg = SyntheticConfig(users=100, items=80, interactions=1500, seed=1)
    df = make_synthetic(cfg)
    assert len(df) == 1500
    assert df["user"].nunique() == 100
    assert not df.duplicated(["user", "item"]).any()
    assert df.groupby("user").size().min() >= cfg.min_per_user


def test_synthetic_popularity_is_skewed():
    df = make_synthetic(SyntheticConfig(users=600, items=300, interactions=30000, seed=2))
    counts = df["item"].value_counts()
    assert counts.iloc[:30].sum() > 2.0 * counts.iloc[-30:].sum() * 1.0  # head items much more popular


def test_synthetic_rejects_impossible_sizes():
    with pytest.raises(RankdistillError, match="interactions"):
        SyntheticConfig(users=100, items=80, interactions=10)


def test_vocab_roundtrip(tmp_path):
    vocab, codes = IdVocab.fit(pd.Series(["b", "a", "b", "c"]))
    assert list(codes) == [0, 1, 0, 2]
    assert list(vocab.decode(np.array([2, 0]))) == ["c", "b"]
    assert list(vocab.encode(["a", "zzz"])) == [1, -1]
    vocab.save(tmp_path / "v.parquet")
    assert IdVocab.load(tmp_path / "v.parquet") == vocab


def _frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def test_temporal_leave_one_out_last_is_test_second_last_is_valid():
    data = Interactions.from_frame(_frame([
        ("u", "a", 3), ("u", "b", 1), ("u", "c", 2), ("u", "d", 4),
        ("v", "a", 1), ("v", "b", 2), ("v", "c", 3),
        ("w", "d", 1), ("w", "c", 2), ("w", "b", 3),  # so that d and c are also training items
    ]), "t")
    s = temporal_leave_one_out(data)
    item = lambda i: data.item_vocab.decode(np.array([i]))[0]  # noqa: E731
    u, v = data.user_vocab.encode(["u", "v"])
    test_u = s.test.indices[s.test.indptr[u]:s.test.indptr[u + 1]].tolist()
    valid_u = s.valid.indices[s.valid.indptr[u]:s.valid.indptr[u + 1]].tolist()
    assert [item(i) for i in test_u] == ["d"]
    assert [item(i) for i in valid_u] == ["a"]
    assert s.train.lengths().tolist()[u] == 2 and s.train.lengths().tolist()[v] == 1


def test_temporal_ties_broken_by_row_order():
    # all three at the same time: the later row is the later interaction
    data = Interactions.from_frame(_frame([("u", "a", 5), ("u", "b", 5), ("u", "c", 5),
                                           ("w", "b", 1), ("w", "c", 2), ("w", "a", 3), ("w", "x", 4)]), "t")
    s = temporal_leave_one_out(data)
    u = data.user_vocab.encode(["u"])[0]
    assert data.item_vocab.decode(s.test.indices[s.test.indptr[u]:s.test.indptr[u + 1]].numpy()).tolist() == ["c"]
    assert data.item_vocab.decode(s.valid.indices[s.valid.indptr[u]:s.valid.indptr[u + 1]].numpy()).tolist() == ["b"]


def test_temporal_split_needs_three_interactions_per_user():
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("v", "a", 1), ("v", "b", 2), ("v", "c", 3)]), "t")
    with pytest.raises(RankdistillError, match=r"1 of 2 users .*--min-user-interactions 3"):
        temporal_leave_one_out(data)


def test_duplicates_collapsed_to_earliest_and_counted():
    data = Interactions.from_frame(_frame([("u", "a", 9), ("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]), "t")
    assert len(data) == 3
    assert data.dropped == {"duplicates": 1}
    assert sorted(data.timestamps.tolist()) == [1, 2, 3]


def test_test_items_unseen_in_training_are_dropped_and_counted():
    data = Interactions.from_frame(_frame([
        ("u", "a", 1), ("u", "b", 2), ("u", "new", 3),  # train a, valid b, test new (never trained on)
        ("v", "a", 1), ("v", "b", 2), ("v", "c", 3),  # train a, valid b, test c (x trains on c)
        ("w", "b", 1), ("w", "a", 2), ("w", "d", 3),  # train b, valid a, test d (never trained on)
        ("x", "c", 1), ("x", "a", 2), ("x", "b", 3),  # train c, valid a, test b
    ]), "t")
    s = temporal_leave_one_out(data)
    assert s.dropped == {"test_items_unseen_in_train": 2}  # "new" and "d"
    assert s.test.nnz == 2 and s.valid.nnz == 4


def test_given_split_keeps_test_and_carves_one_validation_item():
    train = [(u, i, False) for u in range(4) for i in range(5)]  # every item a training item of several users
    test = [(0, 5, True), (1, 0, True)] + [(u, 5, False) for u in (2, 3)]
    frame = pd.DataFrame(train + test, columns=["user", "item", "is_test"])
    frame = frame[~((frame.user == 1) & (frame.item == 0) & ~frame.is_test)]
    data = Interactions.from_frame(frame, "g")
    s = make_split(data, "given", seed=0)
    assert s.kind == "given"
    assert s.valid.lengths().tolist() == [1, 1, 1, 1]
    assert s.test.lengths().tolist() == [1, 1, 0, 0]
    assert s.train.nnz + s.valid.nnz + s.test.nnz == len(data)


# -- implicit feedback: rating threshold, duplicates, k-core ------------------------------------------------

def test_min_rating_keeps_ratings_at_or_above_and_counts_the_rest():
    from rankdistill.data.filters import to_implicit

    frame = pd.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 2], "rating": [5.0, 3.5, 4.0, 1.0]})
    kept, dropped = to_implicit(frame, min_rating=4)
    assert kept[["user", "item"]].values.tolist() == [[1, 1], [2, 1]] and "rating" not in kept
    assert dropped == {"below_min_rating": 2}


def test_rating_threshold_applies_before_duplicates_collapse():
    from rankdistill.data.filters import to_implicit

    # (1, 1) rated 2 then 5: the low rating is dropped by the threshold, the high one is kept, no duplicate
    frame = pd.DataFrame({"user": [1, 1, 1], "item": [1, 1, 2], "timestamp": [1, 2, 3], "rating": [2.0, 5.0, 5.0]})
    kept, dropped = to_implicit(frame, min_rating=4)
    assert kept["timestamp"].tolist() == [2, 3] and dropped == {"below_min_rating": 1}


def test_k_core_is_iterated_until_stable_and_counted():
    from rankdistill.data.filters import k_core

    # pass 1: u4 (1 interaction), items c and d (1 each) go; pass 2: u3 is left with one interaction and goes
    frame = pd.DataFrame([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c"),
                          ("u4", "d")], columns=["user", "item"])
    kept, dropped = k_core(frame, min_user=2, min_item=2)
    assert kept.values.tolist() == [["u1", "a"], ["u1", "b"], ["u2", "a"], ["u2", "b"]]
    assert dropped == {"users_removed_by_k_core": 2, "items_removed_by_k_core": 2,
                       "interactions_removed_by_k_core": 3}


def test_filter_counts_reach_the_interactions(tmp_path):
    from rankdistill.data.load import load_interactions

    path = tmp_path / "r.csv"
    rows = ["user,item,rating,timestamp"] + [f"{u},{i},5,{u * 10 + i}" for u in range(4) for i in range(3)]
    rows += ["0,0,5,99", "3,9,1,100", "9,9,5,101"]  # a duplicate, a low rating, a user with one interaction
    path.write_text("\n".join(rows) + "\n")
    data = load_interactions(path, min_rating=4, min_user_interactions=2)
    assert data.dropped == {"below_min_rating": 1, "duplicates": 1, "users_removed_by_k_core": 1,
                            "items_removed_by_k_core": 1, "interactions_removed_by_k_core": 1}
    assert len(data) == 12 and data.n_users == 4
    assert data.source["min_rating"] == 4 and data.source["path"] == str(path)
