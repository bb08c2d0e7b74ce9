"""Distillation losses by name, for ``--kd NAME[:WEIGHT][+NAME[:WEIGHT]...]``.

Each entry of :data:`KD_LOSSES` is a small :class:`KDTerm` module that adapts one pure loss function to the
candidate list the distillation objective builds for a batch (:class:`KDBatch`). Terms with learned weights
(``hint``, ``de``) own them; the objective owns the terms. The total is ``supervised + Σ weight_i · kd_i``.

``needs_teacher`` marks the terms that need the teacher's weights: they cannot run from the cached
knowledge alone (the teacher's top-K items and scores).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import torch
from torch import nn

from rankdistill.errors import RankdistillError
from rankdistill.losses.listwise import listmle, listwise_kl, relaxed_ranking
from rankdistill.losses.pairwise import margin_mse, ranknet
from rankdistill.losses.pointwise import score_mse, soft_label_bce
from rankdistill.losses.rce import rce_kd
from rankdistill.losses.representation import (
    DistillationExperts,
    HintProjection,
    anneal,
    experts_loss,
    hint_loss,
)
from rankdistill.losses.topk import (
    discrepancy_correction,
    discrepancy_weights,
    estimate_rank,
    position_weights,
    ranking_distillation,
)


@dataclass
class RCEColumns:
    """``rce``'s own candidates, carried by the batch's first R rows (``kd_rows``) apart from the shared list:
    the teacher's whole top-K (its order), then the student's top-P (its order, from its ranking of the
    catalogue at the epoch start, training items left out), and the closure draw among the latter."""

    teacher_top: slice  # K columns of the [R, K + P] tensors
    student_top: slice  # P columns (P >= K)
    student_top_rank: torch.Tensor  # int64 [R, P] teacher rank of each (>= K: outside the teacher's top-K)
    sampled: torch.Tensor  # int64 [R, L] positions in student_top drawn for the closure
    sampled_ok: torch.Tensor  # bool [R, L] False: the list was too short
    rows: int  # R: the first R rows of the batch carry the columns
    valid: torch.Tensor  # bool [R, K + P] real candidate (False: padding of a short list)
    student: torch.Tensor | None = None  # [R, K + P] student scores
    teacher: torch.Tensor | None = None  # [R, K + P] teacher scores, 0 where unknown
    known: torch.Tensor | None = None  # bool [R, K + P] real candidate whose teacher score is known


@dataclass
class KDBatch:
    """One batch's candidate lists as every distillation term sees them: those of the batch's first R rows
    (``DistillConfig.kd_rows`` when every term is ``few_rows``, else R = B; the supervised loss uses every row).
    Columns of the [R, L] tensors:

    ``[0]`` the observed item | ``topk``: the teacher's top-K items in the teacher's order (the first
    ``n_fixed`` are its ranks 0..F-1, for ``rd``; then M ranks sampled ∝ exp(-rank/λ), when a term reads
    them) | ``dcd``: items sampled for their rank discrepancy (``dcd`` only) | ``negatives``: S uniform items
    shared by the batch. ``rce``'s long lists are apart, in :class:`RCEColumns`.
    The first ``n_own`` columns are each row's own candidates. With the teacher online every column has a
    teacher score; in cached mode (no teacher) only top-K items do, and ``teacher``/``known`` cover the own
    columns alone. ``student_fwd`` is the student's forward over the whole batch: its ``own_scores`` are each
    row's observed item (and the shared negatives), its ``extra_scores`` the R rows' lists.
    """

    student_own: torch.Tensor  # [R, n_own] student scores of the own columns
    student_negatives_fn: Callable[[], torch.Tensor]  # -> [R, S] of the shared negatives (computed when read)
    teacher: torch.Tensor  # [R, T] teacher scores of the first T columns (T = L online, n_own cached), 0 if unknown
    known: torch.Tensor  # bool [R, T] real candidate whose teacher score is known
    valid: torch.Tensor  # bool [R, n_own] real own candidate (False: padding of a short top-K list, a failed
    #                      sample); the shared negatives are all real
    n_own: int
    topk: slice
    topk_ranks: torch.Tensor  # int64 [R, F + M] teacher ranks of the topk columns, ascending
    n_fixed: int
    dcd: slice
    dcd_ranks: torch.Tensor  # int64 [R, 2D] teacher ranks of the dcd columns: D under-estimated items (the
    #                          teacher's top-K), then D over-estimated ones (the student's top-K; >= k outside
    #                          the teacher's top-K)
    negatives: slice
    uninteresting: torch.Tensor | None  # bool [R, S] negatives that are neither the row's positive, nor in its
    #                                     teacher top-K, nor a training item of its user
    k: int  # the teacher's top-K length
    n_items: int
    epoch: int  # 1-based, from the objective's on_epoch_start
    student_fwd: object  # rankdistill.models.base.Forward of the student
    teacher_fwd: object | None  # ... of the teacher on the R rows (None in cached mode)
    generator: torch.Generator
    rce: RCEColumns | None = None  # rce's columns (``rce`` only)
    negatives_seen: torch.Tensor | None = None  # bool [R, S] negatives that are training items of the row's user
    #                                             (rd and rrd only; None when the objective has no exclude)

    @property
    def rows(self) -> int:
        """R, the rows that carry the lists."""
        return self.student_own.shape[0]

    @cached_property
    def student_negatives(self) -> torch.Tensor:
        """[R, S] student scores of the shared negatives. Computed only when a term reads them: a slice of the
        batch's [B, S] block would cost a zero-filled [B, S] gradient in backward (0.24 ms of a 4.6 ms step)."""
        return self.student_negatives_fn()

    @cached_property
    def student(self) -> torch.Tensor:
        """[R, L] student scores of every column."""
        return torch.cat([self.student_own, self.student_negatives], dim=1)

    def on_scored(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(student [R, T], teacher [R, T], known [R, T]): the columns that can carry teacher scores."""
        t = self.teacher.shape[1]
        return (self.student_own if t == self.n_own else self.student[:, :t]), self.teacher, self.known


class KDTerm(nn.Module):
    """A distillation loss by name: ``forward(batch) -> scalar``; hyperparameters from DistillConfig."""

    help: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False  # True: needs the teacher's weights, not only its cached top-K
    needs_teacher_forward: ClassVar[bool] = False  # True: reads the teacher's Forward (its representations)
    needs_uninteresting: ClassVar[bool] = False  # True: the objective fills KDBatch.uninteresting
    # which columns need the online teacher's scores: "all" (own candidates and shared negatives), "own" (each
    # row's own candidates), "none" (the teacher's ranks in the knowledge are enough): the teacher scores only
    # what some term uses
    teacher_columns: ClassVar[str] = "all"
    # True: reads the M sampled top-K columns of the list (KDBatch.topk, or every own column through
    # on_scored); when no term does, the objective leaves them out, so the student looks up and scores only
    # what some loss uses (rce's default step: 17% less time on Gowalla)
    reads_topk_samples: ClassVar[bool] = True
    # True: learns as well when only the first kd_rows rows of each batch carry the lists (validation measured
    # per loss: benchmarks/results/teacher-recipes.md, "kd_rows"); a term without it makes every row carry them
    few_rows: ClassVar[bool] = False

    def __init__(self, config, teacher_dims: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config


class ScoreMSE(KDTerm):
    help = "pointwise score MSE (Ba & Caruana 2014)"

    def forward(self, b: KDBatch) -> torch.Tensor:
        return score_mse(*b.on_scored())


class SoftBCE(KDTerm):
    help = "pointwise soft-label BCE with --temperature (Hinton et al. 2015)"

    def forward(self, b: KDBatch) -> torch.Tensor:
        return soft_label_bce(*b.on_scored(), temperature=self.config.temperature)


class MarginMSE(KDTerm):
    help = "pairwise Margin-MSE over all pairs of the list (Hofstätter et al. 2020)"

    def forward(self, b: KDBatch) -> torch.Tensor:
        return margin_mse(*b.on_scored())


class RankNet(KDTerm):
    help = "pairwise logistic (RankNet/BPR) loss on pairs ordered by the teacher, own candidates vs the list"

    def forward(self, b: KDBatch) -> torch.Tensor:
        return ranknet(*b.on_scored(), n_anchor=b.n_own)


class ListKL(KDTerm):
    help = "listwise KL between teacher and student softmax with --temperature (ListNet-style)"
    few_rows = True

    def forward(self, b: KDBatch) -> torch.Tensor:
        return listwise_kl(*b.on_scored(), temperature=self.config.temperature)


class ListMLE(KDTerm):
    help = "Plackett-Luce likelihood of the teacher's order of the list (ListMLE, Xia et al. 2008)"

    def forward(self, b: KDBatch) -> torch.Tensor:
        s, t, known = b.on_scored()
        order = t.masked_fill(~known, float("-inf")).argsort(dim=1, descending=True, stable=True)
        return listmle(s, order, known.gather(1, order))


class RRD(KDTerm):
    help = "relaxed ranking distillation: teacher's top-K order above uninteresting negatives (Kang et al. 2020)"
    needs_uninteresting = True
    teacher_columns = "none"  # teacher ranks from the knowledge only

    def forward(self, b: KDBatch) -> torch.Tensor:
        return relaxed_ranking(b.student_own[:, b.topk], b.student_negatives, b.valid[:, b.topk], b.uninteresting)


class TopKRD(KDTerm):
    help = ("ranking distillation: teacher's top --rd-k as weighted positives, position and (from epoch "
            "rd_dynamic_from) rank-discrepancy weights (Tang & Wang 2018)")

    teacher_columns = "none"  # teacher ranks from the knowledge only
    reads_topk_samples = False  # the F fixed ranks alone (the objective adds them for rd)

    def __init__(self, config, teacher_dims=None) -> None:
        super().__init__(config, teacher_dims)
        self.register_buffer("static", position_weights(config.rd_k, config.rd_lambda), persistent=False)

    def forward(self, b: KDBatch) -> torch.Tensor:
        f = b.n_fixed
        cols = slice(b.topk.start, b.topk.start + f)
        s = b.student_own[:, cols]
        weights = self.static[:f]
        if b.epoch >= self.config.rd_dynamic_from:
            # the rank among the items a ranking can return: a negative that is a training item of the row's
            # user (its positive included) is left out of the estimate
            mask = None if b.negatives_seen is None else ~b.negatives_seen
            student_ranks = estimate_rank(s, b.student_negatives, b.n_items, mask)
            weights = weights * discrepancy_weights(b.topk_ranks[:, :f], student_ranks, self.config.rd_mu)
        return ranking_distillation(s, weights, b.valid[:, cols])


class DCD(KDTerm):
    help = ("rank-discrepancy correction: items the student ranks much lower or higher than the teacher, "
            "relaxed listwise (Lee & Kim 2021, user side)")

    teacher_columns = "none"  # teacher ranks from the knowledge only
    reads_topk_samples = False  # its own dcd block

    def forward(self, b: KDBatch) -> torch.Tensor:
        s, valid, d = b.student_own[:, b.dcd], b.valid[:, b.dcd], b.dcd_ranks.shape[1] // 2  # [under D | over D]
        return discrepancy_correction(s[:, :d], b.dcd_ranks[:, :d], s[:, d:], valid[:, :d], valid[:, d:])


class RCE(KDTerm):
    help = ("rejuvenated cross-entropy: teacher's top-K split by the student's top-K, the rest completed by "
            "items drawn from the student's top list (closure), mixed by their overlap (Zhu & Zhang, ICLR 2026)")

    teacher_columns = "none"  # its own columns carry their teacher scores (RCEColumns)
    reads_topk_samples = False  # its own long lists
    few_rows = True

    def forward(self, b: KDBatch) -> torch.Tensor:
        c = b.rce
        s, t, known, valid = c.student, c.teacher, c.known, c.valid
        tt, st = c.teacher_top, c.student_top
        return rce_kd(s[:, tt], t[:, tt], valid[:, tt], s[:, st], t[:, st], known[:, st], valid[:, st],
                      c.student_top_rank, c.sampled, c.sampled_ok, beta=self.config.rce_beta,
                      temperature=self.config.rce_tau)


def _items_hidden(fwd, rows: int) -> torch.Tensor:
    """[R + S, H]: the representations of the first R rows' observed items, then of the shared negatives."""
    parts = [fwd.item_hidden[:rows, 0]] + ([fwd.shared_hidden] if fwd.shared_hidden is not None else [])
    return torch.cat(parts, dim=0)


class Hint(KDTerm):
    help = "hint loss on user and item representations through a learned linear projection (FitNets)"
    needs_teacher = True
    needs_teacher_forward = True
    reads_topk_samples = False  # representations of the observed items and the shared negatives

    def __init__(self, config, teacher_dims) -> None:
        super().__init__(config, teacher_dims)
        self.user, self.item = HintProjection(teacher_dims[0]), HintProjection(teacher_dims[1])

    def forward(self, b: KDBatch) -> torch.Tensor:
        s, t = b.student_fwd, b.teacher_fwd
        r = b.rows
        return (hint_loss(self.user(s.user_hidden[:r]), t.user_hidden[:r])
                + hint_loss(self.item(_items_hidden(s, r)), _items_hidden(t, r)))


class DE(KDTerm):
    help = "distillation experts: gated MLP experts map student to teacher representations (Kang et al. 2020)"
    needs_teacher = True
    needs_teacher_forward = True
    reads_topk_samples = False  # representations of the observed items and the shared negatives

    def __init__(self, config, teacher_dims) -> None:
        super().__init__(config, teacher_dims)
        self.user = DistillationExperts(teacher_dims[0], config.de_experts)
        self.item = DistillationExperts(teacher_dims[1], config.de_experts)

    def _side(self, experts: DistillationExperts, s: torch.Tensor, t: torch.Tensor, b: KDBatch, tau: float):
        out, gate = experts(s, t)
        noise = torch.empty(gate.shape, device=gate.device).exponential_(generator=b.generator)
        gumbel = -torch.log(noise.clamp_min(1e-20))  # Gumbel(0, 1)
        return experts_loss(out, gate, t, gumbel, tau=tau)

    def forward(self, b: KDBatch) -> torch.Tensor:
        c = self.config
        tau = anneal(c.de_tau_start, c.de_tau_end, b.epoch, c.de_anneal_epochs)
        s, t = b.student_fwd, b.teacher_fwd
        r = b.rows
        return (self._side(self.user, s.user_hidden[:r], t.user_hidden[:r], b, tau)
                + self._side(self.item, _items_hidden(s, r), _items_hidden(t, r), b, tau))


KD_LOSSES: dict[str, type[KDTerm]] = {
    "mse": ScoreMSE,
    "soft_bce": SoftBCE,
    "margin_mse": MarginMSE,
    "ranknet": RankNet,
    "listkl": ListKL,
    "listmle": ListMLE,
    "rrd": RRD,
    "rd": TopKRD,
    "dcd": DCD,
    "rce": RCE,
    "hint": Hint,
    "de": DE,
}


def parse_kd(spec: str) -> tuple[tuple[str, float], ...]:
    """'soft_bce:0.5+listkl' -> (('soft_bce', 0.5), ('listkl', 1.0)); 'none' -> ()."""
    spec = spec.strip()
    if spec == "none":
        return ()
    if not spec:
        raise RankdistillError("--kd is empty: name the distillation loss(es), 'auto' to choose on validation, or "
                               "'none' for the student alone")
    terms = []
    for part in spec.split("+"):
        name, _, weight = part.strip().partition(":")
        if name not in KD_LOSSES:
            raise RankdistillError(f"unknown distillation loss {name!r} in --kd {spec!r}; "
                                   f"choose from {', '.join(KD_LOSSES)}")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise RankdistillError(f"weight {weight!r} of {name!r} in --kd {spec!r} is not a number") from None
        if not (w > 0 and math.isfinite(w)):
            raise RankdistillError(f"weight of {name!r} in --kd {spec!r} must be a finite number > 0, got {w}")
        if name in (n for n, _ in terms):
            raise RankdistillError(f"{name!r} appears twice in --kd {spec!r}; give it one weight")
        terms.append((name, w))
    return tuple(terms)
