"""--device cpu|cuda|auto: resolution, the error when CUDA is asked for and absent, and the CPU path end to end.

CUDA itself is never touched here: "available" is monkeypatched, so the tests read the same on a GPU machine.
"""

import json

import pytest
import torch

from rankdistill.cli import main
from rankdistill.device import resolve_device
from rankdistill.errors import RankdistillError

FAST = ["--epochs", "1", "--batch-size", "512", "--negatives", "32", "--quiet"]


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture()
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_is_the_gpu_when_there_is_one(one_gpu):
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_cuda_comes_back_with_its_index(one_gpu):
    assert resolve_device("cuda") == torch.device("cuda", 0) == resolve_device("CUDA:0")


def test_cuda_without_cuda_is_an_error_naming_what_to_do(no_cuda):
    with pytest.raises(RankdistillError, match=r"asks for CUDA, but torch .* sees no CUDA device.*--device cpu"):
        resolve_device("cuda")


def test_cuda_index_beyond_the_devices_is_refused(one_gpu):
    with pytest.raises(RankdistillError, match="torch sees 1 CUDA device"):
        resolve_device("cuda:1")


def test_unknown_device_is_refused():
    with pytest.raises(RankdistillError, match="device must be cpu, cuda .* or auto, got 'tpu'"):
        resolve_device("tpu")


def test_run_config_stores_the_device_resolved(no_cuda):
    from rankdistill.pipeline import RunConfig

    assert RunConfig().device == "cpu" and RunConfig(device="auto").device == "cpu"
    with pytest.raises(RankdistillError, match="CUDA"):
        RunConfig(device="cuda")


@pytest.mark.parametrize("argv", [
    ["run"], ["train", "--out", "m"], ["distill", "--teacher", "t", "--out", "s"],
    ["evaluate", "--model", "m"], ["recommend", "--model", "m", "--out", "r.parquet"],
], ids=["run", "train", "distill", "evaluate", "recommend"])
def test_command_asking_for_cuda_without_it_is_one_error_line(no_cuda, capsys, argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a refused command leaves nothing behind, here or in the repository
    assert main([*argv, "--device", "cuda"]) == 2  # refused before any file is read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device 'cuda' asks for CUDA")


def test_cpu_path_train_distill_evaluate_recommend(tmp_path, tiny_frame, no_cuda, capsys):
    import pandas as pd

    data = tmp_path / "log.csv"
    tiny_frame.to_csv(data, index=False)
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    cpu = ["--device", "cpu"]
    assert main(["train", "--data", str(data), "--out", str(teacher), "--dim", "16", *FAST, *cpu]) == 0
    assert main(["distill", "--teacher", str(teacher), "--out", str(student), "--dim", "4", "--kd", "listkl",
                 "--kd-topk", "20", "--kd-samples", "4", "--knowledge", str(tmp_path / "k.parquet"), "--cached-only",
                 *FAST, *cpu]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(student), *cpu]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["ndcg@10"] > 0
    assert main(["recommend", "--model", str(student), "--k", "5", "--out", str(tmp_path / "r.parquet"), *cpu]) == 0
    assert pd.read_parquet(tmp_path / "r.parquet")["rank"].max() == 5


def test_supervised_objective_puts_its_log_q_table_where_the_batches_are(tiny_split):
    """The in-batch negatives' logQ table is indexed by the batch's items: it must be on their device ("meta"
    stands in for a GPU here: a table left on the CPU would show)."""
    from rankdistill.config import TrainConfig
    from rankdistill.train.objectives import SupervisedObjective

    objective = SupervisedObjective.from_config(TrainConfig(in_batch_negatives=True), tiny_split, device="meta")
    assert objective.log_p.device.type == "meta"
