"""run(): the whole chain in one call.

data -> vocabulary -> split -> popularity baseline -> teacher (true labels) -> student alone (true labels)
-> the same student distilled from the teacher -> full-ranking test metrics of all -> report dict.
Model selection uses validation only; every model is evaluated on the same split and protocol.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.data.interactions import Interactions
from rankdistill.data.split import Split, make_split
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import evaluate
from rankdistill.models.base import Ranker
from rankdistill.models.factory import build_model
from rankdistill.models.popularity import Popularity
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective, supervised_options
from rankdistill.train import distributed
from rankdistill.train.callbacks import JsonlLog, Progress, TensorBoard
from rankdistill.train.trainer import FitResult, Trainer

REPORT_METRICS = ("ndcg", "recall", "mrr")
GAP_METRICS = ("ndcg@10", "ndcg@20", "recall@20")


@dataclass(frozen=True)
class RunConfig:
    # Defaults chosen on validation NDCG@20 (Gowalla and MovieLens 100K): benchmarks/results/teacher-recipes.md
    teacher: ModelConfig = ModelConfig(embedding_dim=128, lr=0.1, score="cosine", temperature=0.1)
    student: ModelConfig = ModelConfig(embedding_dim=16, lr=0.2, score="cosine", temperature=0.2)
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    ks: tuple[int, ...] = (10, 20)
    split: str | None = None  # None: the given split (LightGCN), else temporal leave-one-out with timestamps, else ratio
    split_ratio: str | tuple[float, float, float] | None = None  # --split ratio: train,valid,test shares (0.8,0.1,0.1)
    split_time: str | float | None = None  # --split time-cut: a date, seconds, or a quantile such as 0.9
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
    sizes: tuple[int, ...] = ()  # extra student embedding sizes, each trained alone and distilled


@dataclass
class TrainedModel:
    model: Ranker
    fit: FitResult | None
    metrics: dict[str, float]
    method: str | None = None
    fidelity: dict[str, float] | None = None  # overlap@k, kendall_tau@k against the teacher (students only)
    auto: dict | None = None  # --kd auto: what it tried, each pilot's validation figure, what it chose and why
    serving: dict | None = None  # bytes fp32/int8, ms to score and rank all items for one user, int8 metrics

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


def train_model(split: Split, model_config: ModelConfig, run: RunConfig, name: str, objective=None,
                out_dir: str | Path | None = None) -> TrainedModel:
    """Train one ranker with the true labels (or ``objective``) and evaluate it on the test split.

    With ``out_dir``: checkpoints in ``out_dir/checkpoints/<name>/`` (a re-run resumes from them), one JSON
    line per epoch in ``out_dir/train_log.jsonl``, TensorBoard scalars in ``out_dir/tensorboard/`` when
    tensorboard is installed.

    Under a process group (``torchrun``): torchrec's DistributedModelParallel shards the tables over the
    processes (:mod:`rankdistill.train.distributed`); every process returns the same result."""
    if distributed.active():
        return distributed.train_sharded(split, model_config, run, name, objective, out_dir)
    trainer = make_trainer(split, model_config, run, name, objective, out_dir)
    fit = trainer.fit()
    return TrainedModel(trainer.model, fit, evaluate(trainer.model, split, "test", run.ks, REPORT_METRICS))


def make_trainer(split: Split, model_config: ModelConfig, run: RunConfig, name: str, objective=None,
                 out_dir: str | Path | None = None) -> Trainer:
    """The single-process Trainer of :func:`train_model`, before it fits: a fresh model (seeded by ``run.seed``,
    so every model of one config starts from the same weights), the objective, callbacks and checkpoints."""
    graph = split.train if model_config.kind == "lightgcn" else None  # LightGCN propagates over it
    model = build_model(model_config, split.n_users, split.n_items, run.device, seed=run.seed, graph=graph)
    objective = objective or SupervisedObjective.from_config(run.train, split)
    callbacks = [] if run.quiet else [Progress(name)]
    checkpoints = None
    identity = {"model_config": asdict(model_config)}
    if isinstance(objective, DistillationObjective):
        identity["distill"] = run.distill.to_dict()
    if out_dir is not None:
        out_dir = Path(out_dir)
        callbacks += [JsonlLog(out_dir / "train_log.jsonl"), TensorBoard(out_dir / "tensorboard", name)]
        checkpoints = out_dir / "checkpoints" / name
    return Trainer(model, split, objective, _seeded(run.train, run.seed), name, callbacks, checkpoints, identity)


def distill(split: Split, teacher: Ranker | None, run: RunConfig, name: str = "distilled",
            knowledge: TeacherKnowledge | None = None, out_dir: str | Path | None = None,
            alone: TrainedModel | None = None) -> TrainedModel:
    """Train a student (``run.student``) on the true labels plus the distillation terms of ``run.distill``.

    ``--kd auto`` (:mod:`rankdistill.auto`) chooses the terms on validation with short pilots; ``alone``, the
    same student trained on the true labels with ``run``, is then its baseline and its fallback.

    ``teacher=None`` distils from ``knowledge`` alone (the cached top-K lists and scores), without the
    teacher's weights; losses that need the teacher's scores elsewhere or its embeddings refuse that."""
    if knowledge is None:
        if teacher is None:
            raise RankdistillError("distillation needs a teacher or its cached knowledge (TeacherKnowledge)")
        knowledge = TeacherKnowledge.compute(teacher, split, run.distill.topk)
    if run.distill.kd.strip() == "auto":
        from rankdistill.auto import distill_auto

        if distributed.active():
            raise RankdistillError("--kd auto runs its pilots in one process; under torchrun name the loss with --kd")
        return distill_auto(split, teacher, run, knowledge, name, out_dir, alone)
    objective = distillation_objective(split, teacher, knowledge, run)
    trained = train_model(split, run.student, run, name, objective, out_dir)
    trained.method = run.distill.kd
    return trained


def distillation_objective(split: Split, teacher: Ranker | None, knowledge: TeacherKnowledge,
                           run: RunConfig) -> DistillationObjective:
    """``run.train``'s supervised loss plus the terms of ``run.distill``, on ``run.device``."""
    return DistillationObjective(teacher, knowledge, run.distill, run.train.loss, run.train.l2, run.seed,
                                 **supervised_options(run.train, split))


