"""Pointwise distillation: each (user, item) score of the student matches the teacher's, item by item.

Shapes: ``student``, ``teacher`` [B, L] scores (logits) of the same candidates; ``mask`` [B, L] bool,
True where a candidate is real and its teacher score known (None = all).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rankdistill.losses._masking import masked_mean


def score_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mean squared error between scores (logit matching, Ba & Caruana, NeurIPS 2014):

    .. math:: L = \frac{1}{|M|} \sum_{(b,l) \in M} (s_{bl} - t_{bl})^2

    Zero when student == teacher. Not shift-invariant: the student learns the teacher's scale and offset.
    """
    return masked_mean((student - teacher).square(), mask)


def soft_label_bce(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, *, temperature: float = 1.0
) -> torch.Tensor:
    r"""Binary cross-entropy against the teacher's soft labels with temperature T
    (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015):

    .. math:: L = \frac{T^2}{|M|} \sum_{(b,l)\in M} \mathrm{BCE}\big(\sigma(s_{bl}/T),\ \sigma(t_{bl}/T)\big)

    The :math:`T^2` factor keeps gradient magnitudes comparable across temperatures. The minimum over the
    student is reached at ``student == teacher`` (the loss there is the teacher's entropy, not 0).
    """
    target = torch.sigmoid(teacher / temperature)
    bce = F.binary_cross_entropy_with_logits(student / temperature, target, reduction="none")
    return masked_mean(bce, mask) * temperature**2
