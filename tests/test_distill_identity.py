"""A distilled student's checkpoint names what it learnt from: the teacher's weights (online), the knowledge,
and the mode (online or cached). Resuming into the same --out from another source is refused."""

import json

import pytest

from rankdistill.cli import main
from helpers import QUICK_TRAIN as QUICK

KD = ["--dim", "4", "--kd", "listkl", "--kd-topk", "20", "--kd-samples", "4"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_frame):
    """Two teachers on the same data and split that differ only in their seed (so in their weights)."""
    d = tmp_path_factory.mktemp("identity")
    tiny_frame.to_csv(d / "log.csv", index=False)
    for name, seed in (("a", "0"), ("b", "1")):
        assert main(["train", "--data", str(d / "log.csv"), "--out", str(d / name), "--dim", "8",
                     "--seed", seed, *QUICK]) == 0
    return d


def test_distill_refuses_to_resume_from_another_teachers_checkpoint(teachers, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["distill", "--teacher", str(teachers / "a"), "--out", str(out), *KD, *QUICK]) == 0
    assert main(["distill", "--teacher", str(teachers / "b"), "--out", str(out), *KD, *QUICK]) == 2
    err = capsys.readouterr().err
    assert "belongs to a different run" in err and "teacher.weights" in err
    assert json.loads((out / "config.json").read_text())["teacher"]["path"] == str((teachers / "a").resolve())


def test_distill_refuses_to_resume_an_online_run_in_cached_mode(teachers, tmp_path, capsys):
    out, know = tmp_path / "s", tmp_path / "k.parquet"
    args = ["distill", "--teacher", str(teachers / "a"), "--out", str(out), "--knowledge", str(know), *KD, *QUICK]
    assert main(args) == 0
    assert main([*args, "--cached-only"]) == 2
    assert "teacher.mode: online -> cached" in capsys.readouterr().err


def test_distill_refuses_to_resume_from_other_knowledge(teachers, tmp_path, capsys):
    out = tmp_path / "s"
    for name in ("a", "b"):
        assert main(["distill", "--teacher", str(teachers / name), "--knowledge", str(tmp_path / f"{name}.parquet"),
                     "--out", str(tmp_path / f"first-{name}"), *KD, *QUICK]) == 0
    cached = ["distill", "--teacher", str(teachers / "a"), "--out", str(out), "--cached-only", *KD, *QUICK]
    assert main([*cached, "--knowledge", str(tmp_path / "a.parquet")]) == 0
    assert main([*cached, "--knowledge", str(tmp_path / "b.parquet")]) == 2
    err = capsys.readouterr().err
    assert "teacher.knowledge" in err and "teacher.weights" not in err


def test_distill_resumes_a_finished_run_from_the_same_teacher(teachers, tmp_path):
    out = tmp_path / "s"
    args = ["distill", "--teacher", str(teachers / "a"), "--out", str(out), *KD, *QUICK]
    assert main(args) == 0
    first = json.loads((out / "config.json").read_text())["fit"]
    assert main(args) == 0  # same teacher, same knowledge, same mode: the finished checkpoint is reused
    assert json.loads((out / "config.json").read_text())["fit"]["best_valid"] == first["best_valid"]
