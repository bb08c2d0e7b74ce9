"""Objectives: what one training step minimises for a batch of users [B], their positives [B] and
negatives [S] shared by the whole batch (uniform samples; a negative that is the row's own positive is
masked out of that row).

- :class:`SupervisedObjective`: the true-label loss on [positive, negatives] plus L2 on the batch's rows.
- :class:`DistillationObjective`: the same, plus ``Σ λ_i · kd_i`` (``DistillConfig.kd``) on one candidate
  list per carrying row (below), scored by the student in the same single forward as the supervised loss (each
  embedding table is looked up once, so the fused optimizer updates each row once per step)::

      [positive | teacher top-K: ranks 0..F-1 (rd), then M ranks sampled ∝ exp(-rank/λ) (one draw per
                  batch, or per row with topk_sampling="row"), in rank order; the M only when some term
                  reads them (not rce, dcd, rd, hint, de alone)
                | dcd: D under- + D over-estimated items | S shared uniform negatives]

  and, for ``rce``, a list of its own (the teacher's whole top-K, then the student's top-P:
  :class:`~rankdistill.losses.registry.RCEColumns`). The rows that carry these lists are the batch's first
  ``kd_rows`` when every term is ``few_rows`` (rce, listkl), else every row (sharded: this process's part of
  the global batch's first rows); the terms see those rows, the supervised loss every row. The lists are
  scored in that same forward as the model's ``extra`` candidates of those rows (each row's own list is its
  observed item).

  With a teacher, the frozen teacher scores the same list (eval(), requires_grad_(False), no_grad()).
  Without one (``teacher=None``, the cached mode), teacher scores come from the knowledge and are known only
  for top-K items; ``KDBatch.known`` marks them, and the terms that need the teacher's weights are refused.
  Sampling is on the device with Gumbel-top-k (no host syncs, no per-row Python).
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

import torch
from torch import nn

from rankdistill.config import DistillConfig
from rankdistill.data.csr import Csr
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import default_memory_budget, rank_all, rows_of
from rankdistill.losses._masking import first_row
from rankdistill.losses.rce import closure_log_weights
from rankdistill.losses.registry import KD_LOSSES, KDBatch, RCEColumns
from rankdistill.losses.supervised import SUPERVISED_LOSSES, bilateral_from_lse, block_logsumexp, softmax_from_lse
from rankdistill.losses.topk import discrepancy_weights
from rankdistill.models.base import DotProductRanker, Forward, Ranker
from rankdistill.train.checkpoint import fingerprint
from rankdistill.train.discrepancy import list_positions, saturation_depth
from rankdistill.train.knowledge import TeacherKnowledge, rank_with_positions


def l2_penalty(fwd: Forward) -> torch.Tensor:
    """Mean squared norm of the looked-up rows: users, each row's own items, and the shared items."""
    reg = fwd.user_emb.square().sum(-1).mean() + fwd.item_emb.square().sum(-1).mean()
    if fwd.shared_emb is not None:
        reg = reg + fwd.shared_emb.square().sum(-1).mean()
    return reg


def scores_by_dot_product(model: nn.Module) -> bool:
    """Whether ``model`` (or the ranker inside a parallel wrapper such as torchrec's DMP, whose ``module`` is the
    unwrapped ranker) scores by user and item vectors: then in-batch negatives apply."""
    return isinstance(getattr(model, "module", model), DotProductRanker)


