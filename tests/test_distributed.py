"""Sharded training (torchrec's DistributedModelParallel, 2 gloo processes on the CPU) against one process.

Two torchrun launches serve every test (module fixtures), plus one that must be refused:

- the workers of this file (``python tests/test_distributed.py worker OUT``): one sharded step of a model
  with towers and one of a distillation (MLP student, frozen teacher), each compared here with the same step
  of the single-process Trainer on the same global batch; a ``hint`` step, whose projection weights live in
  the objective (outside DDP) and must stay identical on both ranks; and a sharded run interrupted after
  epoch 2 and resumed, compared with an uninterrupted sharded run; a run whose loss turns NaN in epoch 2;
- ``torchrun -m rankdistill train`` against ``rankdistill train`` in one process: same metrics, the sharding
  plan in the run log; then the same command with another number of processes, which must be refused.

Why the step is equal: the one training loop (``Trainer``) runs with the sharded engine; each rank takes its
contiguous share (b_r rows) of the single-process batch of B rows and scales its loss by b_r·W/B; DDP (dense
weights) and torchrec (table rows, ``set_gradient_division``) average gradients over the W ranks, so every
gradient is the global batch mean. B is odd, so the two ranks get different row counts. Means over masked
entries (``mse``, ``soft_bce``) and over pairs (``margin_mse``, ``ranknet``) divide by the whole batch's count
(``losses._masking.batch_share``), so every term that is a mean over the batch's rows or their masked entries,
plus terms of the shared negatives alone (the supervised losses, L2, listkl, ...), is exact (EXACT_KD);
``hint`` averages over rows and shared negatives together, a local mean on each rank as in any data-parallel
training, so it is close, not equal (a test says how close); so are in-batch negatives (each rank's are the
positives of its own rows) and BSL (it pools a user's positives over its rank's rows only). A loss that turns non-finite restores the best
weights on every rank, as in one process.
Every launch must exit with status 0, without an abort, and leave no process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.data.interactions import Interactions
from rankdistill.data.split import make_split
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.models.factory import build_model
from rankdistill.train.callbacks import Callback
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective, supervised_options
from helpers import nan_at_epoch2_step3
from rankdistill.train.trainer import Trainer

WORLD = 2
DATA = SyntheticConfig(users=120, items=80, interactions=2400, genres=10, taste_dim=8, seed=5)
TOWERS = ModelConfig(embedding_dim=8, tower_layers=(8,), lr=0.1)
STUDENT = ModelConfig(kind="mlp", embedding_dim=4, mlp_layers=(8,), lr=0.2)
# bce: every dense weight gets a real gradient (under softmax a shared bias gets ~1e-9 of rounding noise,
# which Adam's first step turns into a full-size move of either sign)
STEP = TrainConfig(batch_size=301, negatives=16, loss="bce", l2=0.01, seed=1)
KD = DistillConfig(kd="listkl", topk=10, topk_samples=4)
HINT = DistillConfig(kd="hint", topk=10, topk_samples=4)
# every distillation term whose reduction is a mean over rows or over masked entries of the rows (the global
# count: losses._masking.batch_share), plus terms of the shared negatives alone: a sharded step is exact
EXACT_KD = ("mse", "soft_bce", "margin_mse", "ranknet", "listmle", "rrd", "rd")
# listmle: float rounding of the gradient sums, made larger by row-wise Adagrad's first step on the few table
# rows whose gradient nearly cancels (7 of 480 entries differ, by at most 3e-6; a per-rank denominator moves
# every row of a rank)
EXACT_KD_ATOL = {"listmle": 1e-5}
RESUME = TrainConfig(epochs=3, batch_size=512, negatives=16, l2=0.01, patience=10, seed=2)
CLOSE_GAP = 0.05  # largest weight difference after one step of a close-not-equal term, sharded vs one process
LAUNCH_TIMEOUT = 240
pytestmark = pytest.mark.slow  # every test here waits on a torchrun launch
ABORT_SIGNS = ("terminate called", "Aborted", "SIGABRT", "core dumped", "Signal 6")


def _kd(name):
    return DistillConfig(kd=name, topk=10, topk_samples=4, rd_k=3)


def _in_batch_objective(split):
    """bce over the shared negatives and the batch's other positives (logQ-corrected)."""
    return SupervisedObjective(STEP.loss, STEP.l2, **supervised_options(replace(STEP, in_batch_negatives=True), split))


def _split():
    return make_split(Interactions.from_frame(make_synthetic(DATA), "tiny"))


def _distill_objective(split, kd=KD):
    teacher = build_model(TOWERS, split.n_users, split.n_items, seed=7)
    knowledge = TeacherKnowledge.compute(teacher, split, kd.topk)
    return DistillationObjective(teacher, knowledge, kd, STEP.loss, STEP.l2, seed=3)


