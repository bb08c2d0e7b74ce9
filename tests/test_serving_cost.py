"""The serving cost in reports (rankdistill.serving.cost): bytes fp32 and int8, time to score and rank all
items for one user, int8 test metrics; the report's serving table."""

import json

import pytest
import torch

from rankdistill.cli import main
from rankdistill.config import ModelConfig
from rankdistill.models.factory import build_model
from rankdistill.serving.cost import int8_metrics, model_bytes, ms_per_user, serving_cost
from helpers import MatrixRanker


def test_model_bytes_of_a_two_tower_model():
    model = build_model(ModelConfig(embedding_dim=8), 20, 30)
    # 50 rows of 8 numbers: fp32 50 * 8 * 4; int8 fused rows 50 * (8 + 8)
    assert model_bytes(model) == {"fp32": 1600, "int8": 800}


def test_model_bytes_keep_dense_weights_in_fp32():
    model = build_model(ModelConfig(kind="mlp", embedding_dim=8, mlp_layers=(4,)), 20, 30)
    dense = sum(p.numel() for p in model.dense_parameters())  # Linear(16, 4) + Linear(4, 1) = 68 + 5
    assert dense == 73
    assert model_bytes(model) == {"fp32": 4 * (50 * 8 + dense), "int8": 50 * 16 + 4 * dense}


def test_ms_per_user_is_positive_and_ordered():
    t = ms_per_user(build_model(ModelConfig(embedding_dim=8), 20, 30), users=10)
    assert 0 < t["p50"] <= t["p99"]


def test_serving_cost_names_its_top_and_threads():
    cost = serving_cost(build_model(ModelConfig(embedding_dim=8), 20, 30))
    assert cost["top"] == 100 and cost["threads"] == torch.get_num_threads()


def test_int8_metrics_equal_fp32_when_the_rows_quantise_exactly(tiny_split):
    from rankdistill.evaluation.evaluator import evaluate

    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, 256, (tiny_split.n_users, 8), generator=g).float()
    items = torch.randint(0, 256, (tiny_split.n_items, 8), generator=g).float()
    users[:, 0], users[:, 1], items[:, 0], items[:, 1] = 0, 255, 0, 255  # scale 1, bias 0: exact codes
    model = MatrixRanker(users, items)
    assert int8_metrics(model, tiny_split, (10, 20), ("ndcg",)) == {
        k: round(v, 6) for k, v in evaluate(model, tiny_split, "test", (10, 20), ("ndcg",)).items()}


def test_int8_metrics_of_an_mlp_model_is_none(tiny_split):
    model = build_model(ModelConfig(kind="mlp", embedding_dim=8), tiny_split.n_users, tiny_split.n_items)
    assert int8_metrics(model, tiny_split, (10,), ("ndcg",)) is None


def test_run_report_has_the_serving_cost_of_every_model(tmp_path, tiny_frame):
    tiny_frame.to_csv(tmp_path / "log.csv", index=False)
    args = ["run", "--data", str(tmp_path / "log.csv"), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--batch-size", "512", "--negatives", "32", "--quiet", "--teacher-dim", "16", "--student-dim", "4",
            "--kd", "listkl", "--kd-topk", "20", "--kd-samples", "4"]
    assert main(args) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    for name, dim in (("teacher", 16), ("student", 4), ("distilled", 4)):
        s = report["models"][name]["serving"]
        assert s["bytes"] == {"fp32": (300 + 150) * dim * 4, "int8": (300 + 150) * (dim + 8)}
        assert s["ms_per_user"]["p50"] > 0 and set(s["int8_metrics"]) == set(report["models"][name]["metrics"])
    assert "serving" not in report["models"]["popularity"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert "Serving cost" in md and f"| teacher | 16 | {450 * 64:,} | {450 * 24:,} |" in md
