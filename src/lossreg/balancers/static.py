"""``static``: fixed per-task loss weights (the usual hand-set ``loss_weight``s)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from .._registry import register_balancer
from ._base import Balancer, check_task_name

__all__ = ["StaticBalancer"]


@register_balancer("static")
class StaticBalancer(Balancer):
    """Fixed per-task loss weights; the baseline every adaptive balancer is compared with.

    Paper: none (the hand-tuned ``lambda_cls``, ``lambda_reg`` of eq. 1 in Yu et
    al., "Revisiting the Loss Weights in Anchor-Based Detection", ALWA).

    ``total = sum_k w_k L_k`` with ``w_k = weights[k]``, and ``default`` for tasks
    not listed. No state besides the iteration counter ``steps``; zero, missing,
    very large or non-finite losses are weighted as they are.

    Args:
        weights: task -> weight [None: ``{"cls": 1.0, "reg": 1.0}``].
        default: weight of tasks not in ``weights`` [1.0].
    """

    paper = "none (hand-set loss weights)"

    def __init__(self, weights: Mapping[str, float] | None = None, default: float = 1.0) -> None:
        super().__init__()
        weights = {"cls": 1.0, "reg": 1.0} if weights is None else dict(weights)
        for task, w in {**weights, "<default>": default}.items():
            if task != "<default>":
                check_task_name(task, "static")
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise ValueError(f"static: weight of {task} must be a finite number >= 0, got {w!r}")
        self.weights = {task: float(w) for task, w in weights.items()}
        self.default = float(default)

    def compute_weights(self, values: dict[str, float], update: bool) -> dict[str, float]:
        return {task: self.weights.get(task, self.default) for task in values}

    def extra_repr(self) -> str:
        return f"weights={self.weights}, default={self.default}"
