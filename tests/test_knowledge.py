"""Teacher knowledge: the top-K per user computed once, written to parquet and read back."""

from dataclasses import replace

import fastparquet
import pytest
import torch

from rankdistill.config import ModelConfig
from rankdistill.data.csr import Csr
from rankdistill.errors import RankdistillError
from rankdistill.models.factory import build_model
from rankdistill.train.knowledge import TeacherKnowledge, rank_with_positions


@pytest.fixture(scope="module")
def teacher(tiny_split):
    return build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)


def _masked_scores(model, split):
    """Every user's scores of every item, training items at -inf (the slow, obvious reference)."""
    with torch.no_grad():
        scores = model.score_all(torch.arange(split.n_users)).clone()
    rows, cols = split.train.rows(), split.train.indices
    scores[rows, cols] = float("-inf")
    return scores


def test_compute_matches_full_ranking_without_training_items(teacher, tiny_split):
    kn = TeacherKnowledge.compute(teacher, tiny_split, k=10)
    scores = _masked_scores(teacher, tiny_split)
    expected_scores, expected_items = scores.topk(10, dim=1)
    assert kn.items.shape == (tiny_split.n_users, 10) and kn.n_items == tiny_split.n_items
    assert torch.equal(kn.items, expected_items)
    assert torch.allclose(kn.scores, expected_scores, atol=1e-5)
    assert kn.valid.all()
    train = set(zip(tiny_split.train.rows().tolist(), tiny_split.train.indices.tolist()))
    assert not any((u, i) in train for u in range(20) for i in kn.items[u].tolist())


def test_compute_in_small_chunks_equals_one_chunk(teacher, tiny_split):
    a = TeacherKnowledge.compute(teacher, tiny_split, k=10)
    b = TeacherKnowledge.compute(teacher, tiny_split, k=10, memory_budget=8 * 150 * 7)  # 7 users per chunk
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)


def test_short_lists_are_padded_and_marked_invalid(teacher, tiny_split):
    k = tiny_split.n_items - 5  # more than most users have left after their training items
    kn = TeacherKnowledge.compute(teacher, tiny_split, k=k)
    left = tiny_split.n_items - tiny_split.train.lengths()
    assert torch.equal(kn.valid.sum(1), left.clamp_max(k))
    assert (kn.items[~kn.valid] == 0).all() and (kn.scores[~kn.valid] == 0).all()
    assert torch.isfinite(kn.scores).all()


def test_save_load_round_trip(teacher, tiny_split, tmp_path):
    kn = TeacherKnowledge.compute(teacher, tiny_split, k=tiny_split.n_items - 5)
    path = kn.save(tmp_path / "knowledge.parquet")
    back = TeacherKnowledge.load(path, tiny_split)
    assert torch.equal(back.items, kn.items) and torch.equal(back.scores, kn.scores)
    assert torch.equal(back.valid, kn.valid)
    assert back.n_items == kn.n_items and back.exclude is tiny_split.train
    assert len(fastparquet.ParquetFile(str(path)).to_pandas()) == int(kn.valid.sum())  # padding is not written
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed


def test_load_without_split_has_no_exclusion(teacher, tiny_split, tmp_path):
    path = TeacherKnowledge.compute(teacher, tiny_split, k=5).save(tmp_path / "k.parquet")
    back = TeacherKnowledge.load(path)
    assert back.exclude is None and back.n_users == tiny_split.n_users


def test_load_refuses_other_sizes_naming_both(teacher, tiny_split, tmp_path):
    path = TeacherKnowledge.compute(teacher, tiny_split, k=5).save(tmp_path / "k.parquet")
    with pytest.raises(RankdistillError, match="300 users and 150 items, but this data has 300 users and 151 items"):
        TeacherKnowledge.load(path, n_users=300, n_items=151)
    with pytest.raises(RankdistillError, match="but this data has 299 users"):
        TeacherKnowledge.load(path, n_users=299)


