"""Softmax cross-entropy with a background class, for two-stage (RoI) heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._base import ClsLoss, apply_weight, check_cls_inputs, reduce_loss


@register_loss("ce")
class CrossEntropyLoss(ClsLoss):
    """Softmax cross-entropy over C classes + background (last logit column), for two-stage heads.

    Paper: Girshick, "Fast R-CNN", ICCV 2015 (softmax classifier over K + 1 classes).

    Per row: ``-log softmax(logits)[label]``.

    Unlike the sigmoid losses, ``logits`` carry one column per class *plus* a last
    background column: ``logits [N, C + 1]``, ``labels [N]`` in ``0..C`` where ``C``
    (the last column) is background, ``-1`` ignored. So the background label is the
    same number as for the sigmoid losses with ``C`` classes; only the logits have
    one more column. The class attribute ``background_column = True`` tells generic
    code (heads, benchmarks, tests) about it. Labels outside ``-1..C`` raise ``ValueError``.

    Reduction is per row: ``"none"`` returns ``[N]`` (0 at ignored rows), ``"sum"``
    the sum, ``"mean"`` the sum divided by ``avg_factor`` when given, else by the
    number of non-ignored rows.

    Defaults: ``reduction="mean", loss_weight=1.0`` (no other hyperparameters).

    Shapes: ``logits [N, C + 1]``, ``labels [N]``, optional per-row ``weight [N]``;
    ``quality`` is not used.
    """

    paper = "Girshick, Fast R-CNN, ICCV 2015"
    background_column = True

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        quality: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        name = type(self).__name__
        n, k = check_cls_inputs(name, logits, labels)
        if k < 2:
            raise ValueError(f"{name}: logits must be [N, C + 1] with a background column, got {k} column(s)")
        if weight is not None and weight.shape != (n,):
            raise ValueError(f"{name}: weight must be per row [N]={n}, got shape {tuple(weight.shape)}")
        labels = labels.long()
        if n > 0 and bool(((labels < -1) | (labels >= k)).any()):
            raise ValueError(
                f"{name}: labels must be in -1..{k - 1} (C = {k - 1} is background, the last of the {k} logit "
                f"columns), got values in {int(labels.min())}..{int(labels.max())}"
            )
        with torch.autocast(logits.device.type, enabled=False):
            # ignore_index gives ignored rows a loss of exactly 0 and no gradient.
            loss = F.cross_entropy(logits.float(), labels, reduction="none", ignore_index=-1)
            loss = apply_weight(loss, weight)
            loss = reduce_loss(loss, self.reduction, avg_factor, (labels >= 0).sum())
        return loss * self.loss_weight
