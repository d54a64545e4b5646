"""Shared call convention of every loss (docs/api.md, "Classification losses" and "Regression losses").

Subclasses implement one method and inherit argument checking, fp32 compute
under autocast, ignored rows, per-sample ``weight``, ``reduction``,
``avg_factor`` and ``loss_weight``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str, owner: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce_loss(loss: Tensor, reduction: str, avg_factor: float | Tensor | None, count: int | Tensor) -> Tensor:
    """Reduce an element/row loss: ``none`` as is, ``sum``, or ``mean`` = sum / (avg_factor or count).

    Dividing by ``max(count, 1)`` keeps empty inputs at exactly 0 while the
    result stays connected to the graph (its gradient is all zeros). A given ``avg_factor``
    must be finite and > 0 (heads pass ``max(num_pos, 1)``); 0 or less raises ``ValueError``
    instead of dividing by eps.
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if avg_factor is not None:
        check_avg_factor(avg_factor)
    denom = avg_factor if avg_factor is not None else count
    if isinstance(denom, Tensor):
        denom = denom.to(total.dtype).clamp(min=torch.finfo(total.dtype).eps)
    else:
        denom = max(float(denom), torch.finfo(total.dtype).eps)
    return total / denom


def check_avg_factor(avg_factor: float | Tensor) -> None:
    """``ValueError`` unless ``avg_factor`` is a finite number > 0 (one host sync for a tensor, none while tracing)."""
    if isinstance(avg_factor, Tensor):
        if torch.compiler.is_compiling() or avg_factor.numel() != 1:
            return
        value = float(avg_factor.detach())
    else:
        value = float(avg_factor)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"avg_factor must be a finite number > 0 (the count a mean divides by; heads pass max(num_pos, 1)), "
            f"got {value!r}"
        )


def check_cls_inputs(owner: str, logits: Tensor, labels: Tensor) -> tuple[int, int]:
    """Validate ``logits [N, C]`` and ``labels [N]``; return ``(N, C)``.

    ``labels`` must be an integer tensor (float labels would be truncated, bool ones read as
    0/1) with values in ``-1..C`` (``C`` background, ``-1`` ignored; ``ce``, whose logits carry
    the background column, checks its narrower range itself). One host sync for the range.
    """
    if logits.dim() != 2:
        raise ValueError(f"{owner}: logits must be [N, C], got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"{owner}: labels must be [N]={n}, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"{owner}: labels must be integer class indices (torch.int64: 0..{c - 1} class, {c} background, -1 "
            f"ignored), got {labels.dtype}"
        )
    if n and not torch.compiler.is_compiling() and bool(((labels < -1) | (labels > c)).any()):
        raise ValueError(
            f"{owner}: labels must be in -1..{c} ({c} = background for {c} logit columns, -1 ignored), got values "
            f"in {int(labels.min())}..{int(labels.max())}; a label > {c} would silently count as background"
        )
    return n, c


def apply_weight(loss: Tensor, weight: Tensor | None) -> Tensor:
    """Multiply ``loss`` ([N] or [N, C]) by a per-row ``[N]`` or per-element ``[N, C]`` weight."""
    if weight is None:
        return loss
    weight = weight.to(loss.dtype)
    if loss.dim() == 2 and weight.dim() == 1:
        weight = weight[:, None]
    return loss * weight


class _LossBase(nn.Module):
    task: str = ""
    paper: str | None = None
    #: whether ``reduction="mean"`` divides by the ``avg_factor`` a head passes (False: the loss normalises
    #: itself; with gradient accumulation its micro-batch values are averaged, lossreg.heads.normalizer)
    uses_avg_factor: bool = True

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction, type(self).__name__)
        self.loss_weight = float(loss_weight)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"


class ClsLoss(_LossBase):
    """Dense classification loss: ``loss(logits [N, C], labels [N], quality=None, weight=None, avg_factor=None)``.

    ``labels``: ``0..C-1`` positive class, ``C`` background, ``-1`` ignored.
    Subclasses implement :meth:`elementwise` returning the unreduced ``[N, C]``
    loss on the valid rows; ignored rows are zeroed (and get no gradient) here.
    """

    task = "cls"
    uses_quality: bool = False

    def elementwise(self, logits: Tensor, targets: Tensor, labels: Tensor, quality: Tensor | None) -> Tensor:
        """``logits [M, C]`` fp32, one-hot ``targets [M, C]``, ``labels [M]``, ``quality [M]`` -> ``[M, C]``."""
        raise NotImplementedError

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        quality: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        name = type(self).__name__
        n, c = check_cls_inputs(name, logits, labels)
        if quality is None and self.uses_quality:
            raise ValueError(f"{name} needs `quality` (IoU of each row's predicted box), got None")
        with torch.autocast(logits.device.type, enabled=False):
            labels = labels.long()
            valid = labels >= 0
            targets = torch.zeros((n, c), dtype=torch.float32, device=logits.device)
            pos = valid & (labels < c)
            targets[pos, labels[pos]] = 1.0
            q = quality.detach().float() if quality is not None else None
            loss = self.elementwise(logits.float(), targets, labels, q)
            loss = torch.where(valid[:, None], loss, loss.new_zeros(()))
            loss = apply_weight(loss, weight)
            loss = reduce_loss(loss, self.reduction, avg_factor, valid.sum() * c)
        return loss * self.loss_weight


class RegLoss(_LossBase):
    """Box regression loss: ``loss(pred [N, 4], target [N, 4], weight=None, avg_factor=None, scores=None, anchors=None)``.

    ``space = "box"`` losses receive xyxy boxes in pixels, ``space = "delta"``
    losses encoded deltas. Subclasses implement :meth:`rowwise` returning ``[N]``.
    ``anchors [N, 4]`` (each row's prior box, xyxy pixels: anchor, point box or RoI) is
    passed by every head for losses that need it; :meth:`rowwise` does not receive it (no
    built-in loss reads it), so such a loss overrides :meth:`forward`.
    """

    task = "reg"
    space: str = "box"
    uses_scores: bool = False

    def rowwise(self, pred: Tensor, target: Tensor, scores: Tensor | None) -> Tensor:
        """fp32 ``pred [N, 4]``, ``target [N, 4]``, ``scores [N]`` -> per-row loss ``[N]``."""
        raise NotImplementedError

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        scores: Tensor | None = None,
        anchors: Tensor | None = None,
    ) -> Tensor:
        name = type(self).__name__
        if pred.dim() != 2 or pred.shape[-1] != 4 or target.shape != pred.shape:
            raise ValueError(
                f"{name}: pred and target must both be [N, 4], got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if scores is None and self.uses_scores:
            raise ValueError(f"{name} needs `scores` (predicted probability of each positive's class), got None")
        with torch.autocast(pred.device.type, enabled=False):
            s = scores.detach().float() if scores is not None else None
            loss = self.rowwise(pred.float(), target.float(), s)
            if weight is not None:
                weight = weight.float()
                loss = loss * (weight.mean(dim=-1) if weight.dim() == 2 else weight)
            loss = reduce_loss(loss, self.reduction, avg_factor, pred.shape[0])
        return loss * self.loss_weight
