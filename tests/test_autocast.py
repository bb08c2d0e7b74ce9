"""bf16 autocast (CUDA only in use) wraps the student's forward alone: the teacher's online scores, the
shared negatives' teacher scores and dcd's re-ranking of the catalogue stay fp32. On the CPU the autocast path
is forced by replacing the Trainer's choice with ("cpu", bfloat16)."""

import pytest
import torch

import rankdistill.train.objectives as objectives
import rankdistill.train.trainer as trainer_module
from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.models.factory import build_model
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective
from rankdistill.train.trainer import Trainer, student_autocast
from helpers import tiny_student

CONFIG = TrainConfig(epochs=1, batch_size=1024, negatives=16, bf16=True)


def _autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu")


@pytest.fixture
def forced_cpu_bf16(monkeypatch):
    monkeypatch.setattr(trainer_module, "student_autocast", lambda bf16, device: ("cpu", torch.bfloat16))


def _record_forward(model, log: list, name: str):
    """Make ``model``'s forward log (name, dtype of its shared candidates' scores, autocast on). Those come
    from a matmul, which autocast runs in bf16 (short own lists are a multiply-sum, which it leaves in fp32)."""
    original = model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        scores = out.shared_scores if out.shared_scores is not None else out.own_scores
        log.append((name, scores.dtype, _autocast_on()))
        return out

    model.forward = forward


def _one_step(trainer):
    users, pos, negs, total = next(iter(trainer.shares()))
    return trainer.train_step(users, pos, negs, total)


def test_the_trainer_autocasts_only_on_cuda_when_asked():
    assert student_autocast(True, torch.device("cpu")) is None
    assert student_autocast(False, torch.device("cuda", 0)) is None
    assert student_autocast(True, torch.device("cuda", 0)) == ("cuda", torch.bfloat16)


def test_the_student_forward_runs_in_bf16_and_the_loss_in_fp32(forced_cpu_bf16, tiny_split):
    student, log, losses = tiny_student(tiny_split), [], []
    _record_forward(student, log, "student")
    objective = SupervisedObjective("softmax")
    original = objective.supervised
    objective.supervised = lambda fwd, *a, **k: (losses.append(fwd.shared_scores.dtype), original(fwd, *a, **k))[1]
    trainer = Trainer(student, tiny_split, objective, CONFIG)
    parts = _one_step(trainer)
    assert log == [("student", torch.bfloat16, True)]
    assert losses == [torch.float32] and all(v.dtype == torch.float32 for v in parts.values())


@pytest.mark.parametrize("kd", ["listkl", "hint"])  # the teacher's vectors (shared negatives too), its forward
def test_the_online_teacher_scores_stay_fp32(kd, forced_cpu_bf16, tiny_split):
    teacher = build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, k=20)
    log, seen = [], []
    student = tiny_student(tiny_split)
    _record_forward(student, log, "student")
    objective = DistillationObjective(teacher, knowledge, DistillConfig(kd=kd, topk=20, topk_samples=4))
    _record_forward(teacher, log, "teacher")
    term = objective.terms[kd]
    original = term.forward
    term.forward = lambda b: (seen.append((b.teacher.dtype, b.student.dtype, _autocast_on())), original(b))[1]
    _one_step(Trainer(student, tiny_split, objective, CONFIG))
    assert ("student", torch.bfloat16, True) in log
    assert all(dtype == torch.float32 and not on for name, dtype, on in log if name == "teacher")
    assert seen == [(torch.float32, torch.float32, False)]  # teacher (own and shared columns), student as compared


def test_dcd_reranks_the_catalogue_in_fp32(forced_cpu_bf16, tiny_split, monkeypatch):
    teacher = build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, k=20)
    calls = []
    original = objectives.rank_all

    def recorded(model, *args, **kwargs):
        calls.append(_autocast_on())
        out = original(model, *args, **kwargs)
        calls.append(out.scores.dtype)
        return out

    monkeypatch.setattr(objectives, "rank_all", recorded)
    objective = DistillationObjective(teacher, knowledge, DistillConfig(kd="dcd", topk=20, dcd_samples=4))
    _one_step(Trainer(tiny_student(tiny_split), tiny_split, objective, CONFIG))
    assert calls[:2] == [False, torch.float32]  # the student's re-ranking, outside the autocast
    assert calls[2:] == [False, torch.float32]  # the teacher's top-P (online dcd), once
