"""run(): the whole chain in one call.

data -> vocabulary -> split -> popularity baseline -> teacher (true labels) -> student alone (true labels)
-> the same student distilled from the teacher -> full-ranking test metrics of all -> report dict.
Model selection uses validation only; every model is evaluated on the same split and protocol.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig, knob
from rankdistill.data.interactions import Interactions
from rankdistill.data.split import Split, make_split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate, model_device
from rankdistill.models.base import Ranker, as_ranker
from rankdistill.models.factory import build_model
from rankdistill.models.popularity import Popularity
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective, supervised_options
from rankdistill.train import processes
from rankdistill.train.callbacks import JsonlLog, Progress, TensorBoard
from rankdistill.train.checkpoint import fingerprint
from rankdistill.train.trainer import FitResult, Trainer
from rankdistill.train.workers import checkpoint_home, resolve_workers, side_by_side

REPORT_METRICS = ("ndcg", "recall", "mrr")
GAP_METRICS = ("ndcg@10", "ndcg@20", "recall@20")


@dataclass(frozen=True)
class RunConfig:
    # Defaults chosen on validation NDCG@20 (Gowalla and MovieLens 100K): benchmarks/results/teacher-recipes.md
    teacher: ModelConfig = ModelConfig(embedding_dim=128, lr=0.1, score="cosine", temperature=0.1)
    student: ModelConfig = ModelConfig(embedding_dim=16, lr=0.2, score="cosine", temperature=0.1)
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    ks: tuple[int, ...] = knob((10, 20), "cut-offs of the test metrics")
    split: str | None = knob(None, "default: the data set's given split (LightGCN), else temporal leave-one-out "
                             "when there are timestamps, else ratio",
                             choices=("temporal-leave-one-out", "ratio", "time-cut", "given"))
    split_ratio: str | tuple[float, float, float] | None = knob(
        None, "shares TRAIN,VALID,TEST of each user's interactions for split ratio (0.8,0.1,0.1 when unset; "
        "seeded by seed)")
    split_time: str | float | None = knob(
        None, "split time-cut: a date (2020-06-01), seconds since 1970, or a quantile such as 0.9 (when unset); "
        "test is at or after the cut, validation as many interactions just before it")
    seed: int = knob(0, "seed of the initial weights, the batches and a ratio split")
    device: str = knob("auto", "where models, batches, evaluation and the teacher's knowledge live: cpu, cuda "
                       "(cuda:N in Python) or auto (CUDA when torch sees a GPU); stored resolved",
                       choices=("auto", "cpu", "cuda"))
    quiet: bool = knob(False, "no per-epoch lines")
    sizes: tuple[int, ...] = knob((), "extra student embedding sizes, each trained alone and distilled, e.g. "
                                  "4,8,16,32,64 (a plot of NDCG@20 against parameters goes into the run directory)")
    student_epochs: int | None = knob(None, "maximum epochs of the student trained alone (unset: twice --epochs): "
                                      "the baseline the distilled student is measured against and starts from "
                                      "trains to its early stop (a small student needs more epochs; it runs beside "
                                      "the teacher)")
    workers: int = knob(0, "processes that train independent models side by side (the teacher with the student "
                        "alone, then auto's pilots), each on --threads threads; the models are the same for any "
                        "number; 0: one per CPU core (at most 4) on a CPU with at least 50,000 training "
                        "interactions, else 1")

    def __post_init__(self) -> None:
        from rankdistill.device import resolve_device

        object.__setattr__(self, "device", str(resolve_device(self.device)))
        if self.workers < 0:
            raise RankdistillError(f"workers must be >= 0 (0: one per CPU core), got {self.workers}")
        if self.student_epochs is not None and self.student_epochs < 1:
            raise RankdistillError(f"student_epochs must be >= 1, got {self.student_epochs}")

    def alone(self) -> "RunConfig":
        """This run for the student trained alone: at most ``student_epochs`` epochs (unset: 2 × train.epochs)."""
        epochs = self.student_epochs if self.student_epochs is not None else 2 * self.train.epochs
        return replace(self, train=replace(self.train, epochs=epochs))


@dataclass
class TrainedModel:
    model: Ranker
    fit: FitResult | None
    metrics: dict[str, float]
    method: str | None = None
    fidelity: dict[str, float] | None = None  # overlap@k, kendall_tau@k against the teacher (students only)
    auto: dict | None = None  # --kd auto: what it tried, each pilot's validation figure, what it chose and why
    test_seconds: float = 0.0  # the full-ranking test evaluation
    serving: dict | None = None  # bytes fp32/int8, ms to score and rank all items for one user, int8 metrics

    def timings(self) -> dict[str, float]:
        """Seconds of training (validation included), of which validation, and of the test evaluation."""
        kept_alone = self.auto is not None and self.auto.get("reused_student_alone", False)  # fit: the student's
        fit = None if kept_alone else self.fit
        history = fit.history if fit else []
        out = {"train": round(fit.seconds, 2) if fit else 0.0,
               "valid": round(sum(h.get("valid_seconds", 0.0) for h in history), 2),
               "test": round(self.test_seconds, 2)}
        if self.auto is not None:
            out["auto_pilots"] = self.auto["pilot_seconds"]
        return out

    def summary(self) -> dict:
        out = {"params": self.model.num_parameters(), "embedding_dim": self.model.embedding_dim,
               "train_seconds": round(self.fit.seconds, 2) if self.fit else 0.0,
               "best_epoch": self.fit.best_epoch if self.fit else 0,
               "metrics": {k: round(v, 6) for k, v in self.metrics.items()}}
        if self.method:
            out["method"] = self.method
        if self.auto is not None:
            out["auto"] = self.auto
        if self.fidelity is not None:
            out["fidelity"] = {k: round(v, 6) for k, v in self.fidelity.items()}
        if self.serving is not None:
            out["serving"] = self.serving
        return out


@dataclass
class RunResult:
    data: Interactions
    split: Split
    models: dict[str, TrainedModel] = field(default_factory=dict)
    sizes: dict[int, tuple[TrainedModel, TrainedModel]] = field(default_factory=dict)  # dim -> (alone, distilled)
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # phase -> seconds (a model: its TrainedModel.timings())


def train_model(split: Split, model_config: ModelConfig, run: RunConfig, name: str, objective=None,
                out_dir: str | Path | None = None, init_state: dict | None = None) -> TrainedModel:
    """Train one ranker with the true labels (or ``objective``) and evaluate it on the test split.

    With ``out_dir``: checkpoints in ``out_dir/checkpoints/<name>/`` (a re-run resumes from them), one JSON
    line per epoch in ``out_dir/train_log.jsonl``, TensorBoard scalars in ``out_dir/tensorboard/`` when
    tensorboard is installed.

    Under a process group (``torchrun``): torchrec's DistributedModelParallel shards the tables over the
    processes (:mod:`rankdistill.train.sharded_engine`); every process must call it and returns the same
    result (the test metrics computed on rank 0)."""
    trainer = make_trainer(split, model_config, run, name, objective, out_dir, init_state)
    fit = trainer.fit()
    model = trainer.engine.trained_model()
    return test_evaluated(model, fit, split, run)


def test_evaluated(model: Ranker, fit: FitResult | None, split: Split, run: RunConfig, **fields) -> TrainedModel:
    """A trained model with its full-ranking test metrics (computed on rank 0 under a process group) and the
    seconds they took."""
    t0 = time.perf_counter()
    metrics = processes.on_main(lambda: evaluate(model, split, "test", run.ks, REPORT_METRICS))
    return TrainedModel(model, fit, metrics, test_seconds=time.perf_counter() - t0, **fields)


def make_trainer(split: Split, model_config: ModelConfig, run: RunConfig, name: str, objective=None,
                 out_dir: str | Path | None = None, init_state: dict | None = None) -> Trainer:
    """The Trainer of :func:`train_model`, before it fits: a fresh model (seeded by ``run.seed``, so every
    model of one config starts from the same weights; ``init_state``: from these weights instead, a
    state_dict of the same config, recorded in the checkpoint's identity), the objective, callbacks and
    checkpoints; under a process group, the sharded engine over it (only rank 0 logs and prints)."""
    main = processes.is_main_process()
    log = Path(out_dir) / "train_log.jsonl" if out_dir is not None else None
    if processes.active():
        from rankdistill.train.sharded_engine import ShardedEngine, refuse_unshardable

        if init_state is not None:
            raise RankdistillError("warm_start is not supported under torchrun (sharded tables); turn it off")
        objective = objective or SupervisedObjective.from_config(run.train, split, device=run.device)
        refuse_unshardable(model_config, objective)
        model = ShardedEngine(split, model_config, run.seed, run.train.batch_size, name, log=log, quiet=run.quiet)
    else:
        graph = split.train if model_config.kind == "lightgcn" else None  # LightGCN propagates over it
        model = build_model(model_config, split.n_users, split.n_items, run.device, seed=run.seed, graph=graph)
        if init_state is not None:
            model.load_state_dict(init_state)
        objective = objective or SupervisedObjective.from_config(run.train, split, device=run.device)
    callbacks = [] if run.quiet or not main else [Progress(name)]
    identity = {"model_config": asdict(model_config)}
    if init_state is not None:  # a resume must start from the same weights
        identity["init"] = fingerprint(*init_state.values())
    if isinstance(objective, DistillationObjective):
        identity["distill"] = run.distill.to_dict()
        identity["teacher"] = objective.source_identity()  # weights or knowledge, online or cached
    checkpoints = None
    if out_dir is not None:
        if main:
            callbacks += [JsonlLog(log), TensorBoard(Path(out_dir) / "tensorboard", name)]
        checkpoints = Path(out_dir) / "checkpoints" / name
    return Trainer(model, split, objective, _seeded(run.train, run.seed), name, callbacks, checkpoints, identity)


def distill(split: Split, teacher: Ranker | None, run: RunConfig, name: str = "distilled",
            knowledge: TeacherKnowledge | None = None, out_dir: str | Path | None = None,
            alone: TrainedModel | None = None, workers: int = 1,
            teacher_config: ModelConfig | None = None) -> TrainedModel:
    """Train a student (``run.student``) on the true labels plus the distillation terms of ``run.distill``.

    ``--kd auto`` (:mod:`rankdistill.auto`) chooses the terms on validation with short pilots; ``alone``, the
    same student trained on the true labels with ``run.alone()``, is then its baseline and its fallback. Its pilots
    run side by side in ``workers`` processes when the workers can rebuild the teacher: it was built by
    ``build_model(teacher_config, ...)`` (as in :func:`run`), or there is none (cached knowledge).

    ``teacher=None`` distils from ``knowledge`` alone (the cached top-K lists and scores), without the
    teacher's weights; losses that need the teacher's scores elsewhere or its embeddings refuse that."""
    teacher = None if teacher is None else as_ranker(teacher, "teacher")  # a loaded model directory works too
    if teacher is not None and model_device(teacher) != torch.device(run.device):
        raise RankdistillError(f"the teacher is on {model_device(teacher)} but the student trains on {run.device}; "
                               f"load the teacher there (rankdistill.load(path, {run.device!r})) or set "
                               "RunConfig(device=...) to the teacher's device")
    if knowledge is None:
        if teacher is None:
            raise RankdistillError("distillation needs a teacher or its cached knowledge (TeacherKnowledge)")
        knowledge = TeacherKnowledge.compute(teacher, split, run.distill.topk)
    init = warm_start_state(run, alone)
    if run.distill.kd.strip() == "auto":
        from rankdistill.auto import distill_auto

        if processes.active():
            raise RankdistillError("--kd auto runs its pilots in one process; under torchrun name the loss with --kd")
        return distill_auto(split, teacher, run, knowledge, name, out_dir, alone, workers, teacher_config, init)
    objective = distillation_objective(split, teacher, knowledge, run)
    trained = train_model(split, run.student, run, name, objective, out_dir, init)
    trained.method = run.distill.kd
    return trained


def warm_start_state(run: RunConfig, alone: TrainedModel | None) -> dict | None:
    """``run.distill.warm_start`` with ``alone`` (the same student trained alone with ``run.alone()``, its best epoch
    restored): its weights, where the distilled student starts; else None, the shared random start (the
    ``distill`` command, which has no student alone, starts there)."""
    if not run.distill.warm_start or alone is None or alone.fit is None:
        return None
    return {k: v.detach().clone() for k, v in alone.model.state_dict().items()}


def distillation_objective(split: Split, teacher: Ranker | None, knowledge: TeacherKnowledge,
                           run: RunConfig) -> DistillationObjective:
    """``run.train``'s supervised loss plus the terms of ``run.distill``, on ``run.device`` (the knowledge moves
    there, also when it was read from a file)."""
    return DistillationObjective(teacher, knowledge, run.distill, run.train.loss, run.train.l2, run.seed,
                                 device=run.device, **supervised_options(run.train, split, run.device))


def _seeded(train: TrainConfig, seed: int) -> TrainConfig:
    return replace(train, seed=seed)


def run(data: Interactions, config: RunConfig = RunConfig(), out_dir: str | Path | None = None) -> RunResult:
    """The whole chain; with ``out_dir`` every model checkpoints there and a re-run resumes. ``timings`` records
    where the time went (each phase is also printed unless ``config.quiet``)."""
    start = time.perf_counter()
    clock = _PhaseClock(config.quiet)
    with clock("split"):
        split = make_split(data, config.split, config.seed, config.split_ratio, config.split_time)
    result = RunResult(data, split, timings=clock.seconds)
    with clock("popularity"):
        pop = Popularity(split.train)
        result.models["popularity"] = TrainedModel(pop, None, evaluate(pop, split, "test", config.ks, REPORT_METRICS))
    workers = resolve_workers(config.workers, config.device, len(split.train.indices))
    with checkpoint_home(out_dir, workers) as out_dir:
        _train_alone(result, config, clock, workers, out_dir)
        teacher = result.models["teacher"].model
        with clock("knowledge"):
            knowledge = TeacherKnowledge.compute(teacher, split, config.distill.topk)
        with clock("distilled", lambda: result.models["distilled"].timings()):
            result.models["distilled"] = distill(split, teacher, config, knowledge=knowledge, out_dir=out_dir,
                                                 alone=result.models["student"], workers=workers,
                                                 teacher_config=config.teacher)
        _train_sizes(result, config, clock, teacher, knowledge, out_dir)
    with clock("fidelity"):
        add_fidelity(result, teacher, config.ks)
    from rankdistill.serving.cost import add_serving_cost

    with clock("serving cost"):
        add_serving_cost(result, config.ks, REPORT_METRICS)
    result.seconds = time.perf_counter() - start
    return result


def _train_alone(result: RunResult, config: RunConfig, clock: "_PhaseClock", workers: int,
                 out_dir: str | Path | None) -> None:
    """The teacher and the student on the true labels: one after the other, or side by side in ``workers``
    processes. Side by side, each model's phase holds its own seconds (training and test evaluation) and one
    more row what running side by side saved (negative; on small data the workers' start can cost more), so
    the phases still add up to the wall time."""
    split = result.split
    models = (("teacher", config.teacher, config), ("student", config.student, config.alone()))
    if workers == 1:
        for name, model_config, run in models:
            with clock(name, lambda: result.models[name].timings()):
                result.models[name] = train_model(split, model_config, run, name, out_dir=out_dir)
        return
    t0 = time.perf_counter()
    side_by_side([(train_to_end, (split, model_config, run, name, out_dir)) for name, model_config, run in models],
                 workers)
    own = 0.0
    for name, model_config, run in models:  # each resumes from its finished checkpoint: no training here
        result.models[name] = train_model(split, model_config, run, name, out_dir=out_dir)
        t = result.models[name].timings()
        own += clock.record(name, {"total": round(t["train"] + t["test"], 2), **t})
    clock.record(f"side by side ({workers} workers)", round(time.perf_counter() - t0 - own, 2))


def train_to_end(split: Split, model_config: ModelConfig, run: RunConfig, name: str, out_dir: str | Path) -> None:
    """A worker's job: train one model to its end, leaving its finished checkpoint in ``out_dir``."""
    make_trainer(split, model_config, run, name, None, out_dir).fit()


def _train_sizes(result: RunResult, config: RunConfig, clock: "_PhaseClock", teacher: Ranker,
                 knowledge: TeacherKnowledge, out_dir: str | Path | None) -> None:
    """``--sizes``: each extra student size trained alone and distilled."""
    split = result.split
    for dim in config.sizes:
        if dim == config.student.embedding_dim:
            result.sizes[dim] = (result.models["student"], result.models["distilled"])
            continue
        sized = replace(config, student=replace(config.student, embedding_dim=dim))
        with clock(f"sizes@{dim}"):
            alone = train_model(split, sized.student, sized.alone(), f"student@{dim}", out_dir=out_dir)
            taught = distill(split, teacher, sized, f"distilled@{dim}", knowledge, out_dir=out_dir, alone=alone)
        result.sizes[dim] = (alone, taught)


class _PhaseClock:
    """``with clock(name[, detail]):`` times a phase into ``seconds[name]`` (with ``detail()``: a dict, its
    ``total`` the phase's seconds) and prints it unless quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.seconds = quiet, {}

    @contextmanager
    def __call__(self, name: str, detail=None):
        t0 = time.perf_counter()
        yield
        total = round(time.perf_counter() - t0, 2)
        self.record(name, {"total": total, **detail()} if detail else total)

    def record(self, name: str, value: float | dict) -> float:
        """Records a phase measured elsewhere (a dict: its ``total`` the seconds) -> its seconds."""
        self.seconds[name] = value
        total = value["total"] if isinstance(value, dict) else value
        if not self.quiet:
            print(f"[{name}] {total:.1f} s", flush=True)
        return total


def add_fidelity(result: RunResult, teacher: Ranker, ks: tuple[int, ...]) -> None:
    """Overlap@k and Kendall tau@k of every student (alone and distilled) against the teacher, on the test
    users with the test masking; the teacher's top-K is computed once."""
    from rankdistill.evaluation.fidelity import fidelity, teacher_ranking

    reference = teacher_ranking(teacher, result.split, "test", max(ks))
    students = [result.models[n] for n in ("student", "distilled") if n in result.models]
    students += [m for pair in result.sizes.values() for m in pair if all(m is not s for s in students)]
    for trained in students:
        trained.fidelity = fidelity(teacher, trained.model, result.split, "test", ks, reference=reference)


def gap_recovered(teacher: dict[str, float], student: dict[str, float], distilled: dict[str, float],
                  metrics: tuple[str, ...] = GAP_METRICS) -> dict[str, float | None]:
    """(distilled − student) / (teacher − student) per metric; None when the teacher is not better. Metrics the
    run did not compute (``--ks 10`` has no @20) are left out; with none of ``metrics`` left, every NDCG and
    recall the three share."""
    shared = [m for m in teacher if m in student and m in distilled]
    chosen = [m for m in metrics if m in shared] or [m for m in shared if m.split("@")[0] in ("ndcg", "recall")]
    out = {}
    for m in chosen:
        gap = teacher[m] - student[m]
        out[m] = round((distilled[m] - student[m]) / gap, 4) if gap > 0 else None
    return out


def config_dict(config: RunConfig) -> dict:
    d = asdict(config)
    d["distill"] = config.distill.to_dict()
    d["student_epochs"] = config.alone().train.epochs  # the cap the student alone trained under
    return d
