"""Distributional ranking loss (Qian et al. 2020)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lossreg._registry import register_loss
from lossreg.losses._base import ClsLoss, check_cls_inputs

GROUPINGS = ("batch", "image")


@register_loss("dr")
class DRLoss(ClsLoss):
    """Distributional ranking: rank the expected score of all positives above that of all negatives.

    Paper: Qian, Chen, Li, Jin, "DR Loss: Improving Object Detection by Distributional
    Ranking", CVPR 2020; follows the authors' released ``SigmoidDRLoss``
    (github.com/idstcv/DR_loss, ``sigmoid_dr_loss.py``).

    With ``p = sigmoid(logit)`` over the elements (row, class) of a group, positives =
    the element of a row's own class, negatives = every other class of a valid row::

        P+ = sum_i w_i p_i,   w = softmax(-p_pos / lambda_pos)    (hardest positives weigh most)
        P- = sum_j w_j p_j,   w = softmax(p_neg / lambda_neg)     (hardest negatives weigh most)
        loss = tau * (1 / L) * log(1 + exp(L * (P- - P+ + margin)))

    ``grouping="batch"`` (default, the authors' code): one group, every positive and
    every negative of the batch, all classes, pooled into the two distributions.
    ``grouping="image"``: one group per image (classes pooled), which needs
    ``image_ids``; the dense heads do not pass them, so it is for direct calls only and
    raises without them rather than silently pooling the batch.

    The softmax weights are not detached (as in the authors' code). A group without
    positives uses ``P+ = 1`` (the authors' ``else`` branch: its negatives are still
    pushed down with a full-margin target); a group without negatives has ``P- = 0``.
    A group with no valid element contributes 0 and is not counted.

    Reduction: ``"none"`` returns ``[G]`` (one loss per group: ``G = 1`` for
    ``"batch"``, images ``0..max(image_ids)`` for ``"image"``), ``"sum"`` the sum,
    ``"mean"`` the mean over groups with at least one valid element. ``avg_factor`` is
    ignored: the loss is an expectation already, and the authors' loss is not divided
    by the number of positives.

    Defaults: ``margin=0.5, lambda_pos=1.0, lambda_neg=0.1 / ln(3.5), L=6.0, tau=4.0,
    grouping="batch", reduction="mean", loss_weight=1.0`` (the authors' values).

    Shapes: ``logits [N, C]``, ``labels [N]`` (``0..C-1`` class, ``C`` background,
    ``-1`` ignored), optional ``image_ids [N]`` long (image of each row; used only by
    ``grouping="image"``), optional ``weight [N]`` or ``[N, C]`` used as a mask only:
    elements with weight <= 0 are left out of both distributions. ``quality`` is not used.
    """

    paper = "Qian et al., DR Loss: Improving Object Detection by Distributional Ranking, CVPR 2020"
    uses_avg_factor = False

    def __init__(
        self,
        margin: float = 0.5,
        lambda_pos: float = 1.0,
        lambda_neg: float = 0.1 / math.log(3.5),
        L: float = 6.0,
        tau: float = 4.0,
        grouping: Literal["batch", "image"] = "batch",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        for pname, value in (("lambda_pos", lambda_pos), ("lambda_neg", lambda_neg), ("L", L)):
            if not value > 0:
                raise ValueError(f"dr: parameter {pname!r} must be > 0, got {value!r}")
        if not tau >= 0:
            raise ValueError(f"dr: parameter 'tau' must be >= 0, got {tau!r}")
        if grouping not in GROUPINGS:
            raise ValueError(f"dr: parameter 'grouping' must be one of {GROUPINGS}, got {grouping!r}")
        self.margin = float(margin)
        self.lambda_pos = float(lambda_pos)
        self.lambda_neg = float(lambda_neg)
        self.L = float(L)
        self.tau = float(tau)
        self.grouping = grouping

    @staticmethod
    def _expectation(z: Tensor, p: Tensor, mask: Tensor, groups: Tensor | None, num_groups: int) -> tuple[Tensor, Tensor]:
        """``sum_i softmax(z)_i p_i`` over the masked elements of each group -> ``([G], nonempty [G])``.

        ``z, p, mask [E]`` (flat elements), ``groups [E]`` long in ``0..G-1`` or None (one group:
        plain reductions, cheaper than index_add_ and deterministic on CUDA). 0 for an empty group.
        """
        with torch.no_grad():
            # Per-group max for a stable exp; invariant for the softmax, so it needs no gradient.
            masked = z.detach().masked_fill(~mask, -math.inf)
            if groups is None:
                zmax = masked.amax().reshape(1) if z.numel() > 0 else z.new_full((1,), -math.inf)
            else:
                zmax = z.new_full((num_groups,), -math.inf).scatter_reduce(0, groups, masked, "amax")
            zmax = torch.where(torch.isfinite(zmax), zmax, 0.0)
        # exp(-inf) = 0 outside the mask; masking before exp keeps every backward term finite.
        e = torch.exp(torch.where(mask, z - (zmax if groups is None else zmax[groups]), -math.inf))
        if groups is None:
            den, num = e.sum().reshape(1), (e * p).sum().reshape(1)
        else:
            den = z.new_zeros(num_groups).index_add_(0, groups, e)
            num = z.new_zeros(num_groups).index_add_(0, groups, e * p)
        # A non-empty group's max element has e = 1, so den >= 1 there; an empty group has num = den = 0.
        # (Not clamp_min(1): a one-member group has den == 1 exactly, where clamp's gradient is cut.)
        nonempty = den > 0
        return num / torch.where(nonempty, den, 1.0), nonempty

    def group_losses(
        self, logits: Tensor, pos: Tensor, member: Tensor, groups: Tensor | None, num_groups: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Per-group loss ``[G]`` (``tau`` included) and a bool ``[G]`` marking groups with a member.

        ``logits [M, C]`` (any float dtype), ``pos [M, C]`` bool one-hot, ``member [M, C]``
        bool (valid, weight > 0), ``groups [M]`` long in ``0..num_groups-1`` (group of each row)
        or None (all rows one group).
        """
        c = logits.shape[1]
        p = torch.sigmoid(logits).flatten()
        pos_m = (member & pos).flatten()
        neg_m = (member & ~pos).flatten()
        flat_groups = None if groups is None else groups[:, None].expand(-1, c).flatten()
        exp_pos, has_pos = self._expectation(-p / self.lambda_pos, p, pos_m, flat_groups, num_groups)
        exp_neg, has_neg = self._expectation(p / self.lambda_neg, p, neg_m, flat_groups, num_groups)
        # No positive: P+ = 1 as in the authors' code (P+ = 0 would be a weaker, margin-shifted target).
        exp_pos = torch.where(has_pos, exp_pos, 1.0)
        loss = self.tau * F.softplus(self.L * (exp_neg - exp_pos + self.margin)) / self.L
        return loss, has_pos | has_neg

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
        groups, num_groups = None, 1
        if self.grouping == "image":
            if image_ids is None:
                raise ValueError(
                    "DRLoss: grouping='image' needs image_ids [N] (the dense heads do not pass them; "
                    "use grouping='batch', the authors' loss)"
                )
            if image_ids.shape != (n,):
                raise ValueError(f"DRLoss: image_ids must be [N]={n}, got shape {tuple(image_ids.shape)}")
            groups = image_ids.long()
            num_groups = int(groups.max()) + 1 if n > 0 else 1
        with torch.autocast(logits.device.type, enabled=False):
            labels = labels.long()
            member = (labels >= 0)[:, None].expand(n, c)
            if weight is not None:
                member = member & ((weight[:, None] if weight.dim() == 1 else weight) > 0)
            pos = labels[:, None] == torch.arange(c, device=labels.device)
            loss, present = self.group_losses(logits.float(), pos, member, groups, num_groups)
            # where() rather than a multiply: an empty group gives exactly 0 and no gradient.
            loss = torch.where(present, loss, 0.0)
            if self.reduction == "sum":
                loss = loss.sum()
            elif self.reduction == "mean":
                loss = loss.sum() / present.sum().clamp_min(1)
        return loss * self.loss_weight

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, lambda_pos={self.lambda_pos}, lambda_neg={self.lambda_neg}, L={self.L}, "
            f"tau={self.tau}, grouping={self.grouping!r}, " + super().extra_repr()
        )
