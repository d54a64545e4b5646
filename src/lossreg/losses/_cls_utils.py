"""Small helpers shared by the classification losses that override ``ClsLoss.forward``.

``ClsLoss.forward`` covers the common case; ``bce`` (soft targets), ``dr``
(per-group ranking) and ``ce`` (softmax with a background column) need their
own forward but the same argument checks and weighting rules.
"""

from __future__ import annotations

from torch import Tensor


def check_cls_inputs(owner: str, logits: Tensor, labels: Tensor) -> tuple[int, int]:
    """Validate ``logits [N, C]`` and ``labels [N]``; return ``(N, C)``."""
    if logits.dim() != 2:
        raise ValueError(f"{owner}: logits must be [N, C], got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"{owner}: labels must be [N]={n}, got shape {tuple(labels.shape)}")
    return n, c


def apply_weight(loss: Tensor, weight: Tensor | None) -> Tensor:
    """Multiply ``loss`` ([N] or [N, C]) by a per-row ``[N]`` or per-element ``[N, C]`` weight."""
    if weight is None:
        return loss
    weight = weight.to(loss.dtype)
    if loss.dim() == 2 and weight.dim() == 1:
        weight = weight[:, None]
    return loss * weight
