"""HCRA-R: the regression half of the Hybrid Classification-Regression Adaptive Loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._registry import register_loss
from ..ops.geometry import BoxPairGeometry
from ._base import RegLoss
from .iou import giou_rows

__all__ = ["HCRARegLoss"]

RCI_MEANS = ("loss_weighted", "cf_positive", "rows")


@register_loss("hcra_r")
class HCRARegLoss(RegLoss):
    """HCRA-R: GIoU weighted by score-IoU consistency (RCI) and a conditioning factor (CF).

    Paper: "Hybrid Classification-Regression Adaptive Loss for Dense Object Detection"
    (HCRAL), anonymous ICLR submission, section 3.1.2, eq. 7-10.

    With ``s`` = ``scores`` (detached probability of the positive's class) and
    ``q = IoU(pred, target)``, all weights detached:
      - ``t = exp(-q^2 / gamma)`` (``t = 1`` when ``gamma`` is None), ``R = rho^2 / c^2``,
        ``CF = t * exp(R) * q`` (eq. 7; ``R`` in [0, 1] so ``exp(R) <= e``);
      - ``s' = max(s + alpha, 0)``, ``A = s'^2 + q^2 + ep``, ``B = 2 s' q + ep``;
        ``RCI = A / B`` (>= 1) where ``s + alpha - q >= 0``, else ``B / A`` (<= 1) (eq. 8);
      - running mean ``r`` (buffer ``running_mean``, starts at 1): in a training-mode
        call, first ``r <- (1 - m) r + m * mean(RCI)`` (eq. 9, ``m`` = ``ema_momentum``),
        then weight by ``RCI / r``. Eval mode uses ``r`` without updating it; under data
        parallelism each process keeps its own ``r`` (like BatchNorm's running stats);
      - row loss ``(RCI / r) * CF * giou`` (eq. 10).

    Which rows the batch mean of eq. 9 averages (``rci_mean``) matters. In region 1, RCI
    grows like ``s' / (2 q)`` as ``q`` falls, up to ``(s'^2 + ep) / ep`` at ``q = 0`` (~800
    at ``s' = 0.9``, ``ep = 0.001``), while ``CF`` (proportional to ``q``) shrinks to 0.
    Averaged over every row (``"rows"``, eq. 9 read literally), a few near-disjoint
    high-score boxes dominate ``r`` and cut every other row's weight for ~``1 / m``
    iterations (in the tests, 4 boxes at IoU 0.005 among 200 raise the batch mean 4x).
    The default ``"loss_weighted"`` averages RCI with the detached weights ``CF * giou``,
    the row loss it multiplies: ``sum(RCI CF giou) / sum(CF giou)``. A row counts by its
    share of that loss (the same 4 boxes move it by ~8%), and with ``m = 1`` the weighted
    rows sum to ``sum(CF giou)``: RCI only redistributes the loss between rows.
    ``"cf_positive"`` is the plain mean over rows with ``CF * giou > 0``; it drops exact
    zeros only, so it is as sensitive to near-zero IoU as ``"rows"``. A batch with no
    counted row leaves ``r`` unchanged.

    Args:
        gamma: width of ``t``, suppressing very high-IoU boxes [1.2, the paper's
            RetinaNet value (Table 4); its ATSS recipes use 1.5: "ATSS ... set the weight
            to 1.5, ensuring that high-quality samples are not suppressed" sits in the
            gamma paragraph, and a larger gamma suppresses less; None disables ``t``].
        alpha: score-IoU gap ``alpha`` of the RCI regions [-0.1]. The text (section 4.1)
            says 0.1, but Table 3 sweeps only alpha in {0, -0.1, -0.2} and its best row
            (alpha -0.1, ep 0.001, AP 37.4) is the HCRA-R result of Table 9, so -0.1 is
            the value behind the paper's numbers. The ``s + alpha`` clamp matters only for
            a negative alpha: rows with ``s < -alpha`` get ``s' = 0`` and
            ``RCI = ep / (q^2 + ep)``, so low-score boxes nearly leave the regression loss.
        ep: ``ep`` in ``A`` and ``B``; bounds ``RCI`` and keeps it finite [0.001].
        ema_momentum: momentum ``m`` of the running mean [0.01].
        rci_mean: rows of eq. 9's batch mean, ``"loss_weighted"`` | ``"cf_positive"`` |
            ``"rows"`` (see above) ["loss_weighted"].
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` ["mean"].
        loss_weight: multiplies the result [1.0].

    Shapes: ``pred``, ``target``: xyxy boxes in pixels ``[N, 4]``; ``scores`` ``[N]``
    (required); ``"none"`` returns ``[N]``.
    """

    space = "box"
    uses_scores = True
    paper = "Hybrid Classification-Regression Adaptive Loss for Dense Object Detection (HCRAL), ICLR submission"

    running_mean: Tensor

    def __init__(
        self,
        gamma: float | None = 1.2,
        alpha: float = -0.1,
        ep: float = 0.001,
        ema_momentum: float = 0.01,
        rci_mean: Literal["loss_weighted", "cf_positive", "rows"] = "loss_weighted",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if gamma is not None and not gamma > 0:
            raise ValueError(f"hcra_r: gamma must be > 0 or None, got {gamma!r}")
        if not ep > 0:
            raise ValueError(f"hcra_r: ep must be > 0 (RCI divides by it), got {ep!r}")
        if not 0 <= ema_momentum <= 1:
            raise ValueError(f"hcra_r: ema_momentum must be in [0, 1], got {ema_momentum!r}")
        if rci_mean not in RCI_MEANS:
            raise ValueError(f"hcra_r: rci_mean must be one of {RCI_MEANS}, got {rci_mean!r}")
        self.gamma = None if gamma is None else float(gamma)
        self.alpha = float(alpha)
        self.ep = float(ep)
        self.ema_momentum = float(ema_momentum)
        self.rci_mean = rci_mean
        self.register_buffer("running_mean", torch.ones(()))

    def weights(self, geometry: BoxPairGeometry, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Detached ``(RCI [N], CF [N])`` of a batch; no state change."""
        # Read the (cached) geometry outside no_grad(), or giou would later reuse a graph-less IoU.
        q = geometry.iou.detach()
        # rho <= c for valid boxes; the clamp only guards inverted (x2 < x1) boxes against exp overflow.
        r_diou = geometry.diou_penalty.detach().clamp(0, 1)
        with torch.no_grad():
            cf = torch.exp(r_diou) * q
            if self.gamma is not None:
                cf = cf * torch.exp(-(q**2) / self.gamma)
            s = scores.to(q.dtype)
            s_shift = (s + self.alpha).clamp(min=0)
            a = s_shift**2 + q**2 + self.ep
            b = 2 * s_shift * q + self.ep
            rci = torch.where(s + self.alpha - q >= 0, a / b, b / a)
        return rci, cf

    def rowwise(self, pred: Tensor, target: Tensor, scores: Tensor | None) -> Tensor:
        if scores is None or scores.shape != pred.shape[:1]:
            got = None if scores is None else tuple(scores.shape)
            raise ValueError(f"hcra_r: scores must be [N]={pred.shape[0]}, got {got}")
        g = BoxPairGeometry(pred, target)
        rci, cf = self.weights(g, scores)
        giou = giou_rows(g)
        if self.training and rci.numel() > 0:
            self._update_running_mean(rci, cf * giou.detach())
        r = self.running_mean.detach().to(rci)
        return (rci / r) * cf * giou

    @torch.no_grad()
    def batch_rci_mean(self, rci: Tensor, row_loss: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 9's batch mean of ``rci [N]`` per ``rci_mean``, given the detached ``CF * giou [N]``.

        Returns ``(mean, counted)``, scalars; ``counted`` is False when no row counts (the
        running mean is then left alone). Tensors, not Python numbers: no host sync per step.
        """
        if self.rci_mean == "rows":
            w = torch.ones_like(rci)
        else:
            w = row_loss.to(rci.dtype).clamp(min=0)
            if self.rci_mean == "cf_positive":
                w = (w > 0).to(rci.dtype)
        total = w.sum()
        counted = total > 0
        return (rci * w).sum() / torch.where(counted, total, 1.0), counted

    @torch.no_grad()
    def _update_running_mean(self, rci: Tensor, row_loss: Tensor) -> None:
        mean, counted = self.batch_rci_mean(rci, row_loss)
        buf = self.running_mean
        mean, counted = mean.to(device=buf.device, dtype=buf.dtype), counted.to(buf.device)
        buf.copy_(torch.where(counted, torch.lerp(buf, mean, self.ema_momentum), buf))

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, alpha={self.alpha}, ep={self.ep}, ema_momentum={self.ema_momentum}, "
            f"rci_mean={self.rci_mean!r}, "
            f"{super().extra_repr()}"
        )
