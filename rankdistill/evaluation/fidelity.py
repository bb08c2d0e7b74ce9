r"""Teacher–student fidelity: how much of the teacher's top-K the student reproduces, and in what order.

Two per-user numbers at each cut-off k, both better when higher:

- **overlap@k** = |T_k ∩ S_k| / |T_k|, with T_k and S_k the teacher's and the student's top-k lists (full
  ranking, history masked, ties by item index). |T_k| = k unless the user has fewer than k candidates.
  Common in ranking distillation (e.g. Tang & Wang, "Ranking Distillation", KDD 2018; Kang et al., "DE-RRD",
  CIKM 2020 report top-K overlap with the teacher).
- **kendall_tau@k**: Kendall's rank correlation between the teacher's order of T_k and the student's order
  of the same items (the student's ranking restricted to T_k, same tie rule, so both orders are strict and
  tau-a = tau-b):

  .. math:: \tau = \frac{C - D}{n(n-1)/2}

  with C and D the concordant and discordant pairs among the n = |T_k| items (Kendall, Biometrika 1938).
  :func:`spearman_rho` gives Spearman's rho of the same two orders, 1 - 6 Σ d² / (n(n² - 1)).

Everything is computed on the device in chunks of users; the pairwise comparisons cost [C, k, k].
"""

from __future__ import annotations

import torch

from rankdistill.data.split import Split
from rankdistill.evaluation.evaluator import Ranking, rank_all, targets
from rankdistill.evaluation.metrics import mean_over_users
from rankdistill.models.base import Ranker, as_ranker


def overlap_at_k(teacher_items: torch.Tensor, student_items: torch.Tensor, k: int,
                 teacher_valid: torch.Tensor | None = None, student_valid: torch.Tensor | None = None) -> torch.Tensor:
    """|T_k ∩ S_k| / |T_k|.  teacher_items, student_items int64 [U, K]; valid masks bool [U, K] (None: all
    valid) -> float [U], NaN where the teacher has no candidate."""
    t, s = teacher_items[:, :k], student_items[:, :k]
    tv = torch.ones_like(t, dtype=torch.bool) if teacher_valid is None else teacher_valid[:, :k]
    sv = torch.ones_like(s, dtype=torch.bool) if student_valid is None else student_valid[:, :k]
    match = (t[:, :, None] == s[:, None, :]) & tv[:, :, None] & sv[:, None, :]  # [U, k, k]
    n = tv.sum(1)
    inter = match.any(2).sum(1)
    return (inter / n.clamp_min(1)).masked_fill(n == 0, float("nan"))


