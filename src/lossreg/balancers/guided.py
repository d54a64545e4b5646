"""``guided``: Guided Loss scaling of the classification loss by ``L_reg / L_cls`` (Chen et al.)."""

from __future__ import annotations

import math

import torch

from .._registry import register_balancer
from ._base import Balancer, check_task_name

__all__ = ["GuidedBalancer"]


@register_balancer("guided")
class GuidedBalancer(Balancer):
    """Guided Loss: classification weight ``L_reg / L_cls`` each iteration, so both terms match.

    Paper: J. Chen, D. Liu, T. Xu, S. Wu, Y. Cheng, E. Chen, "Is Heuristic Sampling
    Necessary in Training Deep Object Detectors?", IEEE TIP 2021 (Guided Loss, first
    published form).

    ``w_cls = L_reg / L_cls`` (both detached), clamped to at most ``max_weight``;
    every other task, the regression task included, has weight 1.

    Edge cases: the ratio is undefined when either task is missing, non-finite, or
    ``<= 0`` (a zero regression loss means a batch without positives, and a zero
    weight would switch classification off for that batch); the classification
    loss then gets the last defined ratio (1 before any), kept in the ``last_ratio``
    buffer. ``max_weight`` keeps the weight, and the gradient it scales, finite in
    float32 when ``L_cls`` is tiny next to ``L_reg``. Eval-mode calls use the current
    ratio but do not update ``last_ratio``.

    Args:
        max_weight: upper bound of the classification weight [1e4].
        cls_task: name of the classification task ["cls"].
        reg_task: name of the regression task ["reg"].
    """

    paper = "J. Chen et al., Is Heuristic Sampling Necessary in Training Deep Object Detectors?, IEEE TIP 2021"

    def __init__(self, max_weight: float = 1e4, cls_task: str = "cls", reg_task: str = "reg") -> None:
        super().__init__()
        if not (isinstance(max_weight, (int, float)) and 0 < max_weight < float("inf")):
            raise ValueError(f"guided: max_weight must be a finite number > 0, got {max_weight!r}")
        self.max_weight = float(max_weight)
        self.cls_task = check_task_name(cls_task, "guided")
        self.reg_task = check_task_name(reg_task, "guided")
        if cls_task == reg_task:
            raise ValueError(f"guided: cls_task and reg_task must differ, both are {cls_task!r}")
        self.register_buffer("last_ratio", torch.ones((), dtype=torch.float64))

    def compute_weights(self, values: dict[str, float], update: bool) -> dict[str, float]:
        weights = {task: 1.0 for task in values}
        if self.cls_task not in values:
            return weights
        cls, reg = values[self.cls_task], values.get(self.reg_task, math.nan)
        ratio = reg / cls if (math.isfinite(cls) and math.isfinite(reg) and cls > 0 and reg > 0) else math.nan
        if math.isnan(ratio):
            ratio = float(self.last_ratio)
        else:
            ratio = min(ratio, self.max_weight)  # reg / cls may be inf when cls is denormal
            if update:
                self.last_ratio.fill_(ratio)
        weights[self.cls_task] = ratio
        return weights

    def extra_repr(self) -> str:
        return f"max_weight={self.max_weight}, cls_task={self.cls_task!r}, reg_task={self.reg_task!r}"
