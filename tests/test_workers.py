"""Workers: independent trainings side by side give the same models as one process, and the timings add up."""

import os
from dataclasses import replace

import pytest
import torch

import rankdistill.train.workers as workers
from rankdistill.config import DistillConfig
from rankdistill.data.interactions import Interactions
from rankdistill.errors import RankdistillError
from rankdistill.pipeline import RunConfig, distill, run, train_model
from rankdistill.train.knowledge import TeacherKnowledge


def test_resolve_workers_takes_a_given_number_and_sizes_auto_by_cores_data_and_device(monkeypatch):
    monkeypatch.setattr(workers, "cpu_cores", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert workers.resolve_workers(3, "cpu", 10) == 3  # given: taken as it is
    assert workers.resolve_workers(0, "cpu", workers.MIN_PAIRS) == 4  # 8 cores / 2 threads
    monkeypatch.setattr(workers, "cpu_cores", lambda: 64)
    assert workers.resolve_workers(0, "cpu", 10**7) == workers.MAX_AUTO
    monkeypatch.setattr(workers, "cpu_cores", lambda: 1)
    assert workers.resolve_workers(0, "cpu", 10**7) == 1
    monkeypatch.setattr(workers, "cpu_cores", lambda: 8)
    assert workers.resolve_workers(0, "cpu", workers.MIN_PAIRS - 1) == 1  # small data: one process
    assert workers.resolve_workers(0, "cuda", 10**7) == 1  # one GPU to share
    with pytest.raises(RankdistillError, match="workers must be >= 0, got -1|workers must be >= 0"):
        workers.resolve_workers(-1, "cpu", 10)
    with pytest.raises(RankdistillError, match="workers must be >= 0"):
        RunConfig(workers=-1)


def _double(x):
    return 2 * x


def _fail(x):
    raise RankdistillError(f"bad {x}")


@pytest.mark.slow
def test_side_by_side_returns_results_in_order_and_raises_a_worker_error():
    assert workers.side_by_side([(_double, (i,)) for i in range(3)], 2) == [0, 2, 4]
    with pytest.raises(RankdistillError, match="bad 7"):
        workers.side_by_side([(_double, (1,)), (_fail, (7,))], 2)


def test_checkpoint_home_is_out_dir_or_a_temporary_directory(tmp_path):
    with workers.checkpoint_home(tmp_path, 2) as home:
        assert home == tmp_path
    with workers.checkpoint_home(None, 1) as home:
        assert home is None
    with workers.checkpoint_home(None, 2) as home:
        assert os.path.isdir(home)
    assert not os.path.exists(home)


def _curves(result):
    return {name: (m.metrics, [h["valid"] for h in m.fit.history] if m.fit else None)
            for name, m in result.models.items()}


@pytest.mark.slow
def test_a_run_with_workers_gives_the_same_models_as_one_process(tiny_frame, tiny_run_config):
    """Teacher and student side by side, then auto's pilots side by side, each model resumed here from its
    worker's checkpoint: every validation curve and test metric equals the one-process run's."""
    data = Interactions.from_frame(tiny_frame, "tiny")
    config = replace(tiny_run_config, train=replace(tiny_run_config.train, epochs=4, patience=10),
                     distill=DistillConfig(kd="auto", auto_menu=("listkl", "soft_bce"), auto_pilot_epochs=2,
                                           topk=20, topk_samples=4))
    one = run(data, replace(config, workers=1))
    two = run(data, replace(config, workers=2))
    assert _curves(two) == _curves(one)
    assert two.models["distilled"].auto["workers"] == 2 and one.models["distilled"].auto["workers"] == 1
    assert two.models["distilled"].auto["pilots"] == one.models["distilled"].auto["pilots"]
    # the phases add up to the wall time: each model's own seconds, and one row for what side by side saved
    # (negative) or cost (on data this small: the workers' start)
    t = two.timings
    assert isinstance(t["side by side (2 workers)"], float) and "side by side (2 workers)" not in one.timings
    assert t["teacher"]["total"] == pytest.approx(t["teacher"]["train"] + t["teacher"]["test"], abs=0.02)
    phases = sum(v["total"] if isinstance(v, dict) else v for v in t.values())
    assert phases == pytest.approx(two.seconds, rel=0.05)


def test_pilots_run_in_this_process_when_the_workers_cannot_rebuild_the_teacher(tiny_split, tiny_run_config,
                                                                               monkeypatch):
    """A teacher not built from a known config (no ``teacher_config``) cannot be sent to a worker: the pilots
    run here, whatever ``workers`` says."""
    config = replace(tiny_run_config, distill=DistillConfig(kd="auto", auto_menu=("listkl",), auto_pilot_epochs=1,
                                                            topk=20, topk_samples=4))
    teacher = train_model(tiny_split, config.teacher, config, "teacher").model
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, 20)
    monkeypatch.setattr(workers, "side_by_side", lambda *a: pytest.fail("no worker may start"))
    monkeypatch.setattr("rankdistill.auto.side_by_side", lambda *a: pytest.fail("no worker may start"))
    result = distill(tiny_split, teacher, config, knowledge=knowledge, workers=2)
    assert result.auto["workers"] == 1


