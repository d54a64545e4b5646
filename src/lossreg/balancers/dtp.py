"""``dtp``: Dynamic Task Prioritization (Guo et al., ECCV 2018) with a loss-based KPI."""

from __future__ import annotations

import math
import sys

import torch

from .._registry import register_balancer
from ._base import Balancer, usable

__all__ = ["DTP"]


@register_balancer("dtp")
class DTP(Balancer):
    """Dynamic Task Prioritization: focal-style weights that favour tasks with a low KPI.

    Paper: M. Guo, A. Haque, D.-A. Huang, S. Yeung, L. Fei-Fei, "Dynamic Task
    Prioritization for Multitask Learning", ECCV 2018, eq. 4-5.

    Per task a KPI ``kappa_k`` in ``(0, 1]`` is an EMA of ``exp(-L_k)`` (detached):
    the first recorded value sets ``kappa_k = exp(-L_k)``, later ones
    ``kappa_k = momentum * kappa_k + (1 - momentum) * exp(-L_k)``. The weight is
    ``w_k = -(1 - kappa_k)^gamma * log(kappa_k)``, computed after this call's update
    (the KPI includes the current loss).

    Edge cases: tasks are discovered on their first recorded loss; until then, and
    whenever the call is in eval mode, a task without a KPI gets weight 1. A missing,
    zero or non-finite loss is not recorded (the task keeps its KPI and weight). A
    negative loss counts as 0 (KPI 1, weight 0). ``kappa`` is clamped to
    ``[2.2e-308, 1]`` for the weight, so a loss too large for ``exp(-L)`` to be
    representable gives a finite weight of at most ``-log(2.2e-308) ~ 708``. Eval-mode
    calls record nothing.

    State (``state_dict``): ``steps`` and ``kappa__<task>`` per task.

    Args:
        gamma: focusing exponent, >= 0 [1.0].
        momentum: EMA weight of the previous KPI, in ``[0, 1]`` [0.9].
    """

    paper = "M. Guo, A. Haque, D.-A. Huang, S. Yeung, L. Fei-Fei, Dynamic Task Prioritization for Multitask Learning, ECCV 2018"
    task_state = {"kappa": (torch.float64, ())}

    def __init__(self, gamma: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        if not (isinstance(gamma, (int, float)) and 0 <= gamma < float("inf")):
            raise ValueError(f"dtp: gamma must be a finite number >= 0, got {gamma!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise ValueError(f"dtp: momentum must be in [0, 1], got {momentum!r}")
        self.gamma = float(gamma)
        self.momentum = float(momentum)

    def compute_weights(self, values: dict[str, float], update: bool) -> dict[str, float]:
        if update:
            for task, value in values.items():
                if not usable(value):
                    continue
                kpi = math.exp(-max(value, 0.0))
                kappa = self._task_buffer("kappa", task)
                if kappa is None:
                    self._new_task_buffer("kappa", task).fill_(kpi)
                else:
                    kappa.fill_(self.momentum * float(kappa) + (1.0 - self.momentum) * kpi)
        weights = {}
        for task in values:
            kappa = self._task_buffer("kappa", task)
            weights[task] = 1.0 if kappa is None else self._weight(float(kappa))
        return weights

    def _weight(self, kappa: float) -> float:
        kappa = min(max(kappa, sys.float_info.min), 1.0)
        # "+ 0.0" turns the -0.0 of a solved task (kappa = 1) into 0.0 for the logs.
        return (1.0 - kappa) ** self.gamma * -math.log(kappa) + 0.0

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, momentum={self.momentum}"