# -- the workers (run by torchrun, not by pytest) -------------------------------------------------------------

class _Crash(Callback):
    def on_epoch_end(self, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # a crash after epoch 2's work, before its checkpoint (on every rank)


def _sharded(split, model_config, objective, config, checkpoints=None, callbacks=()):
    """The one Trainer with the sharded engine (model seed 0, as the single-process reference)."""
    from rankdistill.train.sharded_engine import ShardedEngine

    engine = ShardedEngine(split, model_config, 0, config.batch_size, "m", torch.device("cpu"))
    return Trainer(engine, split, objective, config, "m", list(callbacks), checkpoints, {})


def _sharded_fit(trainer):
    """-> (the full state after fit, the best weights restored, on rank 0; the fit's record)."""
    from rankdistill.train.sharding import gather_full_state

    fit = trainer.fit()
    return gather_full_state(trainer.engine.model), fit


def _sharded_step(split, model_config, objective):
    import torch.distributed as dist

    from rankdistill.train.sharding import gather_full_state

    trainer = _sharded(split, model_config, objective, STEP)
    users, pos, negs, total = next(trainer.shares())
    parts = {k: float(v) for k, v in trainer.train_step(users, pos, negs, total).items()}
    own = {k: v.clone() for k, v in objective.state_dict().items() if not k.startswith("teacher.")}
    owns = [None] * WORLD
    dist.all_gather_object(owns, own)  # the objective's own weights on every rank
    return {"state": gather_full_state(trainer.engine.model), "parts": parts, "rows": len(users), "objective": owns}


class _KeepEpoch1(Callback):
    """The sharded model's full state at the end of epoch 1 (every rank calls the gather)."""

    def __init__(self):
        self.trainer, self.state = None, None

    def on_epoch_end(self, record):
        from rankdistill.train.sharding import gather_full_state

        if record["epoch"] == 1:
            self.state = gather_full_state(self.trainer.engine.model)


def _non_finite(split):
    """A sharded run whose loss turns NaN at epoch 2: the error, the weights it leaves, epoch 1's weights."""
    from rankdistill.errors import RankdistillError
    from rankdistill.train.sharding import gather_full_state

    keep = _KeepEpoch1()
    trainer = _sharded(split, TOWERS, nan_at_epoch2_step3(RESUME.loss, RESUME.l2), RESUME, callbacks=[keep])
    keep.trainer = trainer
    try:
        trainer.fit()
        error = None
    except RankdistillError as e:
        error = str(e)
    return {"error": error, "state": gather_full_state(trainer.engine.model), "epoch1": keep.state}


def _worker(out: Path) -> None:
    import torch.distributed as dist

    from rankdistill.train import processes

    processes.init_process_group()
    try:
        torch.set_num_threads(1)
        split = _split()
        results = {"supervised": _sharded_step(split, TOWERS, SupervisedObjective(STEP.loss, STEP.l2)),
                   "distill": _sharded_step(split, STUDENT, _distill_objective(split)),
                   "hint": _sharded_step(split, STUDENT, _distill_objective(split, HINT))}
        results["in_batch"] = _sharded_step(split, TOWERS, _in_batch_objective(split))
        results["bsl"] = _sharded_step(split, TOWERS, SupervisedObjective("bsl", STEP.l2))
        for kd in EXACT_KD:
            results[f"kd:{kd}"] = _sharded_step(split, STUDENT, _distill_objective(split, _kd(kd)))
        rows = [None] * WORLD
        dist.all_gather_object(rows, (results["supervised"]["rows"], results["distill"]["rows"]))
        results["rows"] = rows
        objective = lambda: SupervisedObjective("softmax", RESUME.l2)  # noqa: E731
        reference_state, reference_fit = _sharded_fit(_sharded(split, TOWERS, objective(), RESUME))
        try:
            _sharded(split, TOWERS, objective(), RESUME, out / "ckpt", [_Crash()]).fit()
        except KeyboardInterrupt:
            pass
        state, fit = _sharded_fit(_sharded(split, TOWERS, objective(), RESUME, out / "ckpt"))
        results["resume"] = {"state": state, "history": fit.history, "resumed_from": fit.resumed_from_epoch,
                             "reference_state": reference_state, "reference_history": reference_fit.history}
        results["non_finite"] = _non_finite(split)
        if dist.get_rank() == 0:
            torch.save(results, out / "results.pt")
    except BaseException:
        traceback.print_exc()
        processes.clean_exit(1)
    processes.clean_exit(0)


# -- launching ------------------------------------------------------------------------------------------------

def _torchrun(args: list[str], nproc: int = WORLD, env: dict | None = None) -> subprocess.CompletedProcess:
    """torchrun --standalone with ``nproc`` processes; its whole process group is killed on timeout, and none
    of its processes may outlive it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "RANKDISTILL_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT} s:\n{output[-4000:]}")
    _assert_no_process_left(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, output, "")


def _assert_no_process_left(group: int) -> None:
    for _ in range(50):
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    pytest.fail("a torchrun worker outlived its launcher")


def _assert_clean(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-4000:]
    assert not [s for s in ABORT_SIGNS if s in result.stdout], result.stdout[-4000:]


@pytest.fixture(scope="module")
def split():
    return _split()


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    _assert_clean(_torchrun([__file__, "worker", str(out)]))
    return torch.load(out / "results.pt", weights_only=False)


def _single_step(split, model_config, objective):
    """The reference: the single-process Trainer's first batch, one step (its own dense optimizer)."""
    model = build_model(model_config, split.n_users, split.n_items, seed=0)
    trainer = Trainer(model, split, objective, STEP)
    users, pos, negs = next(trainer.batches())
    loss, parts = objective(model, users, pos, negs)
    trainer.dense_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.dense_optimizer.step()
    return model.state_dict(), {k: float(v) for k, v in parts.items()}


def _assert_same_state(sharded: dict, single: dict, initial: dict, atol: float = 1e-6) -> None:
    assert sharded.keys() == single.keys()
    for k in single:
        assert not torch.equal(single[k], initial[k]), f"{k} did not move: the comparison would prove nothing"
        torch.testing.assert_close(sharded[k], single[k], rtol=0, atol=atol, msg=lambda m: f"{k}: {m}")


# -- the tests -------------------------------------------------------------------------------------------------

def test_ranks_share_an_odd_batch_unevenly(worker_results):
    assert worker_results["rows"] == [(150, 150), (151, 151)]  # 301 rows: 150 on rank 0, 151 on rank 1


def test_one_step_equals_single_process_step(worker_results, split):
    initial = build_model(TOWERS, split.n_users, split.n_items, seed=0).state_dict()
    single, parts = _single_step(split, TOWERS, SupervisedObjective(STEP.loss, STEP.l2))
    _assert_same_state(worker_results["supervised"]["state"], single, initial)
    assert worker_results["supervised"]["parts"] == pytest.approx(parts, rel=1e-5)


def test_one_distillation_step_equals_single_process_step(worker_results, split):
    """A student with an MLP and a frozen teacher on every rank."""
    initial = build_model(STUDENT, split.n_users, split.n_items, seed=0).state_dict()
    single, parts = _single_step(split, STUDENT, _distill_objective(split))
    _assert_same_state(worker_results["distill"]["state"], single, initial)
    assert set(parts) == {"bce", "l2", "listkl"}
    assert worker_results["distill"]["parts"] == pytest.approx(parts, rel=1e-5)


def test_objective_weights_stay_identical_on_every_rank(worker_results):
    """``hint``'s projections are the objective's, outside DDP: their gradients are averaged by hand."""
    rank0, rank1 = worker_results["hint"]["objective"]
    assert any(".proj." in k for k in rank0)
    for k, v in rank0.items():
        assert torch.equal(v, rank1[k]), k
    assert worker_results["hint"]["parts"]["hint"] > 0


def test_resume_after_crash_equals_uninterrupted_sharded_run(worker_results):
    r = worker_results["resume"]
    assert r["resumed_from"] == 1
    assert [h["valid"] for h in r["history"]] == [h["valid"] for h in r["reference_history"]]
    for k, v in r["reference_state"].items():
        assert torch.equal(r["state"][k], v), k


@pytest.mark.parametrize("kd", EXACT_KD)
def test_one_step_of_each_exact_distillation_loss_equals_single_process_step(worker_results, split, kd):
    """Masked means (mse, soft_bce), pair counts (margin_mse, ranknet) and row means divide by the whole
    batch's count on every rank, so rows with different numbers of real candidates still give the same step."""
    initial = build_model(STUDENT, split.n_users, split.n_items, seed=0).state_dict()
    single, parts = _single_step(split, STUDENT, _distill_objective(split, _kd(kd)))
    _assert_same_state(worker_results[f"kd:{kd}"]["state"], single, initial, EXACT_KD_ATOL.get(kd, 1e-6))
    assert worker_results[f"kd:{kd}"]["parts"] == pytest.approx(parts, rel=1e-5)


def test_hint_step_is_close_to_but_not_equal_to_single_process_step(worker_results, split):
    """The documented difference: hint averages the item term over each rank's rows and the S shared negatives
    together, so every rank counts the shared negatives once (W times in all)."""
    single, parts = _single_step(split, STUDENT, _distill_objective(split, HINT))
    sharded = worker_results["hint"]["state"]
    gaps = {k: float((sharded[k] - single[k]).abs().max()) for k in single}
    assert max(gaps.values()) > 1e-5, gaps
    assert max(gaps.values()) < CLOSE_GAP, gaps
    assert worker_results["hint"]["parts"]["hint"] != pytest.approx(parts["hint"], rel=1e-5)


def _gap(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in b)


def test_in_batch_negatives_step_is_close_to_but_not_equal_to_single_process_step(worker_results, split):
    """The documented difference: each rank's in-batch negatives are the positives of its own rows. They are
    on under the sharded engine (the step is nearer the one-process step with them than without them)."""
    with_them, _ = _single_step(split, TOWERS, _in_batch_objective(split))
    without, _ = _single_step(split, TOWERS, SupervisedObjective(STEP.loss, STEP.l2))
    sharded = worker_results["in_batch"]["state"]
    assert 1e-5 < _gap(sharded, with_them) < _gap(sharded, without)


def test_bsl_step_is_close_to_but_not_equal_to_single_process_step(worker_results, split):
    """The documented difference: BSL pools the positives of a user's rows on each rank's share only."""
    single, _ = _single_step(split, TOWERS, SupervisedObjective("bsl", STEP.l2))
    gap = _gap(worker_results["bsl"]["state"], single)
    assert 1e-5 < gap < CLOSE_GAP


def test_non_finite_loss_restores_best_weights_on_every_rank(worker_results):
    r = worker_results["non_finite"]
    assert "non-finite at epoch 2, step 3" in r["error"]
    for k, v in r["epoch1"].items():
        assert torch.equal(r["state"][k], v), k


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """(sharded run's output, its model dir, the single-process model dir, the command's options)."""
    from rankdistill.cli import main

    root = tmp_path_factory.mktemp("cli")
    data = root / "tiny.parquet"
    assert main(["data", "synth", "--users", "150", "--items", "90", "--interactions", "3000", "--seed", "2",
                 "--out", str(data)]) == 0
    # in-batch negatives and BSL's pooling of a user's positives act on each process's share of the batch, so
    # only the softmax loss over shared negatives gives a sharded step equal to one process's step (README)
    options = ["--data", str(data), "--dim", "8", "--epochs", "3", "--batch-size", "256", "--negatives", "16",
               "--loss", "softmax", "--no-in-batch-negatives"]
    sharded = _torchrun(["-m", "rankdistill", "train", *options, "--out", str(root / "sharded")])
    assert main(["train", *options, "--quiet", "--out", str(root / "single")]) == 0
    return sharded, root / "sharded", root / "single", options


def test_cli_metrics_close_to_single_process(cli_runs):
    result, sharded, single, _ = cli_runs
    _assert_clean(result)
    assert "sharded over 2 processes (gloo)" in result.stdout
    got = json.loads((sharded / "metrics.json").read_text())["metrics"]
    want = json.loads((single / "metrics.json").read_text())["metrics"]
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-3), k


