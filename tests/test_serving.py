"""Export for serving and serve-check (rankdistill.serving): vectors with raw IDs, the faiss index, the manifest,
quantised tables with their test metrics, recall against exact scoring."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from rankdistill.cli import main
from rankdistill.config import ModelConfig
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.modeldir import load
from rankdistill.models.factory import build_model
from rankdistill.serving.check import recall_against_exact, sample_users
from rankdistill.serving.export import read_export
from rankdistill.serving.vectors import VectorRanker, serving_vectors
from helpers import QUICK_TRAIN as FAST, string_id_csv


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_frame):
    """A CSV with string IDs and a cosine two-tower model trained on it (dim 16)."""
    d = tmp_path_factory.mktemp("serving")
    string_id_csv(tiny_frame, d / "log.csv")
    assert main(["train", "--data", str(d / "log.csv"), "--out", str(d / "model"), "--dim", "16", *FAST]) == 0
    return d


@pytest.fixture(scope="module")
def exported(workdir):
    assert main(["export", "--model", str(workdir / "model"), "--out", str(workdir / "export")]) == 0
    return workdir / "export"


@pytest.fixture(scope="module")
def exported_int8(workdir):
    assert main(["export", "--model", str(workdir / "model"), "--out", str(workdir / "int8"),
                 "--quantize", "int8"]) == 0
    return workdir / "int8"


# -- the serving vectors -----------------------------------------------------------------------------------

def test_serving_vectors_give_the_models_scores():
    model = build_model(ModelConfig(embedding_dim=8, score="cosine", temperature=0.2), 20, 30)
    users, items = serving_vectors(model)
    with torch.no_grad():
        expected = model.score_all(torch.arange(20))
    assert torch.allclose(users @ items.T, expected, atol=1e-5)


def test_cosine_user_vectors_have_norm_one_over_the_temperature():
    model = build_model(ModelConfig(embedding_dim=8, score="cosine", temperature=0.2), 20, 30)
    users, items = serving_vectors(model)
    assert torch.allclose(users.norm(dim=1), torch.full((20,), 5.0)) and torch.allclose(items.norm(dim=1),
                                                                                         torch.ones(30))


def test_an_mlp_model_has_no_serving_vectors():
    model = build_model(ModelConfig(kind="mlp", embedding_dim=8), 20, 30)
    with pytest.raises(RankdistillError, match="inner-product search"):
        serving_vectors(model)


def test_vector_ranker_scores_by_inner_product():
    users, items = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    ranker = VectorRanker(users, items)
    # <(1, 2), (3, 0)> = 3, <(1, 2), (1, 1)> = 3
    assert ranker.score_all(torch.tensor([0])).tolist() == [[3.0, 3.0]]
    assert ranker.score(torch.tensor([0]), torch.tensor([[1]])).tolist() == [[3.0]]


# -- recall against exact scoring ----------------------------------------------------------------------------

def test_recall_of_the_exact_list_is_one():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]], np.float32)
    assert recall_against_exact(np.array([[1, 3]]), scores, 2).tolist() == [1.0]


def test_recall_counts_one_miss():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]], np.float32)
    # top 2 exact = {1, 3}; the index returned 1 and 2: one of two
    assert recall_against_exact(np.array([[1, 2]]), scores, 2).tolist() == [0.5]


def test_recall_counts_a_tie_at_the_cutoff_either_way():
    scores = np.array([[0.9, 0.5, 0.5, 0.1]], np.float32)
    # the 2nd best score 0.5 is shared by items 1 and 2: either completes the list
    assert recall_against_exact(np.array([[0, 2]]), scores, 2).tolist() == [1.0]
    assert recall_against_exact(np.array([[0, 1]]), scores, 2).tolist() == [1.0]


def test_recall_counts_missing_results_as_misses():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]], np.float32)
    assert recall_against_exact(np.array([[1, -1]]), scores, 2).tolist() == [0.5]


def test_sample_users_is_seeded_and_takes_everyone_when_asked_for_more():
    assert sample_users(10, 50).tolist() == list(range(10))
    a, b = sample_users(100, 7, seed=1), sample_users(100, 7, seed=1)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 7


# -- rankdistill export ----------------------------------------------------------------------------------------

def test_export_writes_vectors_with_raw_ids(workdir, exported):
    saved = load(workdir / "model")
    users, items = serving_vectors(saved.model)
    u = pd.read_parquet(exported / "users.parquet", engine="fastparquet")
    i = pd.read_parquet(exported / "items.parquet", engine="fastparquet")
    assert u["user"].tolist() == saved.user_vocab.ids.tolist() and u["user"].iloc[0].startswith("u")
    assert i["item"].tolist() == saved.item_vocab.ids.tolist()
    assert np.array_equal(u[[f"v{j}" for j in range(16)]].to_numpy(np.float32), users.numpy())
    assert np.array_equal(i[[f"v{j}" for j in range(16)]].to_numpy(np.float32), items.numpy())


def test_export_manifest_names_dims_counts_metric_score_rule_and_metrics(workdir, exported):
    m = json.loads((exported / "manifest.json").read_text())
    trained = json.loads((workdir / "model" / "metrics.json").read_text())["metrics"]
    assert (m["dim"], m["users"], m["items"], m["metric"], m["precision"]) == (16, 300, 150, "inner_product", "fp32")
    assert m["score_rule"]["model_score"] == "cos(u, i) / 0.1" and "divided by the temperature 0.1" in \
        m["score_rule"]["user_vectors"]
    assert m["test_metrics"]["fp32"] == trained
    assert m["bytes"] == {"fp32": (300 + 150) * 16 * 4, "ratio_to_fp32": 1.0}


def test_export_index_finds_the_exact_top_items(exported):
    faiss = pytest.importorskip("faiss")
    ex = read_export(exported)
    index = faiss.read_index(str(exported / "items.faiss"))
    users, items = ex.users.dequantize(), ex.items.dequantize()
    _, found = index.search(users[:20].numpy(), 10)
    exact = torch.topk(users[:20] @ items.T, 10).indices.numpy()
    assert (np.sort(found, 1) == np.sort(exact, 1)).mean() > 0.99  # equal up to float ties
    assert json.loads((exported / "manifest.json").read_text())["index"]["faiss"] == "IndexFlatIP"


def test_int8_export_stores_fused_rows_at_dim_plus_8_bytes(exported_int8):
    m = json.loads((exported_int8 / "manifest.json").read_text())
    assert m["bytes"]["int8"] == (300 + 150) * (16 + 8) and m["bytes"]["ratio_to_fp32"] == 0.375
    frame = pd.read_parquet(exported_int8 / "items.parquet", engine="fastparquet")
    assert frame["q0"].dtype == np.uint8 and {"scale", "bias"} <= set(frame.columns)


def test_int8_export_reports_test_metrics_next_to_fp32(workdir, exported_int8):
    m = json.loads((exported_int8 / "manifest.json").read_text())["test_metrics"]
    trained = json.loads((workdir / "model" / "metrics.json").read_text())["metrics"]
    saved = load(workdir / "model")
    _, split = saved.load_split()
    ex = read_export(exported_int8)
    expected = evaluate(VectorRanker(ex.users.dequantize(), ex.items.dequantize()), split, "test", (10, 20))
    assert m["fp32"] == trained
    assert m["int8"] == {k: round(v, 6) for k, v in expected.items()}
    assert m["relative_change"]["ndcg@20"] == round(m["int8"]["ndcg@20"] / m["fp32"]["ndcg@20"] - 1, 4)


def test_int8_export_reads_back_within_half_a_step(workdir, exported_int8):
    users, _ = serving_vectors(load(workdir / "model").model)
    got = read_export(exported_int8).users.dequantize()
    step = (users.max(1).values - users.min(1).values) / 255
    assert ((got - users).abs().max(1).values <= step / 2 + 1e-6).all()


def test_fp16_export_round_trips_the_half_values(workdir, tmp_path):
    assert main(["export", "--model", str(workdir / "model"), "--out", str(tmp_path / "h"), "--quantize",
                 "fp16"]) == 0
    users, _ = serving_vectors(load(workdir / "model").model)
    ex = read_export(tmp_path / "h")
    assert torch.equal(ex.users.dequantize(), users.half().float())
    assert ex.manifest["bytes"]["fp16"] == (300 + 150) * 16 * 2


def test_export_without_faiss_writes_the_vectors_and_says_what_to_install(workdir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    assert main(["export", "--model", str(workdir / "model"), "--out", str(tmp_path / "e")]) == 0
    assert "pip install 'rankdistill[serve]'" in capsys.readouterr().err
    assert (tmp_path / "e" / "users.parquet").exists() and (tmp_path / "e" / "items.parquet").exists()
    assert not (tmp_path / "e" / "items.faiss").exists()
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["index"]["file"] is None


def test_export_refuses_an_mlp_model(workdir, tmp_path, capsys):
    assert main(["train", "--data", str(workdir / "log.csv"), "--out", str(tmp_path / "mlp"), "--model", "mlp",
                 "--dim", "8", *FAST]) == 0
    assert main(["export", "--model", str(tmp_path / "mlp"), "--out", str(tmp_path / "e")]) == 2
    assert "two_tower or lightgcn" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_export_refuses_to_overwrite_another_directory(workdir, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["export", "--model", str(workdir / "model"), "--out", str(tmp_path)]) == 2
    assert "not a rankdistill export directory" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()


def test_export_replaces_an_earlier_export(workdir, exported, tmp_path):
    target = tmp_path / "again"
    assert main(["export", "--model", str(workdir / "model"), "--out", str(target)]) == 0
    assert main(["export", "--model", str(workdir / "model"), "--out", str(target), "--quantize", "fp16"]) == 0
    assert read_export(target).manifest["precision"] == "fp16"


# -- rankdistill serve-check -----------------------------------------------------------------------------------

def test_serve_check_of_the_flat_index_has_recall_one(exported, capsys):
    pytest.importorskip("faiss")
    assert main(["serve-check", "--export", str(exported), "--k", "100", "--users", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recall@100"] == 1.0 and out["users_measured"] == 50 and out["k"] == 100
    assert 0 < out["latency_ms"]["p50"] <= out["latency_ms"]["p99"]


def test_serve_check_of_an_hnsw_index_with_the_default_settings(workdir, tmp_path, capsys):
    pytest.importorskip("faiss")
    assert main(["export", "--model", str(workdir / "model"), "--out", str(tmp_path / "h"), "--index", "hnsw"]) == 0
    capsys.readouterr()
    assert main(["serve-check", "--export", str(tmp_path / "h"), "--k", "20", "--users", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["index"]["kind"] == "hnsw" and out["index"]["ef_search"] == 768 and out["recall@20"] >= 0.99


def test_serve_check_k_above_the_catalogue_is_the_catalogue(exported, capsys):
    pytest.importorskip("faiss")
    assert main(["serve-check", "--export", str(exported), "--k", "1000", "--users", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["k"] == 150 and out["recall@150"] == 1.0


def test_serve_check_without_faiss_names_what_to_install(exported, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert main(["serve-check", "--export", str(exported)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: faiss is not installed") and "rankdistill[serve]" in err


def test_serve_check_of_an_export_without_index_is_an_error(workdir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("faiss")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "faiss", None)
        assert main(["export", "--model", str(workdir / "model"), "--out", str(tmp_path / "e")]) == 0
    capsys.readouterr()
    assert main(["serve-check", "--export", str(tmp_path / "e")]) == 2
    assert "has no index" in capsys.readouterr().err


def test_serve_check_of_a_directory_that_is_not_an_export(tmp_path, capsys):
    pytest.importorskip("faiss")
    assert main(["serve-check", "--export", str(tmp_path)]) == 2
    assert "not a rankdistill export directory" in capsys.readouterr().err


def test_serve_check_refuses_k_below_one(exported, capsys):
    assert main(["serve-check", "--export", str(exported), "--k", "0"]) == 2
    assert "--k must be >= 1" in capsys.readouterr().err


def test_score_rule_of_a_dot_model_says_the_vectors_are_raw():
    from rankdistill.serving.vectors import score_rule

    rule = score_rule(ModelConfig(embedding_dim=8, score="dot"))
    assert rule["metric"] == "inner_product" and rule["user_vectors"] == "raw" and "temperature" not in str(rule)


def test_export_refuses_a_bad_ef_search(workdir, tmp_path, capsys):
    assert main(["export", "--model", str(workdir / "model"), "--out", str(tmp_path / "e"), "--index", "hnsw",
                 "--ef-search", "0"]) == 2
    assert "ef_search must be an integer >= 1, got 0" in capsys.readouterr().err


def test_export_of_a_lightgcn_model_gives_its_scores(workdir, tmp_path):
    assert main(["train", "--data", str(workdir / "log.csv"), "--out", str(tmp_path / "lg"), "--model", "lightgcn",
                 "--dim", "8", "--epochs", "1", "--batch-size", "512", "--negatives", "32", "--quiet"]) == 0
    assert main(["export", "--model", str(tmp_path / "lg"), "--out", str(tmp_path / "e")]) == 0
    ex, model = read_export(tmp_path / "e"), load(tmp_path / "lg").model
    with torch.no_grad():
        expected = model.score_all(torch.arange(model.n_users))
    assert torch.allclose(ex.users.dequantize() @ ex.items.dequantize().T, expected, atol=1e-5)
    assert ex.manifest["score_rule"]["model_score"] == "<e_u, e_i>"


def test_export_and_serve_check_check_their_out_before_any_work(tmp_path, capsys):
    """--out that is a file (export) or a folder (serve-check) is one error line, before a model is read."""
    from rankdistill.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["export", "--model", str(tmp_path), "--out", str(a_file / "x")]) == 2  # tmp_path: no model in it
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "a_file" in err and "not a rankdistill model" not in err
    assert main(["serve-check", "--export", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is a folder" in err
