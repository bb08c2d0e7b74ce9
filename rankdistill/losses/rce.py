r"""RCE-KD: cross-entropy on the teacher's top-K, made to respect the student's ranking (Zhu & Zhang,
"Rejuvenating Cross-Entropy Loss in Knowledge Distillation for Recommender Systems", ICLR 2026,
arXiv:2509.20989; the authors' code: github.com/woriazzc/RCEKD, class ``RCEKD``).

Cross-entropy between the teacher's and the student's softmax over an item subset J bounds NDCG on J from
below only if J is *closed* under the student's ranking: every item the student ranks above a member of J is
in J (the paper's Assumption 4.3). The student's own top-K is closed; the teacher's top-K T, the ranking
distillation is after, usually is not. RCE-KD splits T by the student's top-K S:

- the teacher's items inside S are learnt by cross-entropy over S, which is closed;
- the rest, T \ S, by cross-entropy over J = I ∪ (T \ S), where I are L items drawn from the student's top-P
  list, preferring those it ranks above many teacher items: the items that keep T \ S from being closed;

and the two parts are mixed by how much of T the draw I covers. Ranks are 0-based and count the whole
catalogue; lists are best first.
"""

from __future__ import annotations

import torch

from rankdistill.losses._masking import mask_logits

CLOSURE_COUNT_CAP = 50.0  # the authors' code caps the count c_j of the closure weight at 50


def closure_log_weights(
    in_teacher_top: torch.Tensor, valid: torch.Tensor, temperature: float, cap: float = CLOSURE_COUNT_CAP
) -> torch.Tensor:
    r"""Log weights of the closure draw over the student's top-P list (RCE-KD's sampler):

    .. math:: \log w_j = \min(c_j, \mathrm{cap}) / T_s, \qquad
              c_j = \big|\{ j' \ge j : \text{the student's } j'\text{-th item} \in T \}\big|

    ``in_teacher_top`` bool [B, P]: the student's j-th item (its order) is in the teacher's top-K;
    ``valid`` bool [B, P] real entries. -> float [B, P], -inf where not valid. c_j counts the teacher's items
    the student ranks at or below position j, so an item placed above many of them is drawn more often.
    (The authors' code writes exp((c + 1)/T); the +1 cancels in the normalisation.)
    """
    inside = (in_teacher_top & valid).to(torch.float32)
    at_or_below = inside.flip(1).cumsum(1).flip(1)
    return (at_or_below.clamp_max(cap) / temperature).masked_fill(~valid, float("-inf"))