def _seeded(train: TrainConfig, seed: int) -> TrainConfig:
    return replace(train, seed=seed)


def run(data: Interactions, config: RunConfig = RunConfig(), out_dir: str | Path | None = None) -> RunResult:
    """The whole chain; with ``out_dir`` every model checkpoints there and a re-run resumes."""
    start = time.perf_counter()
    split = make_split(data, config.split, config.seed, config.split_ratio, config.split_time)
    result = RunResult(data, split)
    pop = Popularity(split.train)
    result.models["popularity"] = TrainedModel(pop, None, evaluate(pop, split, "test", config.ks, REPORT_METRICS))
    result.models["teacher"] = train_model(split, config.teacher, config, "teacher", out_dir=out_dir)
    result.models["student"] = train_model(split, config.student, config, "student", out_dir=out_dir)
    teacher = result.models["teacher"].model
    knowledge = TeacherKnowledge.compute(teacher, split, config.distill.topk)
    result.models["distilled"] = distill(split, teacher, config, knowledge=knowledge, out_dir=out_dir,
                                         alone=result.models["student"])
    for dim in config.sizes:
        if dim == config.student.embedding_dim:
            result.sizes[dim] = (result.models["student"], result.models["distilled"])
            continue
        sized = replace(config, student=replace(config.student, embedding_dim=dim))
        alone = train_model(split, sized.student, sized, f"student@{dim}", out_dir=out_dir)
        taught = distill(split, teacher, sized, f"distilled@{dim}", knowledge, out_dir=out_dir, alone=alone)
        result.sizes[dim] = (alone, taught)
    add_fidelity(result, teacher, config.ks)
    from rankdistill.serving.cost import add_serving_cost

    add_serving_cost(result, config.ks, REPORT_METRICS)
    result.seconds = time.perf_counter() - start
    return result


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
    """(distilled − student) / (teacher − student) per metric; None when the teacher is not better."""
    out = {}
    for m in metrics:
        gap = teacher[m] - student[m]
        out[m] = round((distilled[m] - student[m]) / gap, 4) if gap > 0 else None
    return out


def config_dict(config: RunConfig) -> dict:
    d = asdict(config)
    d["distill"] = config.distill.to_dict()
    return d
