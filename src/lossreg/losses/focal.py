"""Sigmoid focal loss (Lin et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._base import ClsLoss


@register_loss("focal")
class FocalLoss(ClsLoss):
    """Sigmoid focal loss: BCE scaled down on easy examples by ``(1 - p_t)^gamma``.

    Paper: Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017.

    Per element, with ``p = sigmoid(logit)`` and one-hot target ``t``::

        FL = -alpha_t * (1 - p_t)^gamma * log(p_t)
        p_t = p if t = 1 else 1 - p;   alpha_t = alpha if t = 1 else 1 - alpha

    Same values as ``torchvision.ops.sigmoid_focal_loss`` (``alpha < 0`` disables
    ``alpha_t`` there and here).

    Defaults: ``alpha=0.25, gamma=2.0, reduction="mean", loss_weight=1.0``.

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored), optional ``weight [N]`` or ``[N, C]``; returns a scalar, or
    ``[N, C]`` with ``reduction="none"``. ``quality`` is not used.
    """

    paper = "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017"

    def __init__(
        self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if gamma < 0:
            raise ValueError(f"focal: parameter 'gamma' must be >= 0, got {gamma}")
        if not alpha <= 1:  # alpha > 1 gives the negatives a negative weight; NaN fails this too
            raise ValueError(f"focal: parameter 'alpha' must be <= 1 (a negative alpha switches alpha_t off), got {alpha}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def elementwise(self, logits: Tensor, targets: Tensor, labels: Tensor, quality: Tensor | None) -> Tensor:
        pos = targets > 0
        # With s = -x at targets and x elsewhere, 1 - p_t = sigmoid(s) and -log p_t = softplus(s):
        # one signed logit replaces torchvision's p_t / (1 - p_t) / alpha_t arithmetic (fewer full-size passes).
        s = torch.where(pos, -logits, logits)
        modulator = torch.sigmoid(s)
        if self.gamma < 1.0:
            # d/ds sigmoid(s)^gamma is 0 * inf at a saturated sigmoid when gamma < 1; keep it finite.
            modulator = modulator.clamp_min(torch.finfo(modulator.dtype).tiny)
        loss = F.softplus(s) * modulator.pow(self.gamma)
        if self.alpha >= 0:
            loss = loss * torch.where(pos, self.alpha, 1.0 - self.alpha)
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, " + super().extra_repr()
