"""A teacher on the student's vocabularies by raw ID (TeacherAlignment, ReindexedRanker), and the leakage guard
of distill by raw (user, item) pairs (held_out_overlap, the teacher's saved training pairs)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import MatrixRanker, QUICK_TRAIN as QUICK
from rankdistill.cli import main
from rankdistill.data.interactions import Interactions
from rankdistill.data.leakage import held_out_overlap
from rankdistill.data.split import make_split
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.models.base import DotProductRanker
from rankdistill.models.reindexed import reindexed
from rankdistill.train.alignment import TeacherAlignment
from rankdistill.train.knowledge import TeacherKnowledge

KD = ["--dim", "4", "--kd", "listkl", "--kd-topk", "20", "--kd-samples", "4"]


# -- alignment by raw ID --------------------------------------------------------------------------------

def test_alignment_maps_student_rows_to_the_teachers_rows_of_the_same_raw_id():
    a = TeacherAlignment.by_raw_id(IdVocab(["u1", "u2", "u3"]), IdVocab([10, 20]),
                                   IdVocab(["u3", "u9", "u1"]), IdVocab([20, 10, 30]))
    assert a.users.tolist() == [2, -1, 0] and a.items.tolist() == [1, 0, -1]
    assert (a.missing_users, a.missing_items, a.complete, a.is_identity) == (1, 1, False, False)
    assert a.record() == {"users_missing": 1, "items_missing": 1, "teacher_users": 3, "teacher_items": 2,
                          "same_vocabularies": False}


def test_alignment_of_equal_vocabularies_is_the_identity_and_keeps_the_teacher():
    teacher = MatrixRanker(torch.eye(2), torch.eye(2))
    a = TeacherAlignment.by_raw_id(IdVocab([1, 2]), IdVocab(["x", "y"]), IdVocab([1, 2]), IdVocab(["x", "y"]))
    assert a.is_identity and a.ranker(teacher) is teacher


def test_alignment_with_a_teacher_holding_more_ids_is_complete_but_not_the_identity():
    teacher = MatrixRanker(torch.eye(3), torch.eye(3))
    a = TeacherAlignment.by_raw_id(IdVocab([1, 2, 3]), IdVocab([7, 8, 9]), IdVocab([3, 1]), IdVocab([8]))
    assert a.complete and not a.is_identity and a.users.tolist() == [2, 0] and a.items.tolist() == [1]
    view = a.ranker(teacher)
    assert isinstance(view, DotProductRanker) and (view.n_users, view.n_items) == (2, 1)


def test_alignment_matches_integer_and_text_ids_by_their_text():
    a = TeacherAlignment.by_raw_id(IdVocab([7, 8]), IdVocab([1]), IdVocab(["8", "7"]), IdVocab(["1"]))
    assert a.users.tolist() == [1, 0] and a.complete


def test_alignment_refuses_a_teacher_that_shares_no_item_with_the_data():
    a = TeacherAlignment.by_raw_id(IdVocab([1]), IdVocab(["a", "b"]), IdVocab([1]), IdVocab(["c"]))
    with pytest.raises(RankdistillError, match="none of the data's 1 items"):
        a.check("T")


def test_alignment_refuses_a_teacher_that_shares_no_user_with_the_data():
    a = TeacherAlignment.by_raw_id(IdVocab([1]), IdVocab(["a"]), IdVocab([2, 3]), IdVocab(["a"]))
    with pytest.raises(RankdistillError, match="none of the data's 2 users"):
        a.check("T")


# -- the teacher through the student's rows -------------------------------------------------------------

def _teacher():
    g = torch.Generator().manual_seed(0)
    return MatrixRanker(torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g))


def test_reindexed_dot_product_teacher_scores_by_the_teachers_rows():
    teacher = _teacher()
    users, items = torch.tensor([3, 0, 2]), torch.tensor([4, 1, 1, 0])
    view = reindexed(teacher, users, items)
    assert isinstance(view, DotProductRanker) and (view.n_users, view.n_items) == (3, 4)
    expected = teacher.score_all(users)[:, items]
    torch.testing.assert_close(view.score_all(torch.arange(3)), expected)
    torch.testing.assert_close(view.score(torch.tensor([1, 2]), torch.tensor([[0, 3], [2, 2]])),
                               torch.stack([expected[1, [0, 3]], expected[2, [2, 2]]]))


def test_reindexed_teacher_scores_ids_it_lacks_minus_infinity():
    teacher = _teacher()
    view = reindexed(teacher, torch.tensor([1, -1]), torch.tensor([-1, 2, 0]))
    assert not isinstance(view, DotProductRanker)  # a missing pair has no vector product
    s = view.score_all(torch.tensor([0, 1]))
    full = teacher.score_all(torch.tensor([1]))[0]
    assert s[0, 0] == float("-inf")
    torch.testing.assert_close(s[0, 1:], full[[2, 0]])
    assert torch.isinf(s[1]).all()


def test_reindexed_teacher_forward_masks_own_and_shared_candidates_it_lacks():
    from rankdistill.config import ModelConfig
    from rankdistill.models.factory import build_model

    teacher = build_model(ModelConfig(embedding_dim=4), 4, 5, seed=0)
    view = reindexed(teacher, torch.tensor([1, -1]), torch.tensor([-1, 2, 0]))
    f = view(torch.tensor([0, 1]), torch.tensor([[1, 0], [1, 2]]), torch.tensor([2, 0]))
    assert torch.equal(torch.isfinite(f.scores), torch.tensor([[True, False, True, False], [False] * 4]))
    direct = teacher(torch.tensor([1]), torch.tensor([[2]]), torch.tensor([0])).scores
    torch.testing.assert_close(f.scores[0, [0, 2]], direct[0])


def test_knowledge_through_a_reindexed_teacher_is_the_teachers_knowledge_by_raw_id(tiny_split):
    """The same ids in another order: the student's top-K lists are the teacher's, relabelled."""
    from helpers import tiny_student

    teacher = tiny_student(tiny_split, seed=5)
    k = 10
    direct = TeacherKnowledge.compute(teacher, tiny_split, k)
    pu, pi = torch.randperm(tiny_split.n_users), torch.randperm(tiny_split.n_items)  # student row -> teacher row
    inv_u, inv_i = torch.argsort(pu), torch.argsort(pi)  # teacher row -> student row
    from rankdistill.data.csr import Csr

    rows, cols = tiny_split.train.rows(), tiny_split.train.indices
    train = Csr.from_pairs(inv_u[rows].numpy(), inv_i[cols].numpy(), tiny_split.n_users, tiny_split.n_items)
    from rankdistill.evaluation.evaluator import rank_all

    ranked = rank_all(reindexed(teacher, pu, pi), train, k)
    assert torch.equal(pi[ranked.items], direct.items[pu])
    torch.testing.assert_close(ranked.scores, direct.scores[pu])


# -- leakage by raw (user, item) pairs ----------------------------------------------------------------

def _split():
    """Users 1, 2, 3 each see items 10, 11, 12 in a rotated order: per user one training, one validation and
    one test item (rows: users 1, 2, 3 -> 0, 1, 2; items 10, 11, 12 -> 0, 1, 2)."""
    order = {1: [10, 11, 12], 2: [11, 12, 10], 3: [12, 10, 11]}
    frame = pd.DataFrame([(u, i, t) for u, items in order.items() for t, i in enumerate(items)],
                         columns=["user", "item", "timestamp"])
    return make_split(Interactions.from_frame(frame, "t"))


def test_held_out_overlap_counts_teacher_pairs_among_validation_and_test():
    split = _split()  # held out: (0,1) (0,2) (1,2) (1,0) (2,0) (2,1); trained: (0,0) (1,1) (2,2)
    users, items = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 0, 1, 2])
    assert held_out_overlap(users, items, split) == (3, 6)


def test_held_out_overlap_ignores_pairs_the_student_does_not_have():
    split = _split()
    assert held_out_overlap(np.array([-1, 0, 0]), np.array([1, -1, 0]), split) == (0, 6)


def test_held_out_overlap_ignores_a_held_out_pair_the_student_also_trains_on():
    """A given split whose test file repeats a training pair: the teacher's copy of it is no leak."""
    from rankdistill.data.csr import Csr
    from rankdistill.data.split import Split

    pairs = lambda u, i: Csr.from_pairs(np.array(u, np.int64), np.array(i, np.int64), 1, 3)  # noqa: E731
    split = Split("given", 1, 3, pairs([0, 0], [0, 1]), pairs([], []), pairs([0, 0], [1, 2]))
    assert held_out_overlap(np.array([0, 0]), np.array([0, 1]), split) == (0, 1)


