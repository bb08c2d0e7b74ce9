"""The Python API's scoring and evaluation entries: array-likes accepted, bad indices refused by name, a loaded
model directory accepted where a model is expected (issue 13, item 15)."""

import numpy as np
import pandas as pd
import pytest
import torch

import rankdistill as rd
from rankdistill.config import ModelConfig
from rankdistill.data.interactions import Interactions
from rankdistill.errors import RankdistillError
from rankdistill.models.factory import build_model


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(embedding_dim=8), 30, 20, seed=1).eval()


@pytest.fixture(scope="module")
def mlp():
    return build_model(ModelConfig(kind="mlp", embedding_dim=8, mlp_layers=(8,)), 30, 20, seed=1).eval()


@pytest.mark.parametrize("make", [list, np.array, pd.Series, lambda x: np.array(x, dtype=np.int32)],
                         ids=["list", "numpy", "series", "int32"])
def test_score_all_accepts_array_likes(model, make):
    assert torch.equal(model.score_all(make([3, 0, 29])), model.score_all(torch.tensor([3, 0, 29])))


def test_score_accepts_array_likes(model):
    want = model.score(torch.tensor([1, 2]), torch.tensor([[0, 5], [19, 1]]))
    assert torch.equal(model.score([1, 2], [[0, 5], [19, 1]]), want)
    assert torch.equal(model.score(np.array([1, 2]), np.array([[0, 5], [19, 1]])), want)


def test_score_all_of_an_mlp_accepts_a_series(mlp):
    assert torch.equal(mlp.score_all(pd.Series([4, 7])), mlp.score_all(torch.tensor([4, 7])))


def test_user_index_past_the_end_is_refused(model):
    with pytest.raises(RankdistillError, match=r"user index 30 is out of range: the model has 30 users \(rows 0 to 29\)"):
        model.score_all([0, 30])


def test_negative_user_index_is_refused(model):
    with pytest.raises(RankdistillError, match="user index -1 is out of range"):
        model.score_all(torch.tensor([-1]))


def test_item_index_past_the_end_is_refused(model):
    with pytest.raises(RankdistillError, match="item index 20 is out of range: the model has 20 items"):
        model.score([0], [[1, 20]])


def test_float_indices_are_refused(model):
    with pytest.raises(RankdistillError, match=r"user indices must be integers, got float64 \(first value 1.5\)"):
        model.score_all(np.array([1.5, 2.0]))
    with pytest.raises(RankdistillError, match=r"user indices must be integers, got float32 \(first value 2.0\)"):
        model.score_all(torch.tensor([2.0]))


def test_raw_id_strings_are_refused_with_the_way_to_map_them(model):
    with pytest.raises(RankdistillError, match=r"user indices must be integers, got text \(first value 'u1'\); .*"
                                               r"SavedModel.user_vocab.encode maps raw IDs"):
        model.score_all(["u1", "u2"])


def test_boolean_mask_is_refused(model):
    with pytest.raises(RankdistillError, match="user indices must be integers, got bool"):
        model.score_all(torch.tensor([True, False]))


def test_items_not_one_row_per_user_are_refused(model):
    with pytest.raises(RankdistillError, match=r"one row of items per user: 2 users but items of shape \(1, 2\)"):
        model.score([0, 1], [[0, 1]])
    with pytest.raises(RankdistillError, match=r"item indices must be 2-D \[B, L\], got shape \(2,\)"):
        model.score([0, 1], [0, 1])


def test_evaluate_accepts_a_loaded_model_directory(tmp_path, tiny_frame, tiny_split):
    data = Interactions.from_frame(tiny_frame, "tiny")
    trained = build_model(ModelConfig(embedding_dim=8), data.n_users, data.n_items, seed=1)
    saved = rd.load(rd.save_model(tmp_path / "m", trained, ModelConfig(embedding_dim=8), data, tiny_split))
    assert rd.evaluate(saved, tiny_split) == rd.evaluate(saved.model, tiny_split)
    assert rd.evaluate_sampled(saved, tiny_split, negatives=20) == rd.evaluate_sampled(saved.model, tiny_split, negatives=20)
    assert rd.fidelity(saved, saved, tiny_split) == rd.fidelity(saved.model, saved.model, tiny_split)


def test_evaluate_refuses_what_is_not_a_model(tiny_split):
    with pytest.raises(RankdistillError, match="model must be a Ranker or a loaded model directory .* got str"):
        rd.evaluate("runs/teacher", tiny_split)


def test_no_users_gives_no_rows(model):
    assert model.score_all([]).shape == (0, 20)


def test_distill_accepts_a_loaded_teacher_directory(tmp_path, tiny_frame, tiny_split, tiny_run_config):
    data = Interactions.from_frame(tiny_frame, "tiny")
    teacher = build_model(ModelConfig(embedding_dim=16), data.n_users, data.n_items, seed=3)
    saved = rd.load(rd.save_model(tmp_path / "t", teacher, ModelConfig(embedding_dim=16), data, tiny_split))
    from_dir = rd.distill(tiny_split, saved, tiny_run_config)
    from_model = rd.distill(tiny_split, saved.model, tiny_run_config)
    assert from_dir.metrics == from_model.metrics
