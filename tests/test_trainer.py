"""The training engine: determinism, checkpoints and resume, training control."""

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from rankdistill.config import ModelConfig, TrainConfig
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.factory import build_model
from rankdistill.train.callbacks import Callback, JsonlLog
from rankdistill.train.objectives import SupervisedObjective
from rankdistill.train.schedule import lr_factor
from rankdistill.train.trainer import Trainer

CFG = TrainConfig(epochs=4, batch_size=512, negatives=32, l2=0.01, patience=10, seed=1)


def _fit(split, tmp=None, callbacks=(), config=CFG, identity=None):
    model = build_model(ModelConfig(embedding_dim=8, lr=0.1), split.n_users, split.n_items, seed=0)
    trainer = Trainer(model, split, SupervisedObjective("softmax", config.l2), config, "m", list(callbacks),
                      checkpoint_dir=tmp, identity=identity)
    return model, trainer.fit()


def test_same_seed_same_metrics(tiny_split):
    a, _ = _fit(tiny_split)
    b, _ = _fit(tiny_split)
    assert evaluate(a, tiny_split) == evaluate(b, tiny_split)
    assert torch.equal(a.item_table.weight, b.item_table.weight)


class _Crash(Callback):
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_epoch_end(self, record):
        if record["epoch"] == self.at_epoch:
            raise KeyboardInterrupt  # stands in for a crash after this epoch's work, before its checkpoint


def test_resume_after_crash_equals_uninterrupted_run(tiny_split, tmp_path):
    ref, ref_fit = _fit(tiny_split)
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_split, tmp_path, [_Crash(3)])
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 2
    resumed, fit = _fit(tiny_split, tmp_path)
    assert fit.resumed_from_epoch == 2
    assert evaluate(resumed, tiny_split) == evaluate(ref, tiny_split)
    assert torch.equal(resumed.user_table.weight, ref.user_table.weight)
    assert [h["valid"] for h in fit.history] == [h["valid"] for h in ref_fit.history]


def test_finished_run_is_not_trained_again(tiny_split, tmp_path):
    first, _ = _fit(tiny_split, tmp_path)
    again, fit = _fit(tiny_split, tmp_path)
    assert fit.resumed_from_epoch == CFG.epochs
    assert torch.equal(first.item_table.weight, again.item_table.weight)


def test_checkpoint_of_other_config_is_refused(tiny_split, tmp_path):
    _fit(tiny_split, tmp_path)
    with pytest.raises(RankdistillError, match=r"different run \(train.batch_size: 512 -> 256"):
        _fit(tiny_split, tmp_path, config=replace(CFG, batch_size=256))


def test_checkpoint_of_other_data_is_refused(tiny_split, tmp_path):
    _fit(tiny_split, tmp_path)
    other = replace(tiny_split, train=tiny_split.valid, valid=tiny_split.train)
    with pytest.raises(RankdistillError, match=r"data.train"):
        _fit(other, tmp_path)


def test_checkpoint_write_is_atomic(tiny_split, tmp_path):
    _fit(tiny_split, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_non_finite_loss_stops_with_clear_message(tiny_split, tmp_path):
    class Explode(SupervisedObjective):
        def forward(self, model, users, pos, negs):
            loss, parts = super().forward(model, users, pos, negs)
            return loss * float("nan"), parts

    model = build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items)
    before = model.item_table.weight.clone()
    with pytest.raises(RankdistillError, match="non-finite at epoch 1, step 1"):
        Trainer(model, tiny_split, Explode(), CFG, "m", checkpoint_dir=tmp_path).fit()
    assert torch.equal(model.item_table.weight, before)  # the bad step never reached the tables


def test_non_finite_loss_restores_the_best_weights(tiny_split):
    """Epoch 2 moves the weights for two steps, then its loss turns NaN: the model goes back to epoch 1's
    weights (the best so far), as the sharded engine does (tests/test_distributed.py)."""
    import copy

    from helpers import nan_at_epoch2_step3

    class KeepEpoch1(Callback):
        def on_epoch_end(self, record):
            if record["epoch"] == 1:
                self.state = copy.deepcopy(model.state_dict())

    model = build_model(ModelConfig(embedding_dim=8, lr=0.1), tiny_split.n_users, tiny_split.n_items, seed=0)
    keep = KeepEpoch1()
    trainer = Trainer(model, tiny_split, nan_at_epoch2_step3("softmax", CFG.l2), CFG, "m", [keep])
    assert trainer.steps_per_epoch >= 3
    with pytest.raises(RankdistillError, match="non-finite at epoch 2, step 3"):
        trainer.fit()
    for k, v in keep.state.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_jsonl_log_has_one_line_per_epoch(tiny_split, tmp_path):
    _fit(tiny_split, callbacks=[JsonlLog(tmp_path / "log.jsonl")])
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4]
    assert {"loss", "valid", "train_seconds", "examples_per_second", "lr"} <= set(lines[0])


def test_early_stopping_restores_best_epoch(tiny_split):
    cfg = replace(CFG, epochs=30, patience=1)
    model, fit = _fit(tiny_split, config=cfg)
    assert len(fit.history) == fit.best_epoch + 1 or len(fit.history) == 30
    best = max(h["valid"]["ndcg@20"] for h in fit.history)
    assert evaluate(model, tiny_split, "valid", (20,), ("ndcg",))["ndcg@20"] == pytest.approx(best)