def test_load_refuses_other_training_data(teacher, tiny_split, tmp_path):
    path = TeacherKnowledge.compute(teacher, tiny_split, k=5).save(tmp_path / "k.parquet")
    train = tiny_split.train
    other = Csr(train.indptr, (train.indices + 1) % train.n_cols, train.n_cols)
    with pytest.raises(RankdistillError, match="other training interactions"):
        TeacherKnowledge.load(path, replace(tiny_split, train=other))


def test_load_refuses_a_parquet_file_without_knowledge_metadata(tiny_frame, tmp_path):
    path = tmp_path / "log.parquet"
    tiny_frame.to_parquet(path, engine="fastparquet", index=False)
    with pytest.raises(RankdistillError, match="not a teacher-knowledge file"):
        TeacherKnowledge.load(path)


def test_load_refuses_a_missing_file(tmp_path):
    with pytest.raises(RankdistillError, match="does not exist"):
        TeacherKnowledge.load(tmp_path / "nope.parquet")


def test_load_refuses_entries_out_of_range(tmp_path):
    kn = TeacherKnowledge(torch.tensor([[3, 1]]), torch.tensor([[0.5, 0.2]]), n_items=4)
    path = kn.save(tmp_path / "k.parquet")
    frame = fastparquet.ParquetFile(str(path))
    meta = frame.key_value_metadata
    df = frame.to_pandas()
    df.loc[0, "item"] = 9  # beyond the 4 items
    fastparquet.write(str(path), df, custom_metadata={k: v for k, v in meta.items() if k != "pandas"})
    with pytest.raises(RankdistillError, match="row 0"):
        TeacherKnowledge.load(path)


def test_load_or_compute_writes_then_reuses_without_the_teacher(teacher, tiny_split, tmp_path):
    path = tmp_path / "k.parquet"
    first = TeacherKnowledge.load_or_compute(path, tiny_split, k=8, teacher=teacher)
    assert path.exists()
    again = TeacherKnowledge.load_or_compute(path, tiny_split, k=8)  # no teacher: the file alone
    assert torch.equal(again.items, first.items)
    shorter = TeacherKnowledge.load_or_compute(path, tiny_split, k=3)
    assert torch.equal(shorter.items, first.items[:, :3])
    with pytest.raises(RankdistillError, match="holds the top-8 per user, fewer than the 20 asked for"):
        TeacherKnowledge.load_or_compute(path, tiny_split, k=20)


def test_load_or_compute_without_file_or_teacher_is_an_error(tiny_split, tmp_path):
    with pytest.raises(RankdistillError, match="no teacher knowledge at"):
        TeacherKnowledge.load_or_compute(tmp_path / "k.parquet", tiny_split, k=5)


def test_invalid_entries_inferred_from_non_finite_scores():
    kn = TeacherKnowledge(torch.tensor([[4, 7, 2]]), torch.tensor([[1.0, float("-inf"), 0.5]]), n_items=8)
    assert kn.valid.tolist() == [[True, False, True]]
    assert kn.items.tolist() == [[4, 0, 2]] and kn.scores.tolist() == [[1.0, 0.0, 0.5]]


def test_rank_with_positions_matches_brute_force(teacher, tiny_split):
    kn = TeacherKnowledge.compute(teacher, tiny_split, k=10)
    student = build_model(ModelConfig(embedding_dim=4), tiny_split.n_users, tiny_split.n_items, seed=2)
    top, top_valid, ranks, positions = rank_with_positions(student, tiny_split.train, 12, kn.items, kn.valid,
                                                           memory_budget=8 * 150 * 50)
    scores = _masked_scores(student, tiny_split)
    assert torch.equal(top, scores.topk(12, dim=1).indices) and top_valid.all()
    item_scores = scores.gather(1, kn.items)
    assert torch.equal(ranks, (scores[:, None, :] > item_scores[:, :, None]).sum(-1))  # strictly higher
    for u in range(0, tiny_split.n_users, 37):
        teacher_list = kn.items[u].tolist()
        expected = [teacher_list.index(i) if i in teacher_list else 10 for i in top[u].tolist()]
        assert positions[u].tolist() == expected
