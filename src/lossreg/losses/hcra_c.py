"""HCRA-C, the classification half of the Hybrid Classification-Regression Adaptive Loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._ghm_weights import GHMWeightedLoss

RCI_MODES = ("consistent", "paper")


@register_loss("hcra_c")
class HCRACLoss(GHMWeightedLoss):
    """HCRA-C: GHM-C re-weighted by IoU (conditioning factor) and by the score-IoU residual (RCI).

    Paper: "Hybrid Classification-Regression Adaptive Loss for Dense Object Detection"
    (HCRAL), anonymous ICLR submission, section 3.1.1, eq. 2-6.

    Per element, ``p = sigmoid(logit)``, one-hot target ``t``, ``q`` = the row's
    ``quality``; every factor is detached::

        L     = CF * RCI * BCE(logit, t)                                       (eq. 6)
        CF    = omega * beta                                                   (eq. 4)
        beta  = GHM-C weight of ``ghm_c`` with ``bins`` and ``momentum``         (eq. 2)
        omega = q                          where t = 1                         (eq. 3)
                1 - q * (q - mu)^2         where t = 0
        RCI   = 1                          where t = 0                         (eq. 5)
                rci_mode="consistent":  sigmoid(theta * (q - p + alpha)) if p < q else 0   (t = 1)
                rci_mode="paper":       sigmoid(theta * (p - q + alpha)) if p > q else 0   (t = 1)

    Why ``"consistent"`` is the default: eq. 5 as printed (``"paper"``) weights a
    positive only when its score already exceeds its IoU. At the start of training
    scores sit near the prior (~0.01), below every positive's IoU, so every positive
    gets weight 0 and the detector never learns to fire. The paper's own requirement
    (section 3.1.1, second point) asks for the opposite: positives whose score is
    well below their IoU get the most attention, decreasing as the score approaches
    the IoU. ``"consistent"`` implements that requirement; ``"paper"`` is kept for
    ablations.

    Normalisation as ``ghm_c``: ``"mean"`` = ``sum(L) / tot`` with ``tot`` = valid
    elements (``N_valid * C``), ``"sum"`` the sum, ``"none"`` ``L`` per element;
    ``avg_factor`` is ignored. The GHM accumulator ``acc_sum`` is a buffer (in
    ``state_dict``), updated in training mode only.

    Defaults: ``theta=5.0, bins=20, momentum=0.75, mu=0.7, alpha=0.1,
    rci_mode="consistent", reduction="mean", loss_weight=1.0``.

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored), ``quality [N]`` required: for a positive the IoU of its predicted
    box with its assigned ground truth, for a negative the largest IoU of its
    predicted box with any ground truth of the image (0 if none). Optional
    ``weight [N]`` or ``[N, C]``. Returns a scalar, or ``[N, C]`` with ``reduction="none"``.
    """

    paper = "Hybrid Classification-Regression Adaptive Loss for Dense Object Detection (HCRAL), ICLR submission"
    uses_quality = True

    def __init__(
        self,
        theta: float = 5.0,
        bins: int = 20,
        momentum: float = 0.75,
        mu: float = 0.7,
        alpha: float = 0.1,
        rci_mode: Literal["consistent", "paper"] = "consistent",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(bins=bins, momentum=momentum, reduction=reduction, loss_weight=loss_weight, owner="hcra_c")
        if rci_mode not in RCI_MODES:
            raise ValueError(f"hcra_c: parameter 'rci_mode' must be one of {RCI_MODES}, got {rci_mode!r}")
        self.theta = float(theta)
        self.mu = float(mu)
        self.alpha = float(alpha)
        self.rci_mode = rci_mode

    def elementwise(self, logits: Tensor, targets: Tensor, labels: Tensor, quality: Tensor | None) -> Tensor:
        assert quality is not None  # ClsLoss.forward enforces uses_quality
        with torch.no_grad():
            probs = torch.sigmoid(logits.detach())
            beta = self.ghm_weights(probs, targets, labels >= 0)
            # Each row has at most one target element, so RCI and omega are row quantities [M, 1]:
            # computing them on the row's own class keeps the full-size [M, C] work to one `where`.
            q = quality[:, None]
            c = logits.shape[1]
            p_t = probs.gather(1, labels.clamp(0, c - 1)[:, None])
            if self.rci_mode == "consistent":
                rci = torch.where(p_t < q, torch.sigmoid(self.theta * (q - p_t + self.alpha)), 0.0)
            else:
                rci = torch.where(p_t > q, torch.sigmoid(self.theta * (p_t - q + self.alpha)), 0.0)
            omega_neg = 1.0 - q * (q - self.mu) ** 2
            factor = beta * torch.where(targets > 0, q * rci, omega_neg)
        return factor * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    def extra_repr(self) -> str:
        return (
            f"theta={self.theta}, mu={self.mu}, alpha={self.alpha}, rci_mode={self.rci_mode!r}, " + super().extra_repr()
        )
