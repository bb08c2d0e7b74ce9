"""--kd auto: pilots from the same start, the choice on validation only, the student alone as the floor."""

from dataclasses import replace

import pytest
import torch

import rankdistill.auto as auto
from rankdistill.config import DistillConfig
from rankdistill.errors import RankdistillError
from rankdistill.pipeline import distill, train_model
from rankdistill.train.knowledge import TeacherKnowledge


def test_pilot_figure_is_the_best_validation_of_the_first_epochs():
    history = [{"valid": {"ndcg@20": v}} for v in (0.1, 0.3, 0.2, 0.9)]
    assert auto.pilot_figure(history, 3, "ndcg@20") == 0.3
    assert auto.pilot_figure([], 3, "ndcg@20") == float("-inf")


def test_auto_config_validates_its_menu():
    assert DistillConfig(kd="auto").terms == ()
    with pytest.raises(RankdistillError, match="unknown distillation loss"):
        DistillConfig(kd="auto", auto_menu=("listkl", "nope"))
    with pytest.raises(RankdistillError, match="auto_menu lists"):
        DistillConfig(kd="auto", auto_menu=("none",))
    with pytest.raises(RankdistillError, match="auto_pilot_epochs must be > 0"):
        DistillConfig(kd="auto", auto_pilot_epochs=0)


@pytest.fixture()
def trained(tiny_split, tiny_run_config):
    run = replace(tiny_run_config, train=replace(tiny_run_config.train, epochs=4, patience=10),
                  distill=DistillConfig(kd="auto", auto_menu=("listkl", "soft_bce"), auto_pilot_epochs=2, topk=20,
                                        topk_samples=4, warm_start=False))  # the cold start; warm: its own tests
    teacher = train_model(tiny_split, run.teacher, run, "teacher").model
    alone = train_model(tiny_split, run.student, run, "student")
    return run, teacher, alone, TeacherKnowledge.compute(teacher, tiny_split, 20)


def test_auto_records_every_pilot_and_continues_the_best(tiny_split, trained):
    run, teacher, alone, knowledge = trained
    result = distill(tiny_split, teacher, run, knowledge=knowledge, alone=alone)
    rec = result.auto
    assert set(rec["pilots"]) == {"listkl", "soft_bce"} and rec["pilot_epochs"] == 2
    # the baseline pilot is the student alone's own first epochs (same start, same batches)
    assert rec["student_alone"] == pytest.approx(auto.pilot_figure(alone.fit.history, 2, "ndcg@20"), abs=1e-6)
    best = max(rec["pilots"], key=rec["pilots"].get)
    if rec["pilots"][best] > rec["student_alone"] and rec["chosen_valid"] >= alone.fit.best_valid["ndcg@20"]:
        assert rec["chosen"] == best and result.method == f"auto: {best}"
        # the winner continued from its pilot: its history starts with the pilot's epochs and goes on
        assert len(result.fit.history) > 2
        single = distill(tiny_split, teacher, replace(run, distill=replace(run.distill, kd=best)), knowledge=knowledge)
        assert [h["valid"] for h in result.fit.history] == [h["valid"] for h in single.fit.history]
        assert result.metrics == single.metrics
    else:
        assert rec["chosen"] == "none" and result.model is alone.model and result.metrics == alone.metrics


def test_auto_keeps_the_student_alone_when_no_pilot_beats_it(tiny_split, trained, monkeypatch):
    run, teacher, alone, knowledge = trained
    monkeypatch.setattr(auto, "pilot_figure", lambda history, epochs, metric: (
        1.0 if history is alone.fit.history else 0.0))
    result = distill(tiny_split, teacher, run, knowledge=knowledge, alone=alone)
    assert result.auto["chosen"] == "none" and "no method beat the student alone" in result.auto["reason"]
    assert result.model is alone.model and result.metrics == alone.metrics and result.method == "auto: none"


def test_auto_without_a_student_alone_trains_the_baseline_pilot(tiny_split, trained, monkeypatch):
    run, teacher, _, knowledge = trained
    figures = iter([0.5, 0.4, 0.9])  # listkl, soft_bce, then the baseline pilot wins
    monkeypatch.setattr(auto, "pilot_figure", lambda history, epochs, metric: next(figures))
    result = distill(tiny_split, teacher, run, knowledge=knowledge)
    alone = train_model(tiny_split, run.student, run, "student")
    assert result.auto["chosen"] == "none" and result.auto["student_alone"] == 0.9
    assert result.metrics == alone.metrics  # the baseline pilot, finished, is the student's own training