def test_cli_logs_sharding_plan_and_memory_per_rank(cli_runs):
    _, sharded, _, _ = cli_runs
    lines = [json.loads(line) for line in (sharded / "train_log.jsonl").read_text().splitlines()]
    plan = lines[0]
    assert plan["event"] == "sharding_plan" and plan["world_size"] == 2 and plan["backend"] == "gloo"
    assert sorted(t["table"] for t in plan["tables"]) == ["item", "user"]
    assert all(t["sharding_type"] in ("table_wise", "column_wise") and t["compute_kernel"] == "fused"
               for t in plan["tables"])
    rows = {t["table"]: sum(s["sizes"][0] * s["sizes"][1] for s in t["shards"]) for t in plan["tables"]}
    assert rows == {"user": 150 * 8, "item": 90 * 8}  # the shards cover each table exactly once
    assert [m["rank"] for m in plan["memory_per_rank"]] == [0, 1]
    assert sum(m["total_bytes"] for m in plan["memory_per_rank"]) >= (150 + 90) * 8 * 4
    assert [line["epoch"] for line in lines[1:]] == [1, 2, 3]


def test_resuming_with_another_world_size_is_refused(cli_runs):
    _, sharded, _, options = cli_runs
    result = _torchrun(["-m", "rankdistill", "train", *options, "--out", str(sharded)], nproc=1)
    assert result.returncode != 0
    assert "was written by a run of 2 processes and this run has 1 process;" in result.stdout
    assert not [s for s in ABORT_SIGNS if s in result.stdout], result.stdout[-4000:]


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(Path(sys.argv[2]))
