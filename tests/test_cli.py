"""End-to-end runs of the command line on tiny data the tests write themselves."""

import json
import subprocess
import sys

import pytest

from rankdistill.cli import main

TINY = ["--teacher-dim", "16", "--student-dim", "4", "--epochs", "2", "--batch-size", "512", "--negatives", "32",
        "--kd-topk", "20", "--kd-samples", "4", "--quiet"]


@pytest.fixture()
def tiny_csv(tmp_path, tiny_frame):
    path = tmp_path / "log.csv"
    tiny_frame.to_csv(path, index=False)
    return path


def test_run_end_to_end_writes_report(tmp_path, tiny_csv, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(tiny_csv), "--out", str(out), *TINY]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["name"] == "log"
    assert report["dataset"]["users"] == 300 and report["dataset"]["interactions"] == 6000
    assert report["protocol"] == {**report["protocol"], "split": "temporal-leave-one-out",
                                  "candidates": "all-unseen-items", "k": [10, 20]}
    keys = {"ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20", "mrr@20"}
    for name in ("teacher", "student", "distilled"):
        m = report["models"][name]
        assert set(m["metrics"]) == keys
        assert m["params"] > 0 and m["train_seconds"] > 0
    assert report["models"]["teacher"]["params"] == 4 * report["models"]["student"]["params"]
    auto = report["models"]["distilled"]["auto"]  # the default --kd auto records what it tried and chose
    assert report["models"]["distilled"]["method"] == f"auto: {auto['chosen']}"
    assert set(auto["pilots"]) == set(report["config"]["distill"]["auto_menu"])
    assert auto["chosen"] == "none" or auto["pilots"][auto["chosen"]] > auto["student_alone"]
    assert "chosen by `--kd auto`" in (out / "report.md").read_text()
    assert set(report["gap_recovered"]) == {"ndcg@10", "ndcg@20", "recall@20"}
    assert (out / "report.md").read_text().startswith("# rankdistill run on log")
    assert "| teacher | 16 |" in capsys.readouterr().out


def test_run_reads_parquet_and_movielens_u_data(tmp_path, tiny_frame):
    pq = tmp_path / "log.parquet"
    tiny_frame.to_parquet(pq, engine="fastparquet", index=False)
    assert main(["run", "--data", str(pq), "--out", str(tmp_path / "a"), *TINY]) == 0
    udata = tmp_path / "u.data"
    tiny_frame.assign(rating=4)[["user", "item", "rating", "timestamp"]].to_csv(udata, sep="\t", header=False, index=False)
    assert main(["run", "--data", str(udata), "--out", str(tmp_path / "b"), *TINY]) == 0
    assert json.loads((tmp_path / "b" / "report.json").read_text())["dataset"]["interactions"] == 6000


@pytest.mark.slow
def test_missing_file_is_one_error_line_and_status_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rankdistill", "run", "--data", str(tmp_path / "nope.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data path")
    assert "Traceback" not in proc.stderr


def test_bad_option_is_status_2(capsys):
    assert main(["run", "--kd", "nonsense"]) == 2
    assert "unknown distillation loss 'nonsense'" in capsys.readouterr().err


def test_run_sizes_writes_plot_and_table(tmp_path, tiny_csv):
    out = tmp_path / "sizes"
    assert main(["run", "--data", str(tiny_csv), "--out", str(out), "--sizes", "4,8", *TINY]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["embedding_dim"] for r in report["sizes"]] == [4, 8]
    assert report["sizes"][0]["params"] < report["sizes"][1]["params"]
    assert set(report["sizes"][0]["distilled"]) == set(report["models"]["teacher"]["metrics"])
    assert (out / "sizes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Quality against size" in (out / "report.md").read_text()


def test_bad_sizes_is_status_2(capsys):
    assert main(["run", "--sizes", "4,x"]) == 2
    assert "--sizes must be comma-separated integers" in capsys.readouterr().err


def test_embedding_dim_not_multiple_of_4_is_status_2(capsys):
    assert main(["run", "--student-dim", "6"]) == 2
    assert "embedding_dim must be a multiple of 4" in capsys.readouterr().err


def test_single_process_commands_refuse_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "--quiet"]) == 2
    assert "under torchrun only train and distill are sharded" in capsys.readouterr().err