def test_run_refuses_negative_workers_with_exit_status_2(tmp_path, monkeypatch, capsys):
    from rankdistill.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "--workers", "-1", "--out", "r"]) == 2
    assert "workers must be >= 0" in capsys.readouterr().err
    assert main(["run", "--student-epochs", "0", "--out", "r"]) == 2
    assert "student_epochs must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_auto_without_a_student_alone_runs_its_baseline_pilot_in_a_worker_too(tiny_split, tiny_run_config):
    """``distill`` with no ``alone``: the true-labels baseline is one more pilot; side by side it is a worker's
    job like the others, and the result equals the one-process result."""
    config = replace(tiny_run_config, train=replace(tiny_run_config.train, epochs=3, patience=10),
                     distill=DistillConfig(kd="auto", auto_menu=("listkl",), auto_pilot_epochs=1, topk=20,
                                           topk_samples=4))
    teacher = train_model(tiny_split, config.teacher, config, "teacher").model
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, 20)
    one = distill(tiny_split, teacher, config, knowledge=knowledge, workers=1)
    two = distill(tiny_split, teacher, config, knowledge=knowledge, workers=2, teacher_config=config.teacher)
    assert two.auto["workers"] == 2
    assert {k: v for k, v in two.auto.items() if k not in ("workers", "pilot_seconds", "seconds", "pilot_curves")} \
        == {k: v for k, v in one.auto.items() if k not in ("workers", "pilot_seconds", "seconds", "pilot_curves")}
    assert two.metrics == one.metrics
    assert [h["valid"] for h in two.fit.history] == [h["valid"] for h in one.fit.history]


@pytest.mark.slow
def test_warm_started_pilots_in_workers_equal_the_one_process_ones(tiny_split, tiny_run_config):
    """warm_start: the start weights travel to the workers with the job; the pilots and the finished winner
    equal the one-process result."""
    config = replace(tiny_run_config, train=replace(tiny_run_config.train, epochs=3, patience=10),
                     distill=DistillConfig(kd="auto", auto_menu=("listkl", "soft_bce"), auto_pilot_epochs=1,
                                           topk=20, topk_samples=4, warm_start=True))
    teacher = train_model(tiny_split, config.teacher, config, "teacher").model
    alone = train_model(tiny_split, config.student, config, "student")
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, 20)
    one = distill(tiny_split, teacher, config, knowledge=knowledge, alone=alone, workers=1)
    two = distill(tiny_split, teacher, config, knowledge=knowledge, alone=alone, workers=2,
                  teacher_config=config.teacher)
    assert two.auto["workers"] == 2 and two.auto["pilots"] == one.auto["pilots"]
    assert two.auto["chosen"] == one.auto["chosen"] and two.metrics == one.metrics


def test_the_student_alone_has_its_own_epoch_cap(tiny_frame, tiny_run_config):
    """``student_epochs`` caps the student trained alone (unset: twice ``epochs``); the teacher and the
    distilled student keep ``epochs``."""
    data = Interactions.from_frame(tiny_frame, "tiny")
    config = replace(tiny_run_config, train=replace(tiny_run_config.train, epochs=2, patience=10), workers=1)
    assert config.alone().train.epochs == 4 and replace(config, student_epochs=3).alone().train.epochs == 3
    result = run(data, replace(config, student_epochs=3))
    epochs = {name: len(m.fit.history) for name, m in result.models.items() if m.fit is not None}
    assert epochs == {"teacher": 2, "student": 3, "distilled": 2}
    from rankdistill.pipeline import config_dict

    assert config_dict(config)["student_epochs"] == 4  # the report records the cap used, not "unset"
    with pytest.raises(RankdistillError, match="student_epochs must be >= 1, got 0"):
        replace(config, student_epochs=0)