def subset_cross_entropy(
    student: torch.Tensor,
    teacher: torch.Tensor,
    member: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    r"""Cross-entropy from the teacher's to the student's softmax over a subset J of each row:

    .. math:: H_J = -\sum_{i \in J} p^t_J(i) \log p^s_J(i), \qquad
              p^x_J(i) = \frac{e^{x_i/\tau}}{\sum_{j \in J} e^{x_j/\tau}}

    ``student``, ``teacher`` [B, N]; ``member`` bool [B, N]: the columns in J; ``target`` bool [B, N] (None =
    all): the members whose teacher score is known. Members without one get no teacher mass (as if their
    teacher score were −∞) but stay in the student's normaliser. -> float [B], 0 for a row with no target.
    Invariant to adding a constant to either row; its gradient in the student is p^s_J − p^t_J.
    """
    has_target = member if target is None else member & target
    log_ps = torch.log_softmax(mask_logits(student.float() / temperature, member), dim=1)
    pt = torch.softmax(mask_logits(teacher.float() / temperature, has_target), dim=1) * has_target
    return -(pt * log_ps).sum(1)


def _mark(ranks: torch.Tensor, real: torch.Tensor, k: int) -> torch.Tensor:
    """ranks int64 [B, n] teacher ranks, real bool [B, n] -> bool [B, k]: the teacher ranks < k held by a real entry."""
    slot = torch.where(real & (ranks < k), ranks, torch.full_like(ranks, k))
    hit = torch.zeros(ranks.shape[0], k + 1, dtype=torch.bool, device=ranks.device)
    return hit.scatter_(1, slot, True)[:, :k]


def teacher_top_membership(
    student_top_rank: torch.Tensor, student_top_valid: torch.Tensor, sampled: torch.Tensor,
    sampled_ok: torch.Tensor, k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of the teacher's top-K are in the student's top-K, and which were drawn for the closure.

    ``student_top_rank`` int64 [B, P] the teacher rank of each item of the student's top-P (>= k: outside the
    teacher's top-K), ``student_top_valid`` bool [B, P], ``sampled`` int64 [B, L] positions in that list,
    ``sampled_ok`` bool [B, L]. -> (in S bool [B, K], in I bool [B, K]), by teacher rank.
    """
    drawn_ok = sampled_ok & student_top_valid.gather(1, sampled)
    return (_mark(student_top_rank[:, :k], student_top_valid[:, :k], k),
            _mark(student_top_rank.gather(1, sampled), drawn_ok, k))


def rce_kd(
    teacher_top: torch.Tensor,
    teacher_top_t: torch.Tensor,
    teacher_top_valid: torch.Tensor,
    student_top: torch.Tensor,
    student_top_t: torch.Tensor,
    student_top_known: torch.Tensor,
    student_top_valid: torch.Tensor,
    student_top_rank: torch.Tensor,
    sampled: torch.Tensor,
    sampled_ok: torch.Tensor,
    *,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    r"""RCE-KD (Zhu & Zhang, ICLR 2026; the authors' ``RCEKD.get_loss``). Per user, with T the teacher's
    top-K, S the student's top-K and I the closure draw from the student's top-P (:func:`closure_log_weights`):

    .. math::
        L_S = H_S, \qquad L_T = H_{I \cup (T \setminus S)}, \qquad
        \gamma = e^{-\beta\, |T \cap I| / |T|}, \qquad
        L = \frac1B \sum_u (1 - \gamma_u)\, L_{S,u} + \gamma_u\, L_{T,u}

    with H_J the cross-entropy of :func:`subset_cross_entropy` at temperature τ. The less of T the draw
    covers, the more weight goes to the closure part. γ is not differentiated.

    The teacher's top-K: ``teacher_top`` [B, K] student scores, ``teacher_top_t`` [B, K] teacher scores,
    ``teacher_top_valid`` bool [B, K]. The student's top-P (P >= K, its order; the first K are S):
    ``student_top`` [B, P] student scores, ``student_top_t`` [B, P] teacher scores, ``student_top_known``
    bool [B, P] where the teacher score is known (from cached knowledge: only inside the teacher's top-K;
    the others then take no teacher mass), ``student_top_valid`` bool [B, P], ``student_top_rank`` int64
    [B, P] their teacher ranks (>= K: outside T). The draw: ``sampled`` int64 [B, L] positions in the
    student's list, ``sampled_ok`` bool [B, L]. A teacher item in S but not drawn takes no part in L_T (as in
    the authors' code).
    """
    k = teacher_top.shape[1]
    in_s, in_i = teacher_top_membership(student_top_rank, student_top_valid, sampled, sampled_ok, k)
    loss_s = subset_cross_entropy(student_top[:, :k], student_top_t[:, :k], student_top_valid[:, :k],
                                  student_top_known[:, :k], temperature=temperature)
    drawn_ok = sampled_ok & student_top_valid.gather(1, sampled)
    rest = teacher_top_valid & ~in_s & ~in_i  # T \ S, less what the draw already holds
    loss_t = subset_cross_entropy(
        torch.cat([student_top.gather(1, sampled), teacher_top], dim=1),
        torch.cat([student_top_t.gather(1, sampled), teacher_top_t], dim=1),
        torch.cat([drawn_ok, rest], dim=1),
        torch.cat([drawn_ok & student_top_known.gather(1, sampled), rest], dim=1),
        temperature=temperature,
    )
    overlap = in_i.sum(1) / teacher_top_valid.sum(1).clamp_min(1)
    gamma = torch.exp(-beta * overlap.to(loss_s.dtype))
    return ((1 - gamma) * loss_s + gamma * loss_t).mean()
