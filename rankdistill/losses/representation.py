"""Representation distillation: the student's user and item representations, mapped to the teacher's width
by a learned module, match the teacher's.

- Hint loss through a linear regressor (FitNets, Romero et al., ICLR 2015).
- Distillation Experts (DE; Kang et al., "DE-RRD: A Knowledge Distillation Framework for Recommender System",
  CIKM 2020): several small MLP experts map the student's representation to the teacher's space; a gate on
  the teacher's representation picks one per entity (Gumbel-softmax, annealed to a hard choice).

The losses are pure functions of tensors; the learned maps are the modules :class:`HintProjection` and
:class:`DistillationExperts`, owned by the distillation objective (their weights train with Adam). Their
input layers are lazy: the student's width is read at the first batch.

Shapes: N entities (users or items), D_s the student's width, D_t the teacher's, E experts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rankdistill.losses._masking import masked_mean


def hint_loss(projected: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""FitNets hint loss (Romero et al., ICLR 2015, Eq. 3), averaged over entities:

    .. math:: L = \frac{1}{|M|} \sum_{n \in M} \tfrac12 \lVert r(h^s_n) - h^t_n \rVert_2^2

    ``projected`` [N, D_t] the regressor's output :math:`r(h^s)`, ``teacher`` [N, D_t], ``mask`` [N].
    Zero when the projection reproduces the teacher.
    """
    return masked_mean(0.5 * (projected - teacher).square().sum(-1), mask)


def experts_loss(
    expert_outputs: torch.Tensor,
    gate_logits: torch.Tensor,
    teacher: torch.Tensor,
    gumbel: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    tau: float,
) -> torch.Tensor:
    r"""Distillation Experts loss (Kang et al., CIKM 2020, Eq. 2–4):

    .. math:: \alpha_n = \mathrm{softmax}\big((\log \mathrm{softmax}(g_n) + \gamma_n) / \tau\big),\quad
              L = \frac{1}{|M|} \sum_{n \in M} \Big\lVert h^t_n - \sum_{e=1}^{E} \alpha_{ne}\, f_e(h^s_n) \Big\rVert_2^2

    ``expert_outputs`` [N, E, D_t] the experts' outputs :math:`f_e(h^s_n)`, ``gate_logits`` [N, E] the
    selection network's logits on the teacher's representation, ``teacher`` [N, D_t], ``gumbel`` [N, E]
    Gumbel(0, 1) noise γ (passed in so the function stays deterministic), ``tau`` > 0 the Gumbel-softmax
    temperature (small: close to one expert per entity). Zero when the selected experts reproduce the teacher.
    """
    alpha = torch.softmax((torch.log_softmax(gate_logits, dim=-1) + gumbel) / tau, dim=-1)  # [N, E]
    recon = (alpha[..., None] * expert_outputs).sum(-2)  # [N, D_t]
    return masked_mean((teacher - recon).square().sum(-1), mask)


def anneal(start: float, end: float, epoch: int, epochs: int) -> float:
    """Geometric schedule: ``start`` at epoch 1, ``end`` at epoch ``epochs`` and after."""
    t = min(max(epoch - 1, 0), max(epochs - 1, 1)) / max(epochs - 1, 1)
    return math.exp(math.log(start) + t * (math.log(end) - math.log(start)))


class HintProjection(nn.Module):
    """The FitNets regressor: a linear map [N, D_s] -> [N, D_t] (D_s read at the first call)."""

    def __init__(self, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(teacher_dim)

    def forward(self, student: torch.Tensor) -> torch.Tensor:
        return self.proj(student)


class DistillationExperts(nn.Module):
    """E experts ``D_s -> hidden -> D_t`` (Linear, ReLU, Linear) and a selection network ``D_t -> E``.

    The first layers of all experts are one (lazy) linear layer, the second a batched matmul. The authors'
    code uses hidden = (D_s + D_t) / 2; here hidden = D_t / 2 (D_s is not known before the first batch),
    close to it when the student is much narrower than the teacher.
    """

    def __init__(self, teacher_dim: int, n_experts: int, hidden: int | None = None) -> None:
        super().__init__()
        self.n_experts, self.hidden = n_experts, hidden or max(teacher_dim // 2, 1)
        self.first = nn.LazyLinear(n_experts * self.hidden)
        bound = 1.0 / math.sqrt(self.hidden)
        self.w2 = nn.Parameter(torch.empty(n_experts, self.hidden, teacher_dim).uniform_(-bound, bound))
        self.b2 = nn.Parameter(torch.empty(n_experts, teacher_dim).uniform_(-bound, bound))
        self.gate = nn.Linear(teacher_dim, n_experts)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """student [N, D_s], teacher [N, D_t] -> (expert outputs [N, E, D_t], gate logits [N, E])"""
        h = torch.relu(self.first(student)).view(len(student), self.n_experts, self.hidden)  # [N, E, H]
        out = torch.einsum("neh,ehd->ned", h, self.w2) + self.b2
        return out, self.gate(teacher)