def test_lr_schedules():
    assert lr_factor("constant", 5, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("linear", 10, 10) == 0.0
    assert lr_factor("cosine", 0, 10, warmup_steps=4) == 0.25


def test_cosine_schedule_reaches_the_tables(tiny_split):
    cfg = replace(CFG, epochs=2, lr_schedule="cosine")
    _, fit = _fit(tiny_split, config=cfg)
    first, last = fit.history[0]["lr"][0], fit.history[-1]["lr"][0]
    assert last < first < 0.1  # cosine decay from the base lr 0.1, per step


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_report(tmp_path, tiny_frame):
    data = tmp_path / "log.csv"
    tiny_frame.to_csv(data, index=False)
    args = ["run", "--data", str(data), "--teacher-dim", "32", "--student-dim", "4", "--epochs", "6",
            "--patience", "6", "--batch-size", "256", "--negatives", "32", "--kd-topk", "20", "--kd-samples", "4",
            "--quiet"]
    cmd = [sys.executable, "-m", "rankdistill"]
    subprocess.run(cmd + args + ["--out", str(tmp_path / "ref")], check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + args + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "student" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    subprocess.run(cmd + args + ["--out", str(out)], check=True, capture_output=True)
    ref = json.loads((tmp_path / "ref" / "report.json").read_text())["models"]
    got = json.loads((out / "report.json").read_text())["models"]
    assert {k: v["metrics"] for k, v in got.items()} == {k: v["metrics"] for k, v in ref.items()}


def test_train_command_checkpoints_and_resumes(tmp_path, tiny_frame):
    from rankdistill.cli import main

    data = tmp_path / "log.csv"
    tiny_frame.to_csv(data, index=False)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "teacher"), "--dim", "8", "--epochs", "2",
            "--batch-size", "512", "--negatives", "32", "--quiet"]
    assert main(args) == 0
    ckpt = tmp_path / "teacher" / "checkpoints" / "teacher" / "last.pt"
    assert torch.load(ckpt, weights_only=False)["finished"]
    log = (tmp_path / "teacher" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 2
    first = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    assert main(args) == 0  # resumes from the finished checkpoint: no new epochs, same metrics
    assert len((tmp_path / "teacher" / "train_log.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "teacher" / "metrics.json").read_text()) == first


def test_paused_fit_then_continued_equals_uninterrupted_run(tiny_split):
    """A pilot (fit(stop_after=2)) continued by fit() ends exactly where an uninterrupted fit ends."""
    a, fit_a = _fit(tiny_split)
    model = build_model(ModelConfig(embedding_dim=8, lr=0.1), tiny_split.n_users, tiny_split.n_items, seed=0)
    trainer = Trainer(model, tiny_split, SupervisedObjective("softmax", CFG.l2), CFG, "m")
    pilot = trainer.fit(stop_after=2)
    assert [h["epoch"] for h in pilot.history] == [1, 2]
    assert torch.equal(trainer.model.item_table.weight, trainer.model.item_table.weight)
    fit_b = trainer.fit()
    assert [h["epoch"] for h in fit_b.history] == [1, 2, 3, 4]
    assert [h["valid"] for h in fit_b.history] == [h["valid"] for h in fit_a.history]
    assert fit_b.best_epoch == fit_a.best_epoch
    assert torch.equal(model.item_table.weight, a.item_table.weight)


def test_paused_fit_resumes_from_its_checkpoint_in_a_new_trainer(tiny_split, tmp_path):
    a, fit_a = _fit(tiny_split)
    model = build_model(ModelConfig(embedding_dim=8, lr=0.1), tiny_split.n_users, tiny_split.n_items, seed=0)
    Trainer(model, tiny_split, SupervisedObjective("softmax", CFG.l2), CFG, "m", checkpoint_dir=tmp_path).fit(
        stop_after=2)
    b, fit_b = _fit(tiny_split, tmp_path)
    assert [h["valid"] for h in fit_b.history] == [h["valid"] for h in fit_a.history]
    assert torch.equal(b.item_table.weight, a.item_table.weight)


def test_epochs_without_progress_counts_from_the_last_gain_that_counted():
    from rankdistill.train.trainer import epochs_without_progress

    values = [0.100, 0.1005, 0.1008, 0.1009, 0.1200, 0.1201]
    assert epochs_without_progress(values, 0.0) == 0  # every epoch gained
    assert epochs_without_progress(values[:4], 0.01) == 3  # 0.1009 < 0.100 * 1.01: three epochs of no progress
    assert epochs_without_progress(values, 0.01) == 1  # 0.12 counted; 0.1201 < 0.12 * 1.01
    assert epochs_without_progress([0.1, 0.09, 0.1], 0.0) == 2  # equal is not a gain
    assert epochs_without_progress([], 0.01) == 0


def test_min_delta_stops_a_slow_tail_but_keeps_the_best_weights(tiny_split, monkeypatch):
    """Validation scripted to creep up by 0.2% an epoch: with min_delta 0.01 and patience 2 training stops
    after epoch 3 and restores epoch 3's weights (the best, though its gain did not count); with min_delta 0
    it runs all 5 epochs."""
    from rankdistill.train.engine import LocalEngine

    scripted = [0.100, 0.1002, 0.1004, 0.1006, 0.1008]
    for min_delta, epochs in ((0.01, 3), (0.0, 5)):
        calls = iter(scripted)
        monkeypatch.setattr(LocalEngine, "validate", lambda self, split, k, metric: {f"{metric}@{k}": next(calls)})
        model = build_model(ModelConfig(embedding_dim=4), tiny_split.n_users, tiny_split.n_items, seed=2)
        config = TrainConfig(epochs=5, patience=2, min_delta=min_delta, batch_size=512, negatives=16)
        trainer = Trainer(model, tiny_split, SupervisedObjective("softmax"), config)
        fit = trainer.fit()
        assert len(fit.history) == epochs and fit.best_epoch == epochs
    with pytest.raises(RankdistillError, match="min_delta must be in"):
        TrainConfig(min_delta=-0.1)
