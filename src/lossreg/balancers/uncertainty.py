"""``uncertainty``: homoscedastic-uncertainty weighting with learnable ``log sigma^2`` (Kendall et al.)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._registry import register_balancer
from ._base import REGULARISER, Balancer, check_task_name

__all__ = ["UncertaintyBalancer"]


@register_balancer("uncertainty")
class UncertaintyBalancer(Balancer):
    """Uncertainty weighting: learnable ``s_k = log sigma_k^2``, total ``sum 0.5 exp(-s_k) L_k + 0.5 s_k``.

    Paper: A. Kendall, Y. Gal, R. Cipolla, "Multi-Task Learning Using Uncertainty to
    Weigh Losses for Scene Geometry and Semantics", CVPR 2018, eq. 7-10 (in the
    common ``0.5`` form for every task).

    One ``nn.Parameter`` ``s_k`` per task in ``tasks``, initialised to 0 (weight 0.5):
    they are parameters of the balancer, so a detector holding it lists them in
    ``model.parameters()``, the optimiser updates them and the checkpoint stores
    them. Tasks not in ``tasks`` are added with weight 1. The returned weights are
    the multipliers ``0.5 exp(-s_k)``; the regulariser ``0.5 s_k`` is added to the
    total but is not a weight (:meth:`parts` returns it as ``"balancer"``, a detector's
    ``loss_balancer``).

    Edge cases: a task in ``tasks`` that is missing contributes nothing (its ``s_k``
    gets no gradient). A task whose loss is exactly 0 (no positives) contributes
    ``0.5 exp(-s_k) * 0`` (connected to the graph) without its regulariser, whose
    gradient alone would push ``s_k`` down every such batch and blow its weight up
    once the task returns. ``s_k`` is clamped to ``[-50, 50]`` in the forward, so
    ``exp(-s_k)`` stays finite in float32 (a weight of at most ``0.5 e^50 ~ 2.6e21``).
    Eval mode changes nothing: the state is the parameters, which only the
    optimiser updates.

    Args:
        tasks: tasks with a learnable weight [("cls", "reg")].
    """

    paper = (
        "A. Kendall, Y. Gal, R. Cipolla, Multi-Task Learning Using Uncertainty to Weigh Losses "
        "for Scene Geometry and Semantics, CVPR 2018"
    )
    log_var_bound: float = 50.0

    def __init__(self, tasks: Sequence[str] = ("cls", "reg")) -> None:
        super().__init__()
        if isinstance(tasks, str) or not tasks:
            raise ValueError(f"uncertainty: tasks must be a non-empty sequence of task names, got {tasks!r}")
        tasks = tuple(check_task_name(t, "uncertainty") for t in tasks)
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"uncertainty: duplicate task names in {tasks!r}")
        self.tasks = tasks
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in tasks})

    def _log_var(self, task: str) -> Tensor:
        s = self.log_vars[task]
        # At least float32: exp(50) overflows a half-precision model's parameters.
        s = s.to(torch.promote_types(s.dtype, torch.float32))
        return s.clamp(-self.log_var_bound, self.log_var_bound)

    def compute_weights(self, values: dict[str, float], update: bool) -> dict[str, float]:
        weights = {}
        for task in values:
            if task in self.log_vars:
                s = float(self.log_vars[task].detach().clamp(-self.log_var_bound, self.log_var_bound))
                weights[task] = 0.5 * math.exp(-s)
            else:
                weights[task] = 1.0
        return weights

    def combine(self, losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
        total: Tensor | None = None
        for task, loss in losses.items():
            if task in self.log_vars:
                s = self._log_var(task)
                # The regulariser is masked out (zero gradient) where the loss is exactly 0.
                has_signal = (loss.detach() != 0).to(s.dtype)
                term = 0.5 * torch.exp(-s) * loss + 0.5 * s * has_signal
            else:
                term = loss * weights[task]
            total = term if total is None else total + term
        assert total is not None
        return total

    def parts(self, losses: dict[str, Tensor], weights: dict[str, float]) -> dict[str, Tensor]:
        """``{task: 0.5 exp(-s_k) L_k, ...}`` (tasks without ``s_k``: ``L_k``) and ``"balancer"``: ``sum 0.5 s_k``.

        Their sum is :meth:`combine`'s total; the regulariser is its own entry so that a
        detector's ``loss_<task>`` values are the weighted task losses and
        ``sum(loss_dict.values())`` is what lossreg trains.
        """
        if REGULARISER in losses:
            raise ValueError(f"uncertainty: {REGULARISER!r} is reserved for the regulariser and cannot be a task name")
        out: dict[str, Tensor] = {}
        reg: Tensor | None = None
        for task, loss in losses.items():
            if task in self.log_vars:
                s = self._log_var(task)
                has_signal = (loss.detach() != 0).to(s.dtype)
                out[task] = 0.5 * torch.exp(-s) * loss
                term = 0.5 * s * has_signal
                reg = term if reg is None else reg + term
            else:
                out[task] = loss * weights[task]
        if reg is not None:
            out[REGULARISER] = reg
        return out

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}"
