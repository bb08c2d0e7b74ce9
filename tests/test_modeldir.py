"""Model directories: layout, a round trip that gives the same scores, re-reading the data, refusals."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import rankdistill as rd
from rankdistill.config import ModelConfig
from rankdistill.data.load import load_interactions
from rankdistill.data.split import make_split
from rankdistill.errors import RankdistillError
from rankdistill.modeldir import load, save_model
from rankdistill.models.factory import build_model
from helpers import string_id_csv


@pytest.fixture()
def log_csv(tmp_path, tiny_frame):
    """The tiny log with string IDs ("u12", "i7") as a CSV."""
    return string_id_csv(tiny_frame, tmp_path / "log.csv")


def _saved(tmp_path, log_csv, config=ModelConfig(embedding_dim=8), **load_kwargs):
    data = load_interactions(log_csv, **load_kwargs)
    split = make_split(data, "ratio", seed=4)
    model = build_model(config, data.n_users, data.n_items, seed=1)
    with torch.no_grad():  # not the initial weights: a load that re-initialised would be caught
        for table in model.tables():
            table.weight.add_(torch.linspace(-1, 1, table.weight.numel()).view_as(table.weight))
    out = save_model(tmp_path / "model", model, config, data, split, "teacher", {"seed": 1}, {"ndcg@10": 0.5})
    return out, model, data, split


def test_saved_training_pairs_are_the_splits_training_interactions(tmp_path, log_csv):
    out, _, _, split = _saved(tmp_path, log_csv)
    users, items = load(out).train_pairs()
    assert np.array_equal(users, split.train.rows().numpy()) and np.array_equal(items, split.train.indices.numpy())


def test_training_pairs_of_an_older_directory_are_cut_again_from_its_data(tmp_path, log_csv):
    out, _, _, split = _saved(tmp_path, log_csv)
    (out / "train_pairs.parquet").unlink()  # as written before the file existed
    users, items = load(out).train_pairs()
    assert np.array_equal(users, split.train.rows().numpy()) and np.array_equal(items, split.train.indices.numpy())


def test_layout_of_a_model_directory(tmp_path, log_csv):
    out, _, data, _ = _saved(tmp_path, log_csv)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "item_vocab.parquet", "metrics.json",
                                                     "train_pairs.parquet", "user_vocab.parquet", "weights.pt"]
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "rankdistill-model" and config["version"] == 1 and config["name"] == "teacher"
    assert (config["n_users"], config["n_items"]) == (data.n_users, data.n_items)
    assert config["model"]["embedding_dim"] == 8
    assert config["data"]["path"] == str(log_csv) and config["data"]["interactions"] == len(data)
    assert config["split"] == {"kind": "ratio", "ratio": [0.8, 0.1, 0.1], "seed": 4}
    assert config["seed"] == 1 and config["metrics"] == {"ndcg@10": 0.5}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_round_trip_gives_the_same_scores_and_vocabularies(tmp_path, log_csv):
    out, model, data, _ = _saved(tmp_path, log_csv, ModelConfig(embedding_dim=8, tower_layers=(4,)))
    saved = rd.load(out)
    assert isinstance(saved, rd.SavedModel) and saved.model_config.tower_layers == (4,)
    users = torch.arange(data.n_users)
    assert torch.equal(saved.model.score_all(users), model.score_all(users))
    assert saved.user_vocab == data.user_vocab and saved.item_vocab == data.item_vocab
    assert saved.user_vocab.ids[0] == data.user_vocab.ids[0] and isinstance(saved.user_vocab.ids[0], str)
    assert not saved.model.training


def test_load_split_cuts_the_same_split_again(tmp_path, log_csv):
    out, _, _, split = _saved(tmp_path, log_csv)
    _, again = load(out).load_split()
    assert again.options == split.options
    for a, b in ((again.train, split.train), (again.valid, split.valid), (again.test, split.test)):
        assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)


def test_changed_data_is_refused_naming_both_sizes(tmp_path, log_csv):
    out, _, data, _ = _saved(tmp_path, log_csv)
    with open(log_csv, "a") as f:
        f.write("newcomer,i1,5\nnewcomer,i2,6\nnewcomer,i3,7\n")
    with pytest.raises(RankdistillError, match=rf"has {data.n_users} users and {data.n_items} items but the data "
                                               rf".* has {data.n_users + 1} users and {data.n_items} items"):
        load(out).load_split()


def test_filters_are_recorded_and_applied_again(tmp_path, log_csv):
    out, _, data, _ = _saved(tmp_path, log_csv, min_item_interactions=30)
    assert data.dropped["items_removed_by_k_core"] > 0
    saved = load(out)
    assert saved.data_spec.min_item_interactions == 30
    assert saved.load_data().n_items == data.n_items


def test_existing_model_directory_is_replaced_other_directories_are_refused(tmp_path, log_csv):
    out, *_ = _saved(tmp_path, log_csv)
    out, *_ = _saved(tmp_path, log_csv)  # the same path again: replaced
    assert load(out).name == "teacher"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    data = load_interactions(log_csv)
    with pytest.raises(RankdistillError, match=r"exists and is not a rankdistill model directory"):
        save_model(other, build_model(ModelConfig(embedding_dim=4), data.n_users, data.n_items), ModelConfig(),
                   data, make_split(data, "ratio"))
    assert (other / "todo.txt").read_text() == "keep me"


def test_missing_directory(tmp_path):
    with pytest.raises(RankdistillError, match=r"model directory .*nowhere does not exist"):
        load(tmp_path / "nowhere")


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(RankdistillError, match=r"is not a rankdistill model directory \(no config.json\)"):
        load(tmp_path)


def test_truncated_weights(tmp_path, log_csv):
    out, *_ = _saved(tmp_path, log_csv)
    data = (out / "weights.pt").read_bytes()
    (out / "weights.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(RankdistillError, match=r"cannot load .*weights.pt"):
        load(out)


def test_missing_vocabulary_file(tmp_path, log_csv):
    out, *_ = _saved(tmp_path, log_csv)
    (out / "item_vocab.parquet").unlink()
    with pytest.raises(RankdistillError, match=r"has no item_vocab.parquet; it is incomplete"):
        load(out)


def test_in_memory_data_needs_explicit_data(tmp_path, tiny_frame):
    data = rd.Interactions.from_frame(tiny_frame, "mem")
    split = make_split(data)
    out = save_model(tmp_path / "m", build_model(ModelConfig(embedding_dim=4), data.n_users, data.n_items),
                     ModelConfig(embedding_dim=4), data, split)
    saved = load(out)
    assert saved.data_spec is None
    with pytest.raises(RankdistillError, match=r"records no data path; pass the data with --data"):
        saved.load_split()


def test_integer_ids_survive_the_round_trip(tmp_path, tiny_frame):
    path = tmp_path / "log.parquet"
    tiny_frame.to_parquet(path, engine="fastparquet", index=False)
    data = load_interactions(path)
    out = save_model(tmp_path / "m", build_model(ModelConfig(embedding_dim=4), data.n_users, data.n_items),
                     ModelConfig(embedding_dim=4), data, make_split(data))
    saved = load(out)
    assert saved.user_vocab.ids.dtype == np.int64 and saved.user_vocab == data.user_vocab
    assert list(saved.user_vocab.encode(pd.Series(["5", "x"]))) == [data.user_vocab.encode([5])[0], -1]
