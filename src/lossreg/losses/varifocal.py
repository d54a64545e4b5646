"""Varifocal loss (Zhang et al. 2021, VarifocalNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._base import ClsLoss


@register_loss("vfl")
class VarifocalLoss(ClsLoss):
    """Varifocal loss: IoU-weighted BCE on positives, focal down-weighting on negatives only.

    Paper: Zhang, Wang, Dayoub, Sunderhauf, "VarifocalNet: An IoU-aware Dense Object
    Detector", CVPR 2021.

    Per element, with ``p = sigmoid(logit)`` and target ``q`` (``quality`` of the row
    at its positive class, 0 at every other element and on background rows)::

        q > 0:  VFL = -q * (q log p + (1 - q) log(1 - p))
        q = 0:  VFL = -alpha * p^gamma * log(1 - p)

    The weights are not detached (as in the paper's code). A positive whose
    ``quality`` is exactly 0 is treated like a negative element.

    Defaults: ``alpha=0.75, gamma=2.0, reduction="mean", loss_weight=1.0``.

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored), ``quality [N]`` required (ignored on background rows), optional
    ``weight [N]`` or ``[N, C]``; returns a scalar, or ``[N, C]`` with ``reduction="none"``.
    """

    paper = "Zhang et al., VarifocalNet: An IoU-aware Dense Object Detector, CVPR 2021"
    uses_quality = True

    def __init__(
        self, alpha: float = 0.75, gamma: float = 2.0, reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if gamma < 0:
            raise ValueError(f"vfl: parameter 'gamma' must be >= 0, got {gamma}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def elementwise(self, logits: Tensor, targets: Tensor, labels: Tensor, quality: Tensor | None) -> Tensor:
        assert quality is not None  # ClsLoss.forward enforces uses_quality
        q = targets * quality[:, None]
        p = torch.sigmoid(logits)
        if self.gamma < 1.0:
            p = p.clamp_min(torch.finfo(p.dtype).tiny)  # finite d(p^gamma)/dp at a saturated sigmoid
        focal_weight = torch.where(q > 0, q, self.alpha * p.pow(self.gamma))
        return F.binary_cross_entropy_with_logits(logits, q, reduction="none") * focal_weight

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, " + super().extra_repr()