# -- the command ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logs(tmp_path_factory, tiny_frame):
    """A: the log less each user's last two rows; B: the whole log (A plus those rows); T: a teacher on B."""
    d = tmp_path_factory.mktemp("align")
    frame = tiny_frame.sort_values(["timestamp", "user", "item"], kind="stable")
    last_two = frame.groupby("user").cumcount(ascending=False) < 2
    frame[~last_two].to_csv(d / "a.csv", index=False)
    frame.to_csv(d / "b.csv", index=False)
    assert main(["train", "--data", str(d / "b.csv"), "--out", str(d / "t"), "--dim", "8", *QUICK]) == 0
    return d


def test_distill_refuses_a_teacher_trained_on_the_students_held_out_rows(logs, tmp_path, capsys):
    """The teacher's training set (B less its last two rows per user) is A: every student held-out row."""
    args = ["distill", "--teacher", str(logs / "t"), "--data", str(logs / "a.csv"), "--out", str(tmp_path / "s")]
    assert main([*args, *KD, *QUICK]) == 2
    err = capsys.readouterr().err
    assert "trained on 600 of the student's 600 validation and test interactions" in err
    assert err.count("\n") == 1 and not (tmp_path / "s").exists()


def test_distill_accepts_the_teachers_data_with_rows_in_another_order(logs, tmp_path, capsys):
    shuffled = pd.read_csv(logs / "b.csv").sample(frac=1.0, random_state=0)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    out = tmp_path / "s"
    assert main(["distill", "--teacher", str(logs / "t"), "--data", str(tmp_path / "shuffled.csv"), "--out",
                 str(out), *KD, *QUICK]) == 0
    record = json.loads((out / "config.json").read_text())["teacher"]
    assert record["alignment"]["users_missing"] == 0 and record["alignment"]["items_missing"] == 0
    assert record["alignment"]["same_vocabularies"] is False and record["mode"] == "online"


