"""Distillation from any teacher's scores: TeacherKnowledge.from_frame, read_scores, and
``rankdistill distill --teacher-scores FILE --data DATA``."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import rankdistill
from rankdistill.cli import main
from rankdistill.data.csr import Csr
from rankdistill.data.scores import read_scores
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.train.knowledge import TeacherKnowledge
from helpers import QUICK_TRAIN as QUICK, string_id_csv

KD = ["--dim", "4", "--kd", "listkl", "--kd-topk", "20", "--kd-samples", "4"]
USERS, ITEMS = IdVocab(["ann", "bob", "cid"]), IdVocab([10, 20, 30, 40])


def _frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "score"])


# -- from_frame -----------------------------------------------------------------------------------------

def test_from_frame_sorts_each_users_items_by_score_best_first():
    kn = TeacherKnowledge.from_frame(_frame([("bob", 10, 0.5), ("ann", 30, 2.0), ("bob", 40, 3.0),
                                             ("ann", 10, 1.0), ("bob", 20, 1.5)]), (USERS, ITEMS))
    assert kn.k == 3 and (kn.n_users, kn.n_items) == (3, 4)
    assert kn.items[1].tolist() == [3, 1, 0] and kn.scores[1].tolist() == [3.0, 1.5, 0.5]
    assert kn.items[0, :2].tolist() == [2, 0] and kn.valid[0].tolist() == [True, True, False]
    assert not kn.valid[2].any()  # cid has no scores: an empty list
    assert kn.dropped == {"unknown_user": 0, "unknown_item": 0, "unknown_user_ids": 0, "unknown_item_ids": 0}


def test_from_frame_breaks_ties_by_the_lower_item_row():
    kn = TeacherKnowledge.from_frame(_frame([("ann", 40, 1.0), ("ann", 20, 1.0), ("ann", 30, 1.0)]), (USERS, ITEMS))
    assert kn.items[0].tolist() == [1, 2, 3]


def test_from_frame_counts_rows_and_ids_not_in_the_vocabularies():
    frame = _frame([("ann", 10, 1.0), ("zed", 10, 1.0), ("zed", 99, 1.0), ("ann", 99, 1.0), ("bob", 98, 1.0)])
    kn = TeacherKnowledge.from_frame(frame, (USERS, ITEMS))
    assert kn.dropped == {"unknown_user": 2, "unknown_item": 2, "unknown_user_ids": 1, "unknown_item_ids": 2}
    assert int(kn.valid.sum()) == 1


def test_from_frame_leaves_out_the_users_training_items_and_counts_them():
    train = Csr.from_pairs(np.array([0, 0]), np.array([0, 2]), 3, 4)  # ann trained on items 10 and 30
    kn = TeacherKnowledge.from_frame(_frame([("ann", 10, 9.0), ("ann", 20, 1.0), ("ann", 30, 5.0),
                                             ("bob", 10, 2.0)]), (USERS, ITEMS), exclude=train)
    assert kn.dropped["in_training"] == 2 and kn.items[0, 0] == 1 and kn.items[1, 0] == 0
    assert kn.exclude is train and kn.fingerprint is not None


def test_from_frame_keeps_the_first_k():
    kn = TeacherKnowledge.from_frame(_frame([("ann", i, float(i)) for i in (10, 20, 30, 40)]), (USERS, ITEMS), k=2)
    assert kn.k == 2 and kn.items[0].tolist() == [3, 2]


def test_from_frame_matches_integer_ids_given_as_text():
    kn = TeacherKnowledge.from_frame(_frame([("ann", "20", 1.0)]), (USERS, ITEMS))
    assert kn.items[0, 0] == 1 and kn.dropped["unknown_item"] == 0


def test_from_frame_refuses_a_pair_listed_twice():
    with pytest.raises(RankdistillError, match="user 'ann', item 20 2 times"):
        TeacherKnowledge.from_frame(_frame([("ann", 20, 1.0), ("ann", 20, 2.0)]), (USERS, ITEMS))


def test_from_frame_refuses_a_score_that_is_not_a_finite_number():
    with pytest.raises(RankdistillError, match="2 score.s. are not finite numbers .first at data row 2: 'x'"):
        TeacherKnowledge.from_frame(_frame([("ann", 20, 1.0), ("ann", 30, "x"), ("bob", 10, float("inf"))]),
                                    (USERS, ITEMS))


def test_from_frame_refuses_a_frame_without_the_score_column():
    with pytest.raises(RankdistillError, match="lack the column.s. score"):
        TeacherKnowledge.from_frame(pd.DataFrame({"user": ["ann"], "item": [10]}), (USERS, ITEMS))


def test_from_frame_refuses_when_no_row_matches_the_data():
    with pytest.raises(RankdistillError, match="none of the 1 teacher scores is left"):
        TeacherKnowledge.from_frame(_frame([("zed", 10, 1.0)]), (USERS, ITEMS))


def test_from_frame_takes_the_data_as_the_vocabularies(tiny_split, tiny_frame):
    from rankdistill.data.interactions import Interactions

    data = Interactions.from_frame(tiny_frame, "tiny")
    kn = TeacherKnowledge.from_frame(_frame([(data.user_vocab.ids[5], data.item_vocab.ids[7], 1.0)]), data)
    assert (kn.n_users, kn.n_items) == (data.n_users, data.n_items) and kn.items[5, 0] == 7


def test_computed_knowledge_written_as_scores_comes_back_unchanged(tiny_split):
    from helpers import tiny_student

    computed = TeacherKnowledge.compute(tiny_student(tiny_split, seed=4), tiny_split, 12)
    valid = computed.valid.numpy()
    users, _ = np.nonzero(valid)
    frame = _frame({"user": users, "item": computed.items.numpy()[valid], "score": computed.scores.numpy()[valid]})
    vocab = (IdVocab(np.arange(tiny_split.n_users)), IdVocab(np.arange(tiny_split.n_items)))
    back = TeacherKnowledge.from_frame(frame.sample(frac=1.0, random_state=0), vocab, exclude=tiny_split.train)
    assert back.dropped["in_training"] == 0 and back.fingerprint == computed.fingerprint
    for name in ("items", "scores", "valid"):
        assert torch.equal(getattr(back, name), getattr(computed, name)), name


# -- the file -------------------------------------------------------------------------------------------

def test_read_scores_keeps_ids_as_the_data_reader_does(tmp_path):
    (tmp_path / "s.csv").write_text("user,item,score,extra\nu1,007,0.5,x\n2,8,1,y\n")
    frame = read_scores(tmp_path / "s.csv")
    assert list(frame.columns) == ["user", "item", "score"]
    assert frame["user"].tolist() == ["u1", "2"] and frame["item"].tolist() == ["007", "8"]


def test_read_scores_refuses_an_unknown_extension(tmp_path):
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(RankdistillError, match="must end in .csv, .tsv or .parquet"):
        read_scores(tmp_path / "s.json")


def test_read_scores_refuses_a_file_without_scores(tmp_path):
    (tmp_path / "s.csv").write_text("user,item\n1,2\n")
    with pytest.raises(RankdistillError, match="lack the column.s. score"):
        read_scores(tmp_path / "s.csv")


# -- the command ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_frame):
    """A log with string IDs, a teacher on it, and its cached top-20 written as a scores file in raw IDs."""
    d = tmp_path_factory.mktemp("scores")
    string_id_csv(tiny_frame, d / "log.csv")
    assert main(["train", "--data", str(d / "log.csv"), "--out", str(d / "t"), "--dim", "8", *QUICK]) == 0
    saved = rankdistill.load(d / "t")
    _, split = saved.load_split()
    kn = TeacherKnowledge.compute(saved.model, split, 20)
    kn.save(d / "knowledge.parquet")
    valid = kn.valid.numpy()
    users, _ = np.nonzero(valid)
    scores = pd.DataFrame({"user": saved.user_vocab.decode(users),
                           "item": saved.item_vocab.decode(kn.items.numpy()[valid]), "score": kn.scores.numpy()[valid]})
    scores.sample(frac=1.0, random_state=1).to_csv(d / "scores.csv", index=False)
    return d


def _weights(path):
    return rankdistill.load(path).model.state_dict()


def test_distill_from_teacher_scores_equals_distilling_from_the_teachers_cached_knowledge(teacher, tmp_path):
    cached, scored = tmp_path / "cached", tmp_path / "scored"
    assert main(["distill", "--teacher", str(teacher / "t"), "--knowledge", str(teacher / "knowledge.parquet"),
                 "--cached-only", "--out", str(cached), *KD, *QUICK]) == 0
    assert main(["distill", "--teacher-scores", str(teacher / "scores.csv"), "--data", str(teacher / "log.csv"),
                 "--out", str(scored), *KD, *QUICK]) == 0
    a, b = _weights(cached), _weights(scored)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cached / "metrics.json").read_text()) == json.loads((scored / "metrics.json").read_text())


def test_distill_from_teacher_scores_counts_the_ids_the_data_lacks(teacher, tmp_path, capsys):
    scores = pd.read_csv(teacher / "scores.csv")
    extra = pd.DataFrame({"user": ["nobody", "nobody", "u1"], "item": ["i1", "i2", "nothing"], "score": [1.0] * 3})
    pd.concat([scores, extra]).to_parquet(tmp_path / "scores.parquet", engine="fastparquet", index=False)
    out = tmp_path / "s"
    assert main(["distill", "--teacher-scores", str(tmp_path / "scores.parquet"), "--data", str(teacher / "log.csv"),
                 "--out", str(out), *KD, *QUICK]) == 0
    record = json.loads((out / "config.json").read_text())["teacher_scores"]
    assert record["dropped"] == {"unknown_user": 2, "unknown_item": 1, "unknown_user_ids": 1, "unknown_item_ids": 1,
                                 "in_training": 0}
    assert record["rows"] == len(scores) + 3 and record["k"] == 20 and record["users"] == 300
    assert "left out: 2 unknown_user, 1 unknown_item, 1 unknown_user_ids, 1 unknown_item_ids" in capsys.readouterr().out


def test_distill_refuses_to_resume_from_other_teacher_scores(teacher, tmp_path, capsys):
    scores = pd.read_csv(teacher / "scores.csv")
    scores.assign(score=-scores.score).to_csv(tmp_path / "reversed.csv", index=False)
    args = ["distill", "--data", str(teacher / "log.csv"), "--out", str(tmp_path / "s"), *KD, *QUICK]
    assert main([*args, "--teacher-scores", str(teacher / "scores.csv")]) == 0
    assert main([*args, "--teacher-scores", str(tmp_path / "reversed.csv")]) == 2
    assert "teacher.knowledge" in capsys.readouterr().err


def test_distill_from_teacher_scores_refuses_a_loss_that_needs_the_teachers_weights(teacher, tmp_path, capsys):
    assert main(["distill", "--teacher-scores", str(teacher / "scores.csv"), "--data", str(teacher / "log.csv"),
                 "--out", str(tmp_path / "s"), "--dim", "4", "--kd", "listkl+de", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "--kd de needs the teacher's representations" in err and "not its weights" in err
    assert not (tmp_path / "s").exists()


def test_distill_from_teacher_scores_needs_the_data(teacher, tmp_path, capsys):
    assert main(["distill", "--teacher-scores", str(teacher / "scores.csv"), "--out", str(tmp_path / "s"),
                 *KD, *QUICK]) == 2
    assert "--teacher-scores needs the student's data" in capsys.readouterr().err


def test_distill_takes_a_teacher_or_teacher_scores_not_both(teacher, tmp_path, capsys):
    assert main(["distill", "--teacher", str(teacher / "t"), "--teacher-scores", str(teacher / "scores.csv"),
                 "--out", str(tmp_path / "s"), *QUICK]) == 2
    assert "--teacher MODEL_DIR or --teacher-scores FILE (one of the two" in capsys.readouterr().err
    assert main(["distill", "--out", str(tmp_path / "s"), *QUICK]) == 2
    assert "--teacher MODEL_DIR or --teacher-scores FILE (one of the two" in capsys.readouterr().err
