"""Distributional ranking loss (Qian et al. 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._base import ClsLoss, check_cls_inputs


@register_loss("dr")
class DRLoss(ClsLoss):
    """Distributional ranking: rank the expected score of positives above that of negatives, per image and class.

    Paper: Qian, Chen, Li, Jin, "DR Loss: Improving Object Detection by Distributional
    Ranking", CVPR 2020.

    For each image and class, with ``p = sigmoid(logit)``, positives = rows labelled
    with that class, negatives = every other valid row of the image::

        P+ = sum_i w_i p_i,   w = softmax(-p_pos / lambda_pos)    (hardest positives weigh most)
        P- = sum_j w_j p_j,   w = softmax(p_neg / lambda_neg)     (hardest negatives weigh most)
        loss = (1 / L) * log(1 + exp(L * (P- - P+ + margin)))

    The softmax weights are not detached. A group (image, class) without positives
    contributes its negatives' term with ``P+ = 0``, i.e.
    ``(1 / L) log(1 + exp(L (P- + margin)))`` (finite, >= margin); symmetrically
    a group without negatives uses ``P- = 0``. Groups with no valid row contribute
    nothing. The reference code additionally multiplies by ``tau = 4``: use
    ``loss_weight=4.0`` for that scale.

    Reduction is per group, not per element: ``"none"`` returns ``[G, C]`` (one loss
    per image and class, 0 for images without valid rows), ``"sum"`` the sum,
    ``"mean"`` the mean over groups with at least one valid row. ``avg_factor`` is
    ignored (the per-group normalisation is built in).

    Defaults: ``margin=0.5, lambda_pos=1.0, lambda_neg=0.1 / ln(3.5), L=6.0,
    reduction="mean", loss_weight=1.0``.

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored), optional ``image_ids [N]`` long in ``0..G-1`` (which image each
    row comes from; without it all rows are one image, ``G = 1``), optional
    ``weight [N]`` or ``[N, C]`` used as a mask only: elements with weight <= 0 are
    left out of both distributions. ``quality`` is not used.
    """

    paper = "Qian et al., DR Loss: Improving Object Detection by Distributional Ranking, CVPR 2020"

    def __init__(
        self,
        margin: float = 0.5,
        lambda_pos: float = 1.0,
        lambda_neg: float = 0.1 / math.log(3.5),
        L: float = 6.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        for pname, value in (("lambda_pos", lambda_pos), ("lambda_neg", lambda_neg), ("L", L)):
            if not value > 0:
                raise ValueError(f"dr: parameter {pname!r} must be > 0, got {value!r}")
        self.margin = float(margin)
        self.lambda_pos = float(lambda_pos)
        self.lambda_neg = float(lambda_neg)
        self.L = float(L)

    @staticmethod
    def _expectation(z: Tensor, p: Tensor, mask: Tensor, image_ids: Tensor | None, num_images: int) -> Tensor:
        """``sum_i softmax(z)_i p_i`` over the masked elements of each (image, class) group -> ``[G, C]``.

        0 for an empty group. ``image_ids=None``: all rows form one image (plain column reductions,
        cheaper than index_add_ and deterministic on CUDA).
        """
        n, c = z.shape
        with torch.no_grad():
            # Per-group max for a stable exp; invariant for the softmax, so it needs no gradient.
            masked = z.detach().masked_fill(~mask, -math.inf)
            if image_ids is None:
                zmax = masked.amax(dim=0, keepdim=True) if n > 0 else z.new_full((1, c), -math.inf)
            else:
                zmax = z.new_full((num_images, c), -math.inf)
                zmax = zmax.scatter_reduce(0, image_ids[:, None].expand_as(z), masked, "amax")
            zmax = torch.where(torch.isfinite(zmax), zmax, 0.0)
        # exp(-inf) = 0 outside the mask; masking before exp keeps every backward term finite.
        e = torch.exp(torch.where(mask, z - (zmax if image_ids is None else zmax[image_ids]), -math.inf))
        if image_ids is None:
            den, num = e.sum(dim=0, keepdim=True), (e * p).sum(dim=0, keepdim=True)
        else:
            den = z.new_zeros(num_images, c).index_add_(0, image_ids, e)
            num = z.new_zeros(num_images, c).index_add_(0, image_ids, e * p)
        # A non-empty group's max element has e = 1, so den >= 1 there; an empty group has num = den = 0.
        # (Not clamp_min(1): a one-member group has den == 1 exactly, where clamp's gradient is cut.)
        return num / torch.where(den > 0, den, 1.0)

    def group_losses(
        self, logits: Tensor, pos: Tensor, member: Tensor, image_ids: Tensor | None, num_images: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Per-group loss ``[G, C]`` and a bool ``[G, C]`` marking groups with at least one member.

        ``logits [M, C]`` (any float dtype), ``pos [M, C]`` bool one-hot, ``member [M, C]``
        bool (valid, weight > 0), ``image_ids [M]`` long in ``0..num_images-1`` or None (one image).
        """
        p = torch.sigmoid(logits)
        pos_m = member & pos
        neg_m = member & ~pos
        exp_pos = self._expectation(-p / self.lambda_pos, p, pos_m, image_ids, num_images)
        exp_neg = self._expectation(p / self.lambda_neg, p, neg_m, image_ids, num_images)
        loss = F.softplus(self.L * (exp_neg - exp_pos + self.margin)) / self.L
        if image_ids is None:
            present = member.any(dim=0, keepdim=True)
        else:
            counts = torch.zeros_like(loss).index_add_(0, image_ids, member.to(loss.dtype))
            present = counts > 0
        return loss, present

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        quality: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        image_ids: Tensor | None = None,
    ) -> Tensor:
        n, c = check_cls_inputs(type(self).__name__, logits, labels)
        num_images = 1
        if image_ids is not None:
            if image_ids.shape != (n,):
                raise ValueError(f"DRLoss: image_ids must be [N]={n}, got shape {tuple(image_ids.shape)}")
            image_ids = image_ids.long()
            num_images = int(image_ids.max()) + 1 if n > 0 else 1
        with torch.autocast(logits.device.type, enabled=False):
            labels = labels.long()
            member = (labels >= 0)[:, None].expand(n, c)
            if weight is not None:
                member = member & ((weight[:, None] if weight.dim() == 1 else weight) > 0)
            pos = labels[:, None] == torch.arange(c, device=labels.device)
            loss, present = self.group_losses(logits.float(), pos, member, image_ids, num_images)
            loss = torch.where(present, loss, 0.0)
            if self.reduction == "sum":
                loss = loss.sum()
            elif self.reduction == "mean":
                loss = loss.sum() / present.sum().clamp_min(1)
        return loss * self.loss_weight

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, lambda_pos={self.lambda_pos}, lambda_neg={self.lambda_neg}, L={self.L}, "
            + super().extra_repr()
        )