def test_distill_counts_the_ids_the_teacher_lacks_and_distils_from_its_top_k(logs, tmp_path, capsys):
    """The data holds 20 users and one item the teacher never saw: counted, and the student learns from the
    teacher's top-K of the users it knows (cached mode); no teacher training pair is held out by the student."""
    b = pd.read_csv(logs / "b.csv")
    extra = b[b.user < 20].assign(user=lambda f: f.user + 10_000)  # 20 new users
    item = b.item.max() + 1
    extra = pd.concat([extra, extra.iloc[:5].assign(item=item)])  # one new item
    pd.concat([b, extra]).to_csv(tmp_path / "more.csv", index=False)
    out = tmp_path / "s"
    assert main(["distill", "--teacher", str(logs / "t"), "--data", str(tmp_path / "more.csv"), "--out", str(out),
                 *KD, *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "the teacher lacks 20 of the data's 320 users and 1 of its 151 items" in printed
    record = json.loads((out / "config.json").read_text())["teacher"]
    assert record["alignment"]["users_missing"] == 20 and record["alignment"]["items_missing"] == 1
    assert record["mode"] == "cached"


def test_distill_refuses_an_online_loss_when_the_teacher_lacks_ids(logs, tmp_path, capsys):
    b = pd.read_csv(logs / "b.csv")
    pd.concat([b, b[b.user < 3].assign(user=lambda f: f.user + 10_000)]).to_csv(tmp_path / "more.csv", index=False)
    assert main(["distill", "--teacher", str(logs / "t"), "--data", str(tmp_path / "more.csv"), "--out",
                 str(tmp_path / "s"), "--dim", "4", "--kd", "hint", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "--kd hint needs the teacher's representations" in err and "lacks 3 of the data's 303 users" in err


def test_distill_refuses_a_teacher_that_shares_no_item_with_the_data(logs, tmp_path, capsys):
    b = pd.read_csv(logs / "b.csv")
    b.assign(item="new" + b.item.astype(str)).to_csv(tmp_path / "other.csv", index=False)
    assert main(["distill", "--teacher", str(logs / "t"), "--data", str(tmp_path / "other.csv"), "--out",
                 str(tmp_path / "s"), *KD, *QUICK]) == 2
    assert "cannot score any of them" in capsys.readouterr().err
