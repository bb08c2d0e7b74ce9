"""The serving cost of a ranker: its bytes (fp32, and int8 as ``rankdistill export --quantize int8`` stores
it) and the time to score every item for one user and take the top 100, as a service answers one request.

Bytes: fp32 is 4 bytes per trainable number (:meth:`Ranker.num_parameters`: table rows × dims plus dense
weights); int8 stores each table row in fbgemm's fused 8-bit row-wise format (D + 8 bytes,
:mod:`rankdistill.serving.quantize`) and dense weights in fp32. A dot-product model's exported vectors have
the shape of its tables, so these are also the sizes of its export.

Time: ``model.score_all`` of one user (the model as it is, in eval mode, no gradient) then ``torch.topk``,
each user timed alone with ``time.perf_counter`` after warm-up calls; the median and p99 over a seeded sample
of users, on the threads torch is set to.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from rankdistill.models.base import Ranker
from rankdistill.serving.quantize import row_bytes

USERS = 64  # users timed
WARMUP = 5
TOP = 100


def model_bytes(model: Ranker) -> dict[str, int]:
    """{"fp32": bytes, "int8": bytes with the tables in fused 8-bit rows and the dense weights in fp32}."""
    dense = sum(p.numel() for p in model.dense_parameters())
    tables = [(t.weight.shape[0], t.weight.shape[1]) for t in model.tables()]
    return {"fp32": 4 * model.num_parameters(),
            "int8": sum(rows * row_bytes(dim, "int8") for rows, dim in tables) + 4 * dense}


@torch.no_grad()
def ms_per_user(model: Ranker, users: int = USERS, k: int = TOP, seed: int = 0) -> dict[str, float]:
    """Milliseconds to score all items for one user and take the top ``k``: {"p50": ..., "p99": ...}."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(model.n_users, min(users, model.n_users), replace=False)
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    k = min(k, model.n_items)
    was_training = model.training
    model.eval()
    times = []
    try:
        for j, u in enumerate([*sample[:WARMUP], *sample]):
            start = time.perf_counter()
            scores = model.score_all(torch.tensor([int(u)], device=device))
            torch.topk(scores, k).indices.cpu()
            if j >= min(WARMUP, len(sample)):
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    ms = np.asarray(times) * 1e3
    return {"p50": round(float(np.percentile(ms, 50)), 4), "p99": round(float(np.percentile(ms, 99)), 4)}


def serving_cost(model: Ranker) -> dict:
    """{"bytes": {"fp32", "int8"}, "ms_per_user": {"p50", "p99"}, "top": 100, "threads": torch's}."""
    return {"bytes": model_bytes(model), "ms_per_user": ms_per_user(model), "top": TOP,
            "threads": torch.get_num_threads()}


def int8_metrics(model: Ranker, split, ks: tuple[int, ...], metrics: tuple[str, ...]) -> dict[str, float] | None:
    """Test metrics of a dot-product model's serving vectors stored in int8 (what ``export --quantize int8``
    serves), same protocol as the model's own; None for a model without serving vectors (mlp)."""
    from rankdistill.evaluation.evaluator import evaluate
    from rankdistill.models.base import DotProductRanker
    from rankdistill.serving.quantize import quantize
    from rankdistill.serving.vectors import VectorRanker, serving_vectors

    if not isinstance(model, DotProductRanker):
        return None
    users, items = serving_vectors(model)
    low = VectorRanker(quantize(users, "int8").dequantize(), quantize(items, "int8").dequantize())
    return {k: round(float(v), 6) for k, v in evaluate(low, split, "test", ks, metrics).items()}


def add_serving_cost(result, ks: tuple[int, ...], metrics: tuple[str, ...],
                     names: tuple[str, ...] = ("teacher", "student", "distilled")) -> None:
    """Set ``.serving`` of the teacher, student and distilled models of a RunResult: serving_cost plus the
    int8 test metrics."""
    for name in names:
        if name in result.models:
            trained = result.models[name]
            trained.serving = {**serving_cost(trained.model),
                               "int8_metrics": int8_metrics(trained.model, result.split, ks, metrics)}
