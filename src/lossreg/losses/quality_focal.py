"""Quality focal loss (Li et al. 2020, Generalized Focal Loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._base import ClsLoss


@register_loss("qfl")
class QualityFocalLoss(ClsLoss):
    """Quality focal loss: BCE against an IoU soft target, scaled by ``|y - p|^beta``.

    Paper: Li, Wang, Wu, Chen, Hu, Li, Tang, Yang, "Generalized Focal Loss: Learning
    Qualified and Distributed Bounding Boxes for Dense Object Detection", NeurIPS 2020.

    Per element, with ``p = sigmoid(logit)`` and soft target ``y`` (``quality`` of
    the row at its positive class, 0 at every other element and on background rows)::

        QFL = -|y - p|^beta * ((1 - y) log(1 - p) + y log p)

    The scale ``|y - p|^beta`` is not detached (as in the paper's code). The minimum,
    0, is reached at ``p = y``.

    Defaults: ``beta=2.0, reduction="mean", loss_weight=1.0``.

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored), ``quality [N]`` required (IoU of the positive's predicted box
    with its ground truth; ignored on background rows), optional ``weight [N]`` or
    ``[N, C]``; returns a scalar, or ``[N, C]`` with ``reduction="none"``.
    """

    paper = "Li et al., Generalized Focal Loss, NeurIPS 2020"
    uses_quality = True

    def __init__(self, beta: float = 2.0, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if beta < 0:
            raise ValueError(f"qfl: parameter 'beta' must be >= 0, got {beta}")
        self.beta = float(beta)

    def elementwise(self, logits: Tensor, targets: Tensor, labels: Tensor, quality: Tensor | None) -> Tensor:
        assert quality is not None  # ClsLoss.forward enforces uses_quality
        y = targets * quality[:, None]
        scale = (torch.sigmoid(logits) - y).abs()
        if self.beta < 1.0:
            # |d|^beta has an infinite derivative at d = 0 for beta < 1; keep gradients finite.
            scale = scale.clamp_min(torch.finfo(scale.dtype).tiny)
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none") * scale.pow(self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()
