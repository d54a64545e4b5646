"""Binary cross-entropy on sigmoid logits, against one-hot or soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._base import ClsLoss, apply_weight, check_cls_inputs, reduce_loss


@register_loss("bce")
class BCELoss(ClsLoss):
    """Binary cross-entropy on sigmoid logits (one-hot or soft targets; also for centerness/quality branches).

    Paper: the standard logistic loss; as a detection loss e.g. the centerness
    branch of Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019.

    Per element: ``-(t log p + (1 - t) log(1 - p))``, ``p = sigmoid(logit)``,
    computed by ``torch.nn.functional.binary_cross_entropy_with_logits``.
    ``t`` is the one-hot target built from ``labels``, or the soft target the
    caller passes as ``target=`` (e.g. centerness values in [0, 1]).

    Defaults: ``reduction="mean", loss_weight=1.0`` (no other hyperparameters).

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored), optional ``target [N, C]`` (or ``[N]`` when ``C == 1``) float
    soft target, which replaces the one-hot target; ``labels`` still mark the
    ignored rows. ``weight [N]`` or ``[N, C]``. Returns a scalar, or ``[N, C]`` with
    ``reduction="none"``. ``quality`` is not used.
    """

    paper = "Standard binary cross-entropy; e.g. centerness in Tian et al., FCOS, ICCV 2019"

    def elementwise(self, logits: Tensor, targets: Tensor, labels: Tensor, quality: Tensor | None) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        quality: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        if target is None:
            return super().forward(logits, labels, quality, weight, avg_factor)
        n, c = check_cls_inputs(type(self).__name__, logits, labels)
        if target.shape == (n,) and c == 1:
            target = target[:, None]
        if target.shape != (n, c):
            raise ValueError(f"BCELoss: target must be [N, C]={n, c} (or [N] when C == 1), got {tuple(target.shape)}")
        with torch.autocast(logits.device.type, enabled=False):
            valid = labels >= 0
            loss = F.binary_cross_entropy_with_logits(logits.float(), target.detach().float(), reduction="none")
            loss = torch.where(valid[:, None], loss, loss.new_zeros(()))
            loss = apply_weight(loss, weight)
            loss = reduce_loss(loss, self.reduction, avg_factor, valid.sum() * c)
        return loss * self.loss_weight
