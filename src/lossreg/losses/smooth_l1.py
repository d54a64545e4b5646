"""Delta-space regression losses: ``l1`` and ``smooth_l1`` on encoded ``(dx, dy, dw, dh)``.

The head encodes targets with :class:`lossreg.ops.box_coder.DeltaBoxCoder`
(``space = "delta"``); these losses never see pixel boxes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .._registry import register_loss
from ._base import RegLoss

__all__ = ["L1Loss", "SmoothL1Loss"]


@register_loss("l1")
class L1Loss(RegLoss):
    """L1 distance between predicted and target box deltas (summed over dx, dy, dw, dh).

    Paper: R. Girshick, "Fast R-CNN", ICCV 2015 (the delta parameterisation and
    L1-type box losses); the plain L1 form is torchvision's RetinaNet default.

    Row loss: ``sum_k |pred_k - target_k|`` over the 4 encoded deltas, so
    ``mean`` divides by the number of boxes, as torchvision's detection heads do.

    Args:
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` ["mean"].
        loss_weight: multiplies the result [1.0].

    Shapes: ``pred``, ``target``: encoded deltas ``[N, 4]``; ``"none"`` returns ``[N]``.
    """

    space = "delta"
    paper = "Girshick, Fast R-CNN, ICCV 2015"

    def rowwise(self, pred: Tensor, target: Tensor, scores: Tensor | None) -> Tensor:
        return (pred - target).abs().sum(dim=-1)


@register_loss("smooth_l1")
class SmoothL1Loss(RegLoss):
    """Smooth L1 (Huber-type) loss on box deltas, summed over dx, dy, dw, dh.

    Paper: R. Girshick, "Fast R-CNN", ICCV 2015, eq. 3.

    Per coordinate, with ``d = |pred - target|``: ``0.5 d^2 / beta`` if ``d < beta``
    else ``d - 0.5 beta`` (``torch.nn.functional.smooth_l1_loss``); the row loss
    sums the 4 coordinates.

    Args:
        beta: width of the quadratic zone [1/9, as Detectron's RetinaNet and
            torchvision's Faster R-CNN use; mmdetection's default is 1.0;
            ``beta=0`` is plain L1].
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` ["mean"].
        loss_weight: multiplies the result [1.0].

    Shapes: ``pred``, ``target``: encoded deltas ``[N, 4]``; ``"none"`` returns ``[N]``.
    """

    space = "delta"
    paper = "Girshick, Fast R-CNN, ICCV 2015"

    def __init__(self, beta: float = 1.0 / 9.0, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if not beta >= 0:
            raise ValueError(f"smooth_l1: beta must be >= 0, got {beta!r}")
        self.beta = float(beta)

    def rowwise(self, pred: Tensor, target: Tensor, scores: Tensor | None) -> Tensor:
        return F.smooth_l1_loss(pred, target, reduction="none", beta=self.beta).sum(dim=-1)

    def extra_repr(self) -> str:
        return f"beta={self.beta:.6g}, {super().extra_repr()}"