def test_auto_falls_back_when_the_finished_winner_ends_below_the_student_alone(tiny_split, trained, monkeypatch):
    run, teacher, alone, knowledge = trained
    monkeypatch.setattr(auto, "pilot_figure", lambda history, epochs, metric: (
        0.0 if history is alone.fit.history else 0.5))  # every pilot beats the student alone's pilot ...
    alone.fit.best_valid = {**alone.fit.best_valid, "ndcg@20": 2.0}  # ... but not its finished training
    result = distill(tiny_split, teacher, run, knowledge=knowledge, alone=alone)
    rec = result.auto
    assert rec["chosen"] == "none" and "finished below the student alone" in rec["reason"]
    assert rec["chosen_valid"] < 2.0 and result.model is alone.model and result.metrics == alone.metrics


def test_timings_of_a_kept_student_alone_count_only_the_pilots():
    """When auto keeps the student alone's training, the distilled phase did not train it again: its timings
    show the pilots, not the student's seconds a second time."""
    from rankdistill.pipeline import TrainedModel
    from rankdistill.train.trainer import FitResult

    fit = FitResult(3, {"ndcg@20": 0.1}, 100.0, [{"valid_seconds": 10.0}] * 3)
    kept = TrainedModel(None, fit, {}, auto={"reused_student_alone": True, "pilot_seconds": 7.0})
    assert kept.timings() == {"train": 0.0, "valid": 0.0, "test": 0.0, "auto_pilots": 7.0}
    trained = TrainedModel(None, fit, {}, auto={"pilot_seconds": 7.0})
    assert trained.timings() == {"train": 100.0, "valid": 30.0, "test": 0.0, "auto_pilots": 7.0}


def test_warm_start_starts_every_pilot_from_the_student_alone(tiny_split, trained, monkeypatch):
    """warm_start: the pilots (and so the winner) start from the student alone's weights, and the baseline is
    the student alone's best validation figure, where the pilots start, not its epoch-2 figure."""
    run, teacher, alone, knowledge = trained
    warm = replace(run, distill=replace(run.distill, warm_start=True))
    starts = []
    real = auto.make_trainer

    def spy(*args, **kwargs):
        trainer = real(*args, **kwargs)
        starts.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return trainer

    monkeypatch.setattr(auto, "make_trainer", spy)
    result = distill(tiny_split, teacher, warm, knowledge=knowledge, alone=alone)
    assert len(starts) == 2  # one trainer per pilot, in this process
    for start in starts:
        assert all(torch.equal(start[k], v) for k, v in alone.model.state_dict().items())
    assert result.auto["student_alone"] == pytest.approx(alone.fit.best_valid["ndcg@20"], abs=1e-6)
    cold = distill(tiny_split, teacher, run, knowledge=knowledge, alone=alone)
    assert result.auto["pilots"] != cold.auto["pilots"]  # a different start, different pilots


def test_warm_start_without_a_student_alone_starts_cold(tiny_split, trained):
    """The distill command has no student alone: warm_start then changes nothing."""
    run, teacher, _, knowledge = trained
    single = replace(run, distill=replace(run.distill, kd="listkl"))
    warm = replace(single, distill=replace(single.distill, warm_start=True))
    cold, warmed = (distill(tiny_split, teacher, r, knowledge=knowledge) for r in (single, warm))
    assert [h["valid"] for h in warmed.fit.history] == [h["valid"] for h in cold.fit.history]


def test_a_warm_checkpoint_is_not_resumed_from_another_start(tiny_split, trained, tmp_path):
    run, teacher, alone, knowledge = trained
    warm = replace(run, distill=replace(run.distill, kd="listkl", warm_start=True),
                   train=replace(run.train, epochs=1))
    distill(tiny_split, teacher, warm, knowledge=knowledge, alone=alone, out_dir=tmp_path)
    other = train_model(tiny_split, run.student, replace(run, seed=1), "student")  # another student alone
    with pytest.raises(RankdistillError, match=r"belongs to a different run \(init"):
        distill(tiny_split, teacher, warm, knowledge=knowledge, alone=other, out_dir=tmp_path)