def _student_prefers(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """bool [U, k, k]: the student ranks item p above item q (score desc, then item index asc)."""
    sp, sq = scores[:, :, None], scores[:, None, :]
    return (sp > sq) | ((sp == sq) & (items[:, :, None] < items[:, None, :]))


def kendall_tau(teacher_items: torch.Tensor, student_scores: torch.Tensor, k: int,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    r"""Kendall's tau of the teacher's top-k under the student.

    teacher_items int64 [U, K], best first; student_scores float [U, K]: the student's scores of those items;
    valid bool [U, K] (a prefix of each row; None: all) -> float [U], NaN with fewer than 2 valid items.
    tau = (C - D) / P with P = n(n-1)/2 pairs; C + D = P because both orders are strict."""
    items, scores = teacher_items[:, :k], student_scores[:, :k]
    v = torch.ones_like(items, dtype=torch.bool) if valid is None else valid[:, :k]
    pref = _student_prefers(scores, items)
    upper = torch.ones(items.shape[1], items.shape[1], dtype=torch.bool, device=items.device).triu(1)
    pair = upper & v[:, :, None] & v[:, None, :]  # p before q in the teacher's list, both valid
    n_pairs = pair.sum((1, 2))
    concordant = (pref & pair).sum((1, 2))
    tau = (2 * concordant - n_pairs) / n_pairs.clamp_min(1)
    return tau.to(student_scores.dtype).masked_fill(n_pairs == 0, float("nan"))


def spearman_rho(teacher_items: torch.Tensor, student_scores: torch.Tensor, k: int,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    r"""Spearman's rho of the teacher's top-k under the student: 1 - 6 Σ_p d_p² / (n(n² - 1)), with
    d_p = (student's rank of the teacher's p-th item among the n valid ones) - p.  Shapes as
    :func:`kendall_tau`; NaN with fewer than 2 valid items."""
    items, scores = teacher_items[:, :k], student_scores[:, :k]
    v = torch.ones_like(items, dtype=torch.bool) if valid is None else valid[:, :k]
    pref = _student_prefers(scores, items) & v[:, :, None] & v[:, None, :]
    student_rank = pref.sum(1)  # [U, k]: how many valid items the student puts above item p
    teacher_rank = torch.arange(items.shape[1], device=items.device)
    d2 = ((student_rank - teacher_rank).double() ** 2 * v).sum(1)
    n = v.sum(1).double()
    rho = 1 - 6 * d2 / (n * (n * n - 1)).clamp_min(1)
    return rho.to(student_scores.dtype).masked_fill(n < 2, float("nan"))


@torch.no_grad()
def score_pairs(model: Ranker, users: torch.Tensor, items: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """users int64 [U], items int64 [U, K] -> the model's scores [U, K], in chunks of users, eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = [model.score(users[a : a + chunk], items[a : a + chunk]) for a in range(0, len(users), chunk)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, items.shape[1], device=items.device)


def fidelity_per_user(teacher: Ranking, student: Ranking, student_scores: torch.Tensor,
                      ks: tuple[int, ...] = (10, 20), chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Per-user overlap@k and kendall_tau@k, {name@k: float [U]}, ordered by k.

    teacher, student: rankings of the same users, K >= max(ks); student_scores [U, K]: the student's scores
    of ``teacher.items``."""
    k = max(ks)
    parts: dict[str, list[torch.Tensor]] = {f"{m}@{c}": [] for c in ks for m in ("overlap", "kendall_tau")}
    tv, sv = teacher.valid, student.valid
    for a in range(0, len(teacher.items), chunk):
        sl = slice(a, a + chunk)
        t_items, s_items, scores = teacher.items[sl, :k], student.items[sl, :k], student_scores[sl, :k]
        for c in ks:
            parts[f"overlap@{c}"].append(overlap_at_k(t_items, s_items, c, tv[sl], sv[sl]))
            parts[f"kendall_tau@{c}"].append(kendall_tau(t_items, scores, c, tv[sl]))
    return {name: torch.cat(v) for name, v in parts.items()}


def teacher_ranking(teacher: Ranker, split: Split, on: str = "test", k: int = 20,
                    memory_budget: int | None = None) -> Ranking:
    """The teacher's top-k for the users evaluated on ``on`` (those with at least one ``on`` item), with the
    evaluation's masking; pass it to :func:`fidelity` to compare several students with one teacher pass."""
    relevant, exclude = targets(split, on)
    users = (relevant.lengths() > 0).nonzero().squeeze(1)
    return rank_all(teacher, exclude, k, users, memory_budget)


def fidelity(teacher: Ranker, student: Ranker, split: Split, on: str = "test", ks: tuple[int, ...] = (10, 20),
             memory_budget: int | None = None, reference: Ranking | None = None) -> dict[str, float]:
    """Mean overlap@k and kendall_tau@k of the student against the teacher over the users evaluated on
    ``on``. -> {"overlap@10": ..., "kendall_tau@10": ..., "overlap@20": ..., ...}

    reference: the teacher's ranking from :func:`teacher_ranking` (same split, ``on`` and K >= max(ks)),
    computed here when None."""
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    teacher, student = as_ranker(teacher, "teacher"), as_ranker(student, "student")
    if teacher.n_items != student.n_items:
        raise ValueError(f"teacher scores {teacher.n_items} items and student {student.n_items}; "
                         "both must share the item vocabulary")
    k = max(ks)
    t_rank = reference if reference is not None else teacher_ranking(teacher, split, on, k, memory_budget)
    if t_rank.k < min(k, teacher.n_items) or t_rank.users is None:
        raise ValueError(f"the teacher's reference ranking has K={t_rank.k}; fidelity at k={k} needs K >= {k}")
    _, exclude = targets(split, on)
    s_rank = rank_all(student, exclude, k, t_rank.users, memory_budget)
    scores = score_pairs(student, t_rank.users, t_rank.items[:, :k])
    per_user = fidelity_per_user(Ranking(t_rank.items[:, :k], t_rank.scores[:, :k], t_rank.users), s_rank,
                                 scores, ks)
    return {name: mean_over_users(v) for name, v in per_user.items()}