def gumbel_topk(log_weights: torch.Tensor, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """m positions per row without replacement, with probability ∝ exp(log_weights) (Gumbel-top-k).

    log_weights [B, P] (-inf: never) -> (positions int64 [B, m], ok bool [B, m]); ok is False where a row had
    fewer than m positions of positive weight (the position returned there is arbitrary)."""
    u = torch.rand(log_weights.shape, generator=generator, device=log_weights.device)
    keys = log_weights - torch.log(-torch.log(u))  # + Gumbel(0, 1); u = 0 gives -inf: that position is skipped
    values, positions = keys.topk(m, dim=1)
    return positions, torch.isfinite(values)


class SupervisedObjective(nn.Module):
    """The true-label loss on [positive | S shared uniform negatives (| the batch's other positives)].

    ``in_batch_log_q`` (float [n_items], log of each item's share of the training interactions) adds the
    batch's other positives as negatives (in-batch negatives; dot-product rankers only, no extra lookup: their
    vectors are the batch's positive columns) and corrects every column for how the candidates were drawn
    (logQ correction, Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
    Recommendations", RecSys 2019): the mixture of S uniform and B popularity-proportional draws gives item j
    an expected count ``q_j = S / n_items + B · p_j`` and each score becomes ``s_j − log q_j``. A candidate
    equal to the row's positive is masked."""

    def __init__(self, loss: str = "softmax", l2: float = 0.0, *, bsl_tau2: float = 1.0,
                 in_batch_log_q: torch.Tensor | None = None) -> None:
        super().__init__()
        self.loss_name, self.loss, self.l2, self.bsl_tau2 = loss, SUPERVISED_LOSSES[loss], l2, bsl_tau2
        self.in_batch = in_batch_log_q is not None
        if self.in_batch:
            self.register_buffer("log_p", in_batch_log_q.float(), persistent=False)
        self.student_autocast: tuple[str, torch.dtype] | None = None

    def set_student_autocast(self, autocast: tuple[str, torch.dtype] | None) -> None:
        """(device type, dtype) of an autocast around the student's forward pass alone (the Trainer's bf16 on
        CUDA), None: none. The teacher, the re-rankings and the losses stay fp32."""
        self.student_autocast = autocast

    def student_forward(self, model: Ranker, *args, **kwargs) -> Forward:
        """``model(*args, **kwargs)`` under :attr:`student_autocast`, its floating outputs back in fp32 (the
        losses compare them with fp32 teacher scores; the gradient flows back through the cast)."""
        if self.student_autocast is None:
            return model(*args, **kwargs)
        with torch.autocast(*self.student_autocast):
            fwd = model(*args, **kwargs)
        return replace(fwd, **{f.name: getattr(fwd, f.name).float() for f in fields(fwd)
                               if isinstance(getattr(fwd, f.name), torch.Tensor)
                               and getattr(fwd, f.name).is_floating_point()})

    @classmethod
    def from_config(cls, train, split=None, device: torch.device | str = "cpu") -> "SupervisedObjective":
        """The objective of a TrainConfig (``split``: the item counts for in-batch negatives), on ``device``."""
        return cls(train.loss, train.l2, **supervised_options(train, split, device))

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the Trainer before each epoch (1-based); the supervised loss keeps no state."""

    def supervised(self, fwd: Forward, pos: torch.Tensor, negs: torch.Tensor, users: torch.Tensor | None = None,
                   *, dot_product: bool = True) -> tuple[torch.Tensor, dict]:
        """``dot_product``: the model scores by user and item vectors, so in-batch negatives apply (an MLP ranker
        trains with the shared negatives alone)."""
        if fwd.shared_scores is not None:  # the two blocks as the model returned them: no copy
            s_pos, s_neg = fwd.own_scores[:, 0], fwd.shared_scores
        else:
            s = fwd.scores
            s_pos, s_neg = s[:, 0], s[:, s.shape[1] - len(negs) :]
        hits = negs[None, :] == pos[:, None]  # accidental hits: a row's own positive among the negatives
        blocks = [(s_neg, None, hits)]  # (scores [B, N], shift [N] or None, excluded [B, N]) per block
        if self.in_batch and fwd.shared_scores is not None and dot_product:
            s_pos, blocks = self._with_in_batch(s_pos, s_neg, hits, fwd, pos, negs)
        if self.loss_name in ("softmax", "bsl"):  # each block's log-sum-exp in one pass, no masked copies
            lse = [block_logsumexp(*block) for block in blocks]
            if self.loss_name == "softmax":
                sup = softmax_from_lse(s_pos, lse)
            else:
                sup = bilateral_from_lse(s_pos, lse, sum(b[0].shape[1] for b in blocks), self.bsl_tau2, users)
        else:
            fill = torch.finfo(s_neg.dtype).min / 4
            joined = [(b if shift is None else b - shift).masked_fill(out, fill) for b, shift, out in blocks]
            sup = self.loss(torch.cat([s_pos[:, None], *joined], dim=1))
        parts = {self.loss_name: sup.detach()}
        if self.l2:
            reg = self.l2 * l2_penalty(fwd)
            parts["l2"] = reg.detach()
            sup = sup + reg
        return sup, parts

    def _with_in_batch(self, s_pos: torch.Tensor, s_neg: torch.Tensor, hits: torch.Tensor, fwd: Forward,
                       pos: torch.Tensor, negs: torch.Tensor):
        """Positive [B] and shared negatives [B, S] (``hits`` excluded) -> the positive logQ-corrected, and the
        blocks of negatives: the shared ones, then the batch's other positives [B, B] (a column equal to the
        row's positive excluded), each with its logQ shift."""
        uniform = torch.tensor(math.log(len(negs) / self.log_p.shape[0]), device=pos.device)

        def log_q(items: torch.Tensor) -> torch.Tensor:  # log of each item's expected count among the candidates
            return torch.logaddexp(uniform, math.log(len(pos)) + self.log_p.index_select(0, items))

        log_q_pos, log_q_negs = log_q(pos), log_q(negs)
        in_batch = fwd.user_hidden @ fwd.item_hidden[:, 0].T  # [B, B] (dot-product rankers)
        return s_pos - log_q_pos, [(s_neg, log_q_negs, hits), (in_batch, log_q_pos, pos[None, :] == pos[:, None])]

    def forward(self, model: Ranker, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor):
        """users [B], pos [B], negs [S] -> (loss, {part name: detached value})"""
        fwd = self.student_forward(model, users, pos[:, None], negs)
        return self.supervised(fwd, pos, negs, users, dot_product=scores_by_dot_product(model))


def supervised_options(train, split=None, device: torch.device | str = "cpu") -> dict:
    """SupervisedObjective keyword arguments of a TrainConfig: BSL's τ₂ and, with ``train.in_batch_negatives``,
    the log item shares of ``split``'s training interactions (on ``device``, where the batches are)."""
    opts: dict = {"bsl_tau2": train.bsl_tau2}
    if train.in_batch_negatives:
        if split is None:
            raise RankdistillError("in-batch negatives need the split's item counts")
        counts = torch.bincount(split.train.indices.cpu(), minlength=split.n_items).double()
        opts["in_batch_log_q"] = (counts / counts.sum()).clamp_min(1e-12).log().float().to(device)
    return opts


class DistillationObjective(SupervisedObjective):
    """``supervised + Σ weight_i · kd_i`` over the candidate list described in the module docstring.

    ``teacher=None`` distils from ``knowledge`` alone. ``exclude`` (default ``knowledge.exclude``): the
    users' training items, needed by ``dcd`` (the student's ranking leaves them out). ``device``: default
    the teacher's, else the knowledge's.
    Call :meth:`on_epoch_start` before each epoch (the Trainer does): ``rd`` switches its discrepancy
    weights on by epoch, ``de`` anneals its temperature, ``dcd`` and ``rce`` re-rank the catalogue with the
    student (``rce`` then draws its closure items from each row's student top-P at every step).
    """

    def __init__(
        self,
        teacher: Ranker | None,
        knowledge: TeacherKnowledge,
        config: DistillConfig,
        loss: str = "softmax",
        l2: float = 0.0,
        seed: int = 0,
        *,
        exclude: Csr | None = None,
        device: torch.device | str | None = None,
        **supervised,  # SupervisedObjective options: bsl_tau2, in_batch_log_q (supervised_options)
    ) -> None:
        super().__init__(loss, l2, **supervised)
        names = [name for name, _ in config.terms]
        _check(teacher, knowledge, names)
        self.exclude = exclude if exclude is not None else knowledge.exclude
        ranking = [name for name in ("dcd", "rce") if name in names]
        if ranking and self.exclude is None:
            raise RankdistillError(f"{'+'.join(ranking)} ranks the student's whole catalogue every epoch and must "
                                   "leave each user's training items out: load the knowledge with "
                                   "TeacherKnowledge.load(path, split) or pass exclude=split.train")
        if device is None:
            device = _device(teacher) if teacher is not None else knowledge.items.device
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.knowledge, self.config, self.n_items = knowledge.to(self.device), config, int(knowledge.n_items)
        # the training items where the batches are (rows_of indexes them with the batch's users)
        self._exclude_here = None if self.exclude is None else self.exclude.to(self.device)
        k = knowledge.k
        self.n_fixed = min(config.rd_k, k) if "rd" in names else 0
        sampled = any(KD_LOSSES[name].reads_topk_samples for name in names)  # else no term would read them
        self.n_sampled = min(config.topk_samples, k - self.n_fixed) if sampled else 0
        self.n_dcd = min(config.dcd_samples, k) if "dcd" in names else 0
        self.rce_pool = max(config.rce_pool, k) if "rce" in names else 0  # the student's top-P, P >= K
        log_w = -torch.arange(k, dtype=torch.float32, device=self.device) / config.rank_lambda
        log_w[: self.n_fixed] = float("-inf")  # the fixed ranks are always in the list, not sampled again
        self.register_buffer("log_rank_weights", log_w, persistent=False)  # [K]
        dims = _hidden_dims(teacher, self.device) if teacher is not None else None
        with torch.random.fork_rng(devices=[]):  # the terms' initial weights depend on the seed alone
            torch.manual_seed(seed)
            self.terms = nn.ModuleDict({name: KD_LOSSES[name](config, dims) for name in names}).to(self.device)
        self.weights = dict(config.terms)
        # rows of a batch that carry the terms' lists: kd_rows when every term learns as well from them, else all
        few = all(term.few_rows for term in self.terms.values())
        self.rows = config.kd_rows if few else math.inf
        self.need_uninteresting = any(term.needs_uninteresting for term in self.terms.values())
        self.need_seen = self.need_uninteresting or "rd" in self.terms
        # a frozen dot-product teacher scores from its user and item vectors, computed once here: no table lookup
        # and no normalisation per step (terms that read the teacher's Forward still run its forward)
        self.teacher_vectors = None
        if (isinstance(self.teacher, DotProductRanker)
                and not any(t.needs_teacher_forward for t in self.terms.values())):
            with torch.no_grad():
                users_all = torch.arange(self.teacher.n_users, device=self.device)
                self.teacher_vectors = (self.teacher.user_vectors(users_all), self.teacher.item_matrix())
        order = ("none", "own", "all")
        self.teacher_columns = max((t.teacher_columns for t in self.terms.values()), key=order.index, default="none")
        self.epoch, self.dcd_state, self.dcd_stale = 1, None, True
        self.teacher_top: tuple[torch.Tensor, torch.Tensor] | None = None  # dcd online: the teacher's top-P
        self.rce_state, self.rce_stale = None, True
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 7919)

    def train(self, mode: bool = True) -> "DistillationObjective":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher stays frozen whatever the trainer does
        return self

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch, self.dcd_stale, self.rce_stale = epoch, True, True

    def source_identity(self) -> dict:
        """What this objective distils from, for a checkpoint's identity: ``mode`` "online" (the teacher's
        weights score the candidates) or "cached" (the knowledge alone), a fingerprint of the knowledge (its
        lists, scores and catalogue size) and, online, of the teacher's weights (its state_dict)."""
        identity = {"mode": "online" if self.teacher is not None else "cached",
                    "knowledge": self.knowledge.content_fingerprint()}
        if self.teacher is not None:
            identity["weights"] = fingerprint(*self.teacher.state_dict().values())
        return identity

    # -- one step ------------------------------------------------------------------------------------
    def forward(self, model: Ranker, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor):
        """users [B], pos [B], negs [S] -> (loss, {part name: detached value})"""
        if not self.terms:
            return super().forward(model, users, pos, negs)
        if users.device != self.device:
            raise RankdistillError(f"the batch is on {users.device} but the distillation objective on {self.device}; "
                                   f"build it with device={str(users.device)!r}")
        kn = self.knowledge
        # the terms see the batch's first r rows: their lists are looked up for those rows alone
        # (sharded: this process's share of the global batch's first kd_rows rows, maybe none)
        rows = users[: max(0, self.rows - first_row())] if self.rows < math.inf else users
        r = len(rows)
        ranks, sampled_ok = self._sample_topk(rows)  # [r, F + M]
        topk_valid = _pick(kn.valid, rows, ranks) & sampled_ok
        own = [pos[:r, None], _pick(kn.items, rows, ranks)]
        valid = [torch.ones_like(own[0], dtype=torch.bool), topk_valid]
        from_knowledge = [None, lambda: _pick(kn.scores, rows, ranks)]  # teacher scores the knowledge holds
        dcd_ranks, extra = ranks[:, :0], []  # extra: (teacher ranks, real) of the blocks after the top-K one
        if self.n_dcd:
            dcd_items, dcd_ranks, dcd_valid = self._sample_dcd(model, rows)
            own.append(dcd_items)
            valid.append(dcd_valid)
            extra.append((dcd_ranks, dcd_valid))
            from_knowledge.append(None)
        own_t, valid_t = torch.cat(own, dim=1), torch.cat(valid, dim=1)  # [r, n_own]
        n_own = own_t.shape[1]
        # the r rows' lists after the observed item (top-K, dcd), then rce's long ones (the teacher's top-K, the
        # student's top-P), scored as the model's extra candidates in the same lookup: one lookup per table
        rce_items, rce = self._rce_columns(model, rows) if self.rce_pool else (None, None)
        lists = [blk for blk in (own_t[:, 1:], rce_items) if blk is not None and blk.shape[1]]
        fwd = self.student_forward(model, users, pos[:, None], negs,
                                   extra=torch.cat(lists, dim=1) if lists else None)
        if rce is not None:
            rce = self._rce_scores(rce, fwd.extra_scores[:, n_own - 1 :], rows, rce_items)
        dot = scores_by_dot_product(model)
        total, parts = self.supervised(fwd, pos, negs, users, dot_product=dot)
        if self.teacher is not None and self.teacher_columns != "none":
            shared = negs if self.teacher_columns == "all" else None  # the teacher scores only what a term uses
            if self.teacher_vectors is not None:  # a frozen dot-product teacher: its vectors, computed once
                tf, teacher_scores = None, self._teacher_own_scores(rows, own, from_knowledge, shared)
            else:
                with torch.no_grad():
                    tf = self.teacher(rows, own_t, shared)
                teacher_scores = tf.scores
            # a negative that is also one of the row's own candidates is the same item twice: its column would
            # count it a second time in every list the losses compare (listkl's softmaxes, pairs, ...)
            if self.teacher_columns == "all":
                twice = negatives_hit(negs, own_t, valid_t)
                known = torch.cat([valid_t, ~twice], dim=1)
            else:
                known = valid_t
        else:  # cached (or no term needs the teacher's scores): the own columns' scores from the knowledge
            tf = None
            teacher_scores, known = self._cached_teacher(rows, ranks, topk_valid, extra)
        t1 = 1 + ranks.shape[1]
        seen = self._seen_negatives(rows, negs) if self.need_seen else None
        batch = KDBatch(
            student_own=_own_scores(fwd, r, n_own - 1), student_negatives_fn=lambda: _negatives_scores(fwd, r, dot),
            teacher=teacher_scores, known=known, valid=valid_t, n_own=n_own,
            topk=slice(1, t1), topk_ranks=ranks, n_fixed=self.n_fixed, dcd=slice(t1, t1 + dcd_ranks.shape[1]),
            dcd_ranks=dcd_ranks,
            negatives=slice(n_own, n_own + len(negs)),
            uninteresting=self._uninteresting(rows, pos[:r], negs, seen) if self.need_uninteresting else None,
            negatives_seen=seen,
            k=kn.k, n_items=self.n_items, epoch=self.epoch, student_fwd=fwd, teacher_fwd=tf, generator=self.generator,
            rce=rce,
        )
        for name, term in self.terms.items():
            value = term(batch)
            parts[name] = value.detach()
            total = total + self.weights[name] * value
        return total, parts

    def _teacher_own_scores(self, users: torch.Tensor, blocks: list[torch.Tensor], from_knowledge: list,
                            shared: torch.Tensor | None) -> torch.Tensor:
        """Teacher scores [B, L (+ S)] of the own candidate blocks (and the shared ones): a block of the teacher's
        top-K items takes its scores from the knowledge (``from_knowledge[i]()``), the others are scored."""
        scored = [blk for blk, known in zip(blocks, from_knowledge) if known is None]
        computed = self._teacher_scores(users, torch.cat(scored, dim=1), shared)
        parts, at = [], 0
        for blk, known in zip(blocks, from_knowledge):
            if known is None:
                parts.append(computed[:, at : at + blk.shape[1]])
                at += blk.shape[1]
            else:
                parts.append(known().to(computed.dtype))
        parts.append(computed[:, at:])  # the shared negatives' scores, if any
        return torch.cat(parts, dim=1)

    def _teacher_scores(self, users: torch.Tensor, own: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
        """The frozen teacher's scores [B, L (+ S)] of each row's own candidates (and the shared ones) from its
        vectors: the same numbers as its forward pass (up to float rounding)."""
        user_vecs, item_vecs = self.teacher_vectors
        u = user_vecs.index_select(0, users)  # [B, D]
        if item_vecs.shape[0] <= 32 * own.shape[1]:  # a small catalogue: score all of it, pick the columns
            every = u @ item_vecs.T  # [B, n_items]: cheaper than gathering B·L item vectors
            own_scores = every.gather(1, own)
            return own_scores if shared is None else torch.cat([own_scores, every[:, shared]], dim=1)
        own_scores = torch.bmm(item_vecs.index_select(0, own.reshape(-1)).view(*own.shape, item_vecs.shape[1]),
                               u[:, :, None])
        own_scores = own_scores.squeeze(-1)
        if shared is None:
            return own_scores
        return torch.cat([own_scores, u @ item_vecs.index_select(0, shared).T], dim=1)

    # -- candidate sampling --------------------------------------------------------------------------
    def _sample_topk(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> teacher ranks int64 [B, F + M] ascending (F fixed, then M sampled ∝ exp(-rank/λ) among the real
        entries of the user's list) and ok bool [B, F + M] (False: the list was too short)."""
        b = len(users)
        if not self.n_sampled or self.n_fixed:
            fixed = torch.arange(self.n_fixed, device=users.device).expand(b, -1)
            ok_fixed = torch.ones_like(fixed, dtype=torch.bool)
            if not self.n_sampled:
                return fixed, ok_fixed
        if self.config.topk_sampling == "batch":  # one draw for the batch; a padded entry is masked later
            picked, ok = gumbel_topk(self.log_rank_weights[None], self.n_sampled, self.generator)  # [1, M]
        else:
            log_w = self.log_rank_weights.masked_fill(~self.knowledge.valid.index_select(0, users), float("-inf"))
            picked, ok = gumbel_topk(log_w, self.n_sampled, self.generator)  # [B, M]
        picked, order = picked.sort(dim=1)
        picked, ok = picked.expand(b, -1), ok.gather(1, order).expand(b, -1)
        if not self.n_fixed:
            return picked, ok
        return torch.cat([fixed, picked], dim=1), torch.cat([ok_fixed, ok], dim=1)

    def _sample_dcd(self, model: Ranker, users: torch.Tensor):
        """-> items [B, 2D]: D drawn from the under-estimated set (the teacher's top-K), then D from the
        over-estimated set (the student's top-K), never one item in both; their teacher ranks [B, 2D] (>= K:
        outside the teacher's top-K) and ok [B, 2D] (False: fewer than D items of positive weight)."""
        if self.dcd_stale or self.dcd_state is None:
            self._refresh_dcd(model)
        log_under, student_top, teacher_rank_of_top, log_over = self.dcd_state
        under, under_ok = gumbel_topk(log_under.index_select(0, users), self.n_dcd, self.generator)
        over, over_ok = gumbel_topk(log_over.index_select(0, users), self.n_dcd, self.generator)
        items = torch.cat([_pick(self.knowledge.items, users, under), _pick(student_top, users, over)], dim=1)
        ranks = torch.cat([under, _pick(teacher_rank_of_top, users, over)], dim=1)
        return items, ranks, torch.cat([under_ok, over_ok], dim=1)

    @torch.no_grad()
    def _refresh_dcd(self, model: Ranker) -> None:
        """DCD's two sets for every user (once per epoch; Lee & Kim 2021, user side), with r_t, r_s the
        teacher's and the student's 0-based ranks (training items left out):

        - under-estimated: the teacher's top-K, item i drawn ∝ tanh(max(μ (r_s(i) − r_t(i)), 0));
        - over-estimated: the student's top-K, item j drawn ∝ tanh(max(μ (r_t(j) − r_s(j)), 0)).

        An item in both lists gets the same (r_t, r_s) in both, so at most one of its weights is positive.
        No full sort: the student's ranks come from its top-P (:func:`saturation_depth`, one chunked top-K
        pass); an item outside it gets r_s = P, within ε of the exact weight. r_t of a student top-K item
        outside the teacher's top-K: online, its place in the frozen teacher's own top-P (computed once, P if
        absent); cached, only ">= K" is known and K is used (a lower bound: such an item's over-estimation
        weight is then too small when the student ranks it near K; documented difference from the paper,
        whose teacher ranks the whole catalogue)."""
        kn, mu, k = self.knowledge, self.config.dcd_mu, self.knowledge.k
        depth = saturation_depth(k, mu, self.n_items)
        ranking = rank_all(model, self.exclude, depth, memory_budget=default_memory_budget(self.device))
        top = ranking.items.to(self.device)
        top_valid = torch.isfinite(ranking.scores).to(self.device)
        student_rank = list_positions(kn.items, kn.valid, top, top_valid)  # [U, K], depth where outside
        top, top_valid = top[:, :k], top_valid[:, :k]  # the over-estimated candidates: the student's top-K
        teacher_rank = list_positions(top, top_valid, kn.items, kn.valid)  # [U, K], K where outside
        if self.teacher is not None:
            teacher_top, teacher_valid = self._teacher_top(depth)
            beyond = list_positions(top, top_valid, teacher_top, teacher_valid).clamp_min(k)
            teacher_rank = torch.where(teacher_rank < k, teacher_rank, beyond)
        positions = torch.arange(k, device=self.device)
        under = discrepancy_weights(positions, student_rank, mu) * kn.valid
        over = discrepancy_weights(positions[: top.shape[1]], teacher_rank, mu) * top_valid
        self.dcd_state = (under.log(), top, teacher_rank, over.log())
        self.dcd_stale = False

    def _teacher_top(self, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen teacher's top-``depth`` items of every user and their validity (computed once)."""
        if self.teacher_top is None or self.teacher_top[0].shape[1] < depth:
            ranking = rank_all(self.teacher, self.exclude, depth, memory_budget=default_memory_budget(self.device))
            self.teacher_top = (ranking.items.to(self.device), torch.isfinite(ranking.scores).to(self.device))
        return self.teacher_top

    def _rce_columns(self, model: Ranker, rows: torch.Tensor) -> tuple[torch.Tensor, RCEColumns]:
        """rce's candidates on the rows that carry the terms' lists (users [r]): items [r, K + P] (the
        teacher's top-K, then the student's top-P) and their RCEColumns without scores, with L positions of the
        student's list drawn for the closure (closure_log_weights)."""
        if self.rce_stale or self.rce_state is None:
            self._refresh_rce(model)
        kn, top, top_valid, teacher_rank_of_top = self.knowledge, *self.rce_state
        k, p = kn.k, top.shape[1]
        student_items, student_ok = top.index_select(0, rows), top_valid.index_select(0, rows)  # [r, P]
        student_rank = teacher_rank_of_top.index_select(0, rows)
        log_w = closure_log_weights(student_rank < k, student_ok, self.config.rce_sample_temperature)
        sampled, sampled_ok = gumbel_topk(log_w, min(self.config.rce_samples, p), self.generator)
        columns = RCEColumns(teacher_top=slice(0, k), student_top=slice(k, k + p), student_top_rank=student_rank,
                             sampled=sampled, sampled_ok=sampled_ok, rows=len(rows),
                             valid=torch.cat([kn.valid.index_select(0, rows), student_ok], dim=1))
        return torch.cat([kn.items.index_select(0, rows), student_items], dim=1), columns

    def _rce_scores(self, c: RCEColumns, student: torch.Tensor, rows: torch.Tensor, items: torch.Tensor):
        """RCEColumns with the scores of its r rows (users [r]): the student's [r, K + P], and the teacher's with
        the mask of the known ones. The teacher's top-K scores come from the knowledge; the student's top-P are
        scored by the online teacher (all known), or, cached, known only inside the teacher's top-K (0
        elsewhere)."""
        kn, k = self.knowledge, self.knowledge.k
        top_scores, top_known = kn.scores.index_select(0, rows), kn.valid.index_select(0, rows)
        rest_valid = c.valid[:, k:]
        if self.teacher is None:
            inside = rest_valid & (c.student_top_rank < k)
            rest = _pick(kn.scores, rows, c.student_top_rank.clamp_max(k - 1)) * inside
        elif self.teacher_vectors is not None:
            rest, inside = self._teacher_scores(rows, items[:, k:], None), rest_valid
        else:
            with torch.no_grad():
                rest, inside = self.teacher(rows, items[:, k:]).scores, rest_valid
        return replace(c, student=student, teacher=torch.cat([top_scores, rest.to(top_scores.dtype)], dim=1),
                       known=torch.cat([top_known, inside], dim=1))

    @torch.no_grad()
    def _refresh_rce(self, model: Ranker) -> None:
        """The student's top-P of every user (once per epoch, training items left out) and the teacher rank of
        each of them (K where outside the teacher's top-K)."""
        kn = self.knowledge
        top, top_valid, _, teacher_rank_of_top = rank_with_positions(model, self.exclude, self.rce_pool, kn.items,
                                                                     kn.valid, with_ranks=False)
        self.rce_state, self.rce_stale = (top, top_valid, teacher_rank_of_top), False

    def _uninteresting(self, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor,
                       seen: torch.Tensor | None) -> torch.Tensor:
        """bool [B, S]: the shared negatives that are neither the row's positive, nor in its teacher top-K, nor
        (``seen``) one of the user's training items."""
        kn = self.knowledge
        hit = negatives_hit(negs, kn.items.index_select(0, users), kn.valid.index_select(0, users))
        hit = hit | (negs[None, :] == pos[:, None])
        return ~hit if seen is None else ~(hit | seen)

    def _seen_negatives(self, users: torch.Tensor, negs: torch.Tensor) -> torch.Tensor | None:
        """bool [B, S]: the shared negatives that are training items of the row's user (None without
        ``exclude``). Such an item is left out of every ranking, so it must not count as ranked above or below
        anything (RD's rank estimate, RRD's uninteresting items)."""
        if self.exclude is None:
            return None
        rows, items = rows_of(self._exclude_here, users)
        return negatives_hit_pairs(negs, rows, items, len(users))

    def _cached_teacher(self, users, ranks, topk_valid, extra):
        """Teacher scores [B, n_own] of the own columns from the knowledge (0 where unknown) and the mask of the
        known ones: the top-K columns, and the items of the further blocks (dcd, rce: ``extra``, their teacher
        ranks and real masks) inside the teacher's top-K."""
        kn = self.knowledge
        zeros = torch.zeros_like(ranks[:, :1], dtype=kn.scores.dtype)
        scores, known = [zeros, _pick(kn.scores, users, ranks)], [zeros.bool(), topk_valid]
        for block_ranks, real in extra:
            inside = real & (block_ranks < kn.k)
            scores.append(_pick(kn.scores, users, block_ranks.clamp_max(kn.k - 1)) * inside)
            known.append(inside)
        return torch.cat(scores, dim=1), torch.cat(known, dim=1)


def _own_scores(fwd: Forward, r: int, n_list: int) -> torch.Tensor:
    """The student's scores [r, 1 + n_list] of the first r rows' own lists: the observed item, then the first
    ``n_list`` extra candidates (the top-K and dcd blocks)."""
    observed = fwd.own_scores[:r, :1]
    return torch.cat([observed, fwd.extra_scores[:, :n_list]], dim=1) if n_list else observed


def _negatives_scores(fwd: Forward, r: int, dot_product: bool) -> torch.Tensor:
    """The student's scores [r, S] of the shared negatives on the first r rows. A dot-product ranker's are one
    [r, S] product of its vectors (the gradient of a slice of the [B, S] block would be a zero-filled [B, S])."""
    if fwd.shared_scores is None:  # the model returned one [B, 1 + S] block
        return fwd.own_scores[:r, 1:]
    if dot_product and fwd.shared_hidden is not None and r < fwd.shared_scores.shape[0]:
        return fwd.user_hidden[:r] @ fwd.shared_hidden.T
    return fwd.shared_scores[:r]


def negatives_hit_pairs(negs: torch.Tensor, rows: torch.Tensor, items: torch.Tensor, b: int) -> torch.Tensor:
    """Shared negatives [S] and pairs (batch row [P], item [P]) -> bool [B, S]: negative j is one of row r's
    items. Each pair's item is searched among the sorted negatives (O((P + S) log S), nothing the size of the
    catalogue: a map of all items cost 0.3 ms per step on 500k items); a repeated negative shares the answer
    of its first sorted copy. No host sync."""
    s = len(negs)
    ordered = negs.sort().values
    at = torch.searchsorted(ordered, items).clamp_max(s - 1)  # the first negative >= the item
    column = torch.where(ordered.index_select(0, at) == items, at, s)  # column s: not a negative
    hit = torch.zeros(b, s + 1, dtype=torch.bool, device=negs.device)
    hit[rows, column] = True
    return hit.gather(1, torch.searchsorted(ordered, negs).expand(b, -1))


def negatives_hit(negs: torch.Tensor, items: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Shared negatives [S], each row's items [B, L] with their real mask [B, L] -> bool [B, S]: negative j is
    one of row r's real items."""
    b, width = items.shape
    rows = torch.arange(b, device=items.device).repeat_interleave(width)
    unreal = torch.full_like(items, -1)  # an id no negative has: a padding entry hits nothing
    return negatives_hit_pairs(negs, rows, torch.where(real, items, unreal).reshape(-1), b)


def _pick(table: torch.Tensor, users: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """table [U, K], users [B], columns int64 [B, M] -> table[users[b], columns[b, m]] [B, M]. The B whole rows
    first, then the columns: in a training step this beats reading the B·M entries where they are (``take``,
    or a flat index_select), 9.29 against 10.46 / 9.80 ms per step on ``benchmarks/training.py``'s cached
    ``listkl`` and 8.41 against 8.75 / 8.54 ms on Gowalla's (in-process A/B), though ``take`` wins a warm-cache
    micro-benchmark: whole rows are read in order, scattered entries are cache misses."""
    return table.index_select(0, users).gather(1, columns)


def _check(teacher: Ranker | None, knowledge: TeacherKnowledge, names: list[str]) -> None:
    if teacher is None:
        needing = [n for n in names if KD_LOSSES[n].needs_teacher]
        if needing:
            able = ", ".join(n for n, t in KD_LOSSES.items() if not t.needs_teacher)
            raise RankdistillError(
                f"--kd {'+'.join(needing)} needs the teacher's weights (its user and item representations), but "
                f"distillation runs from the cached knowledge alone (the teacher's top-{knowledge.k} items and "
                f"scores); pass the teacher, or choose from {able}")
        return
    if (teacher.n_users, teacher.n_items) != (knowledge.n_users, knowledge.n_items):
        raise RankdistillError(
            f"the teacher has {teacher.n_users} users and {teacher.n_items} items but its knowledge has "
            f"{knowledge.n_users} users and {knowledge.n_items} items; recompute the knowledge from this teacher")


def _device(model: Ranker) -> torch.device:
    tables = model.tables()
    return tables[0].weight.device if tables else next(model.parameters()).device


def _hidden_dims(teacher: Ranker, device: torch.device) -> tuple[int, int]:
    """(user, item) widths of the teacher's representations (Forward.user_hidden / item_hidden)."""
    with torch.no_grad():
        zero = torch.zeros(1, dtype=torch.int64, device=device)
        f = teacher(zero, zero[:, None])
    return f.user_hidden.shape[-1], f.item_hidden.shape[-1]
