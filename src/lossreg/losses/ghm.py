"""Gradient harmonizing classification loss (Li et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._ghm_weights import GHMWeightedLoss


@register_loss("ghm_c")
class GHMCLoss(GHMWeightedLoss):
    """GHM-C: BCE re-weighted by the inverse density of its gradient norm ``|p - t|``.

    Paper: Li, Liu, Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019.

    Per element, ``g = |p - t|`` (detached) falls in one of ``bins`` equal-width bins
    on [0, 1]. ``tot`` = number of valid elements (``N_valid * C``). For a non-empty
    bin ``k`` with ``num_k`` elements: with ``momentum > 0`` the buffer
    ``acc_k = momentum * acc_k + (1 - momentum) * num_k`` (starts at 0, updated in
    training mode only, saved in ``state_dict``) and weight ``beta = tot / acc_k``;
    with ``momentum = 0`` weight ``tot / num_k``. All weights are divided by the
    number of non-empty bins::

        loss = sum(beta * BCE(logit, t)) / tot

    ``reduction="none"`` returns ``beta * BCE`` per element, ``"sum"`` its sum,
    ``"mean"`` its sum divided by ``tot``. ``avg_factor`` is ignored: the
    normalisation is built in, as in the paper's code.

    Defaults: ``bins=30, momentum=0.75, reduction="mean", loss_weight=1.0``: the GHM
    paper's setting and mmdetection's GHM configs (the authors' code notes "mmt=0.75 in
    experiments", "bins=30"); the class default of 10 in both codes is not the setting they report.

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored: not binned, not counted in ``tot``), optional ``weight [N]`` or
    ``[N, C]`` (multiplies the result); returns a scalar, or ``[N, C]``. ``quality`` is not used.
    """

    paper = "Li et al., Gradient Harmonized Single-stage Detector, AAAI 2019"

    def __init__(
        self, bins: int = 30, momentum: float = 0.75, reduction: str = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(bins=bins, momentum=momentum, reduction=reduction, loss_weight=loss_weight, owner="ghm_c")

    def elementwise(self, logits: Tensor, targets: Tensor, labels: Tensor, quality: Tensor | None) -> Tensor:
        beta = self.ghm_weights(torch.sigmoid(logits.detach()), targets, labels >= 0)
        return beta * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
