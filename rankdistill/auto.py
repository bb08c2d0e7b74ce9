"""``--kd auto``: choose the distillation method on validation with short pilot runs, then finish the winner.

Every spec of ``DistillConfig.auto_menu`` trains the same student (same config, same seed: the same initial
weights and the same batches) for ``auto_pilot_epochs`` epochs. The student trained alone on the true labels
is the baseline: in ``rankdistill run`` it is trained anyway, and its first epochs are exactly that pilot
(same start, same batches), so it costs nothing; otherwise it runs as one more pilot. A pilot's figure is its
best validation ``select_metric`` (NDCG@20 by default) over its epochs; test data is never looked at.

The winner is the pilot with the highest figure, provided it beats the student alone; it then continues
from where its pilot paused, to early stopping, exactly as if it had never paused. If no method beats the
student alone, or the finished winner's best validation figure falls below the student alone's, the result is
the student's own training, and the record says so. Cost: ``len(auto_menu) · auto_pilot_epochs`` pilot
epochs plus the rest of one run, about 2× a single distillation run when the run lasts ``(len(menu) − 1)
· auto_pilot_epochs`` epochs or more. With workers (``rankdistill run``'s default on a multi-core CPU) the
pilots run side by side: with 2 workers their wall time halves, and the winner resumes from its pilot's
checkpoint, with the same result as in one process.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rankdistill.config import ModelConfig
from rankdistill.data.split import Split
from rankdistill.models.base import Ranker
from rankdistill.models.factory import build_model
from rankdistill.pipeline import RunConfig, TrainedModel, distillation_objective, make_trainer, test_evaluated
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.trainer import Trainer
from rankdistill.train.workers import checkpoint_home, side_by_side

NONE = "none"


def pilot_figure(history: list[dict], epochs: int, metric: str) -> float:
    """The best validation ``metric`` over the first ``epochs`` epochs of a training history."""
    values = [h["valid"][metric] for h in history[:epochs]]
    return max(values) if values else float("-inf")


def distill_auto(split: Split, teacher: Ranker | None, run: RunConfig, knowledge: TeacherKnowledge,
                 name: str = "distilled", out_dir: str | Path | None = None,
                 alone: TrainedModel | None = None, workers: int = 1,
                 teacher_config: ModelConfig | None = None, init: dict | None = None) -> TrainedModel:
    """Pilots of every ``run.distill.auto_menu`` spec, the choice on validation, the winner finished.

    ``alone``: the same student already trained on the true labels with ``run.alone()`` (its history is the baseline
    pilot, and it is the result when no method beats it). ``workers`` > 1: the pilots run side by side in
    worker processes (:mod:`rankdistill.train.workers`) when the workers can rebuild the teacher (built by
    ``build_model(teacher_config, ...)``, or none); the models are the same either way. ``init`` (warm start):
    every pilot starts from these weights, those of ``alone``, whose best validation figure is then the
    baseline (a pilot continues from it, so it must beat where the student alone ended, not its epoch-2 figure).
    -> the chosen student, with ``.auto`` recording the menu, each pilot's validation figure, the baseline's,
    the choice and the reason."""
    start = time.perf_counter()
    d, metric, epochs = run.distill, run.train.select_metric, run.distill.auto_pilot_epochs
    specs = list(d.auto_menu) + ([] if alone is not None and alone.fit is not None else [NONE])
    if workers > 1 and (teacher is None or teacher_config is not None):
        recipe = None if teacher is None else (teacher_config, teacher.state_dict())
        with checkpoint_home(out_dir, workers) as home:
            histories = side_by_side([(pilot_history, (split, run, spec, f"{name}-auto-{spec}", home, recipe,
                                                       knowledge, init)) for spec in specs], workers)
            trainers = {spec: _ResumedPilot(split, teacher, knowledge, run, spec, f"{name}-auto-{spec}", home, init)
                        for spec in specs}  # each continues from its pilot's checkpoint when fitted
            return _choose(split, run, start, dict(zip(specs, histories)), trainers, alone, workers)
    histories, trainers = {}, {}
    for spec in specs:
        trainer = pilot_trainer(split, teacher, knowledge, run, spec, f"{name}-auto-{spec}", out_dir, init)
        histories[spec] = trainer.fit(stop_after=epochs).history
        trainers[spec] = trainer
    return _choose(split, run, start, histories, trainers, alone, 1)


def pilot_trainer(split: Split, teacher: Ranker | None, knowledge: TeacherKnowledge, run: RunConfig, spec: str,
                  name: str, out_dir: str | Path | None, init: dict | None = None) -> Trainer:
    """The trainer of one pilot: the student with ``spec``'s distillation terms (NONE: the true labels only),
    from ``init`` when given (warm start)."""
    spec_run = replace(run, distill=replace(run.distill, kd=spec))
    objective = None if spec == NONE else distillation_objective(split, teacher, knowledge, spec_run)
    return make_trainer(split, run.student, spec_run, name, objective, out_dir, init)


def pilot_history(split: Split, run: RunConfig, spec: str, name: str, out_dir: str | Path,
                  recipe: tuple[ModelConfig, dict] | None, knowledge: TeacherKnowledge,
                  init: dict | None = None) -> list[dict]:
    """A worker's job: one pilot's epochs, its checkpoint left in ``out_dir`` -> its history. ``recipe``: the
    teacher's config and weights (None: no teacher)."""
    teacher = None
    if recipe is not None:
        config, state = recipe
        graph = split.train if config.kind == "lightgcn" else None
        teacher = build_model(config, split.n_users, split.n_items, run.device, seed=run.seed, graph=graph)
        teacher.load_state_dict(state)
    trainer = pilot_trainer(split, teacher, knowledge, run, spec, name, out_dir, init)
    return trainer.fit(stop_after=run.distill.auto_pilot_epochs).history


