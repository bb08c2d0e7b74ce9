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
· auto_pilot_epochs`` epochs or more.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rankdistill.data.split import Split
from rankdistill.models.base import Ranker
from rankdistill.pipeline import RunConfig, TrainedModel, distillation_objective, make_trainer, test_evaluated
from rankdistill.train.knowledge import TeacherKnowledge

NONE = "none"


def pilot_figure(history: list[dict], epochs: int, metric: str) -> float:
    """The best validation ``metric`` over the first ``epochs`` epochs of a training history."""
    values = [h["valid"][metric] for h in history[:epochs]]
    return max(values) if values else float("-inf")


def distill_auto(split: Split, teacher: Ranker | None, run: RunConfig, knowledge: TeacherKnowledge,
                 name: str = "distilled", out_dir: str | Path | None = None,
                 alone: TrainedModel | None = None) -> TrainedModel:
    """Pilots of every ``run.distill.auto_menu`` spec, the choice on validation, the winner finished.

    ``alone``: the same student already trained on the true labels with ``run`` (its history is the baseline
    pilot, and it is the result when no method beats it). -> the chosen student, with ``.auto`` recording the
    menu, each pilot's validation figure, the baseline's, the choice and the reason."""
    start = time.perf_counter()
    d, metric, epochs = run.distill, run.train.select_metric, run.distill.auto_pilot_epochs
    pilots: dict[str, float] = {}
    trainers, curves = {}, {}
    for spec in d.auto_menu:
        spec_run = replace(run, distill=replace(d, kd=spec))
        objective = distillation_objective(split, teacher, knowledge, spec_run)
        trainer = make_trainer(split, run.student, spec_run, f"{name}-auto-{spec}", objective, out_dir)
        history = trainer.fit(stop_after=epochs).history
        pilots[spec] = pilot_figure(history, epochs, metric)
        curves[spec] = [[h["elapsed_seconds"], h["valid"][metric]] for h in history[:epochs] if "elapsed_seconds" in h]
        trainers[spec] = trainer
    if alone is not None and alone.fit is not None:
        baseline, baseline_trainer = pilot_figure(alone.fit.history, epochs, metric), None
    else:
        baseline_trainer = make_trainer(split, run.student, replace(run, distill=replace(d, kd=NONE)),
                                        f"{name}-auto-{NONE}", None, out_dir)
        baseline = pilot_figure(baseline_trainer.fit(stop_after=epochs).history, epochs, metric)
    best = max(pilots, key=lambda spec: pilots[spec])
    pilot_seconds = time.perf_counter() - start
    record = {"menu": list(d.auto_menu), "pilot_epochs": epochs, "metric": f"valid {metric}",
              "pilots": {spec: round(v, 6) for spec, v in pilots.items()}, "student_alone": round(baseline, 6),
              "pilot_seconds": round(pilot_seconds, 2),
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