class _ResumedPilot:
    """A pilot trained in a worker: :meth:`fit` builds its trainer here, which resumes from the checkpoint."""

    def __init__(self, *args) -> None:
        self.args = args
        self.model = None

    def fit(self):
        trainer = pilot_trainer(*self.args)
        fit = trainer.fit()
        self.model = trainer.model
        return fit


def _choose(split: Split, run: RunConfig, start: float, histories: dict[str, list[dict]], trainers: dict,
            alone: TrainedModel | None, workers: int) -> TrainedModel:
    """The choice on the pilots' validation figures, the winner finished (or the student alone kept)."""
    d, metric, epochs = run.distill, run.train.select_metric, run.distill.auto_pilot_epochs
    pilots = {spec: pilot_figure(histories[spec], epochs, metric) for spec in d.auto_menu}
    curves = {spec: [[h["elapsed_seconds"], h["valid"][metric]] for h in histories[spec][:epochs]
                     if "elapsed_seconds" in h] for spec in d.auto_menu}
    if alone is not None and alone.fit is not None:  # warm: the pilots start where it ended, so its best counts
        baseline_trainer = None
        baseline = (alone.fit.best_valid.get(metric, float("-inf")) if run.distill.warm_start
                    else pilot_figure(alone.fit.history, epochs, metric))
    else:
        baseline, baseline_trainer = pilot_figure(histories[NONE], epochs, metric), trainers.pop(NONE)
    best = max(pilots, key=lambda spec: pilots[spec])
    pilot_seconds = time.perf_counter() - start
    record = {"menu": list(d.auto_menu), "pilot_epochs": epochs, "metric": f"valid {metric}",
              "pilots": {spec: round(v, 6) for spec, v in pilots.items()}, "student_alone": round(baseline, 6),
              "pilot_seconds": round(pilot_seconds, 2), "workers": workers,
              "pilot_curves": curves}  # [elapsed seconds, validation figure] per pilot epoch
    if pilots[best] > baseline:
        chosen = best
        winner = trainers.pop(chosen)
        trainers.clear()  # the other pilots' models and optimizer state are no longer needed
        fit = winner.fit()
        final = fit.best_valid.get(metric, float("-inf"))
        record["chosen_valid"] = round(final, 6)
        reason = (f"{chosen} had the best pilot validation {metric} ({pilots[chosen]:.4f}, student alone "
                  f"{baseline:.4f})")
        if alone is not None and alone.fit is not None and final < alone.fit.best_valid.get(metric, float("-inf")):
            reason += (f", but finished below the student alone on validation ({final:.4f} < "
                       f"{alone.fit.best_valid[metric]:.4f}): the student's own training is kept")
            chosen = NONE
            model, fit = alone.model, alone.fit
            record["reused_student_alone"] = True  # no training of its own: its time is the student's
        else:
            model = winner.model
    else:
        chosen = NONE
        trainers.clear()
        reason = (f"no method beat the student alone on pilot validation {metric} (best {best} "
                  f"{pilots[best]:.4f} <= {baseline:.4f}): the student's own training is kept")
        if alone is not None:
            model, fit = alone.model, alone.fit
            record["reused_student_alone"] = True  # no training of its own: its time is the student's
        else:
            fit = baseline_trainer.fit()
            model = baseline_trainer.model
    record.update(chosen=chosen, reason=reason, seconds=round(time.perf_counter() - start, 2))
    if chosen == NONE and alone is not None:
        return TrainedModel(model, fit, alone.metrics, method=f"auto: {chosen}", auto=record)
    return test_evaluated(model, fit, split, run, method=f"auto: {chosen}", auto=record)
