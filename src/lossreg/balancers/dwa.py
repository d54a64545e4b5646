"""``dwa``: Dynamic Weight Average (Liu et al., CVPR 2019), over windows of iterations."""

from __future__ import annotations

import math

import torch

from .._registry import register_balancer
from ._base import Balancer, usable

__all__ = ["DWA"]


@register_balancer("dwa")
class DWA(Balancer):
    """Dynamic Weight Average: weights from each task's loss descent rate over the last two windows.

    Paper: S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019, eq. 7 (there per epoch; here per window of iterations).

    Iterations are grouped into consecutive windows of ``interval`` training calls
    (the window closes after calls ``interval-1, 2*interval-1, ...``). For each task,
    ``Lbar_k`` is its mean loss over the iterations of a window in which it was
    recorded. With ``r_k = Lbar_k(last window) / Lbar_k(window before)``, the
    weights applied during the next window are

        ``w_k = n * exp(r_k / T) / sum_j exp(r_j / T)``

    over the ``n`` tasks that have a ratio. Weights are 1 until two windows exist.

    Edge cases: tasks are discovered on their first call (their state is created
    then, and restored from a checkpoint). A task missing from some iterations is
    averaged over the iterations it was present; a task absent for a whole window
    keeps its last two window means. Zero and non-finite losses are not recorded.
    A task without a ratio (fewer than two windows, or a zero previous mean) gets
    weight 1 and is left out of the softmax, whose weights are then scaled by the
    ``n`` tasks in it, so all weights still sum to the number of tasks. The softmax
    subtracts the largest ``r_j / T`` first: the exp cannot overflow (the paper's
    comparison hit "overflow" here), weights lie in ``[0, n]``. Eval-mode calls
    record nothing.

    State (``state_dict``): ``steps`` and, per task, ``sum__``/``count__`` of the
    open window and ``means__`` (previous, last) and ``windows__`` (windows closed).

    Args:
        temperature: ``T``, softmax temperature [2.0].
        interval: training iterations per window [100].
    """

    paper = "S. Liu, E. Johns, A. J. Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019"
    task_state = {
        "sum": (torch.float64, ()),
        "count": (torch.int64, ()),
        "means": (torch.float64, (2,)),
        "windows": (torch.int64, ()),
    }

    def __init__(self, temperature: float = 2.0, interval: int = 100) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
            raise ValueError(f"dwa: temperature must be a finite number > 0, got {temperature!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"dwa: interval must be an int >= 1, got {interval!r}")
        self.temperature = float(temperature)
        self.interval = interval

    def compute_weights(self, values: dict[str, float], update: bool) -> dict[str, float]:
        current = self._current_weights()
        weights = {task: current.get(task, 1.0) for task in values}
        if update:
            for task, value in values.items():
                if self._task_buffer("sum", task) is None:
                    for kind in self.task_state:
                        self._new_task_buffer(kind, task)
                if usable(value):
                    self._task_buffer("sum", task).add_(value)
                    self._task_buffer("count", task).add_(1)
            if (int(self.steps) + 1) % self.interval == 0:
                self._close_window()
        return weights

    def _close_window(self) -> None:
        for task in self._tasks_with("sum"):
            total, count = self._task_buffer("sum", task), self._task_buffer("count", task)
            if int(count) > 0:
                means = self._task_buffer("means", task)
                means[0] = means[1].clone()
                means[1] = total / count
                self._task_buffer("windows", task).add_(1)
            total.zero_()
            count.zero_()

    def _current_weights(self) -> dict[str, float]:
        ratios = {}
        for task in self._tasks_with("means"):
            if int(self._task_buffer("windows", task)) >= 2:
                before, last = self._task_buffer("means", task).tolist()
                # No usable descent rate: a zero previous mean, or r / T beyond float range.
                if before != 0.0 and math.isfinite(last / before / self.temperature):
                    ratios[task] = last / before
        if not ratios:
            return {}
        logits = {task: r / self.temperature for task, r in ratios.items()}
        top = max(logits.values())
        exps = {task: math.exp(z - top) for task, z in logits.items()}
        norm = math.fsum(exps.values())  # >= 1: the largest term is exp(0)
        return {task: len(ratios) * e / norm for task, e in exps.items()}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, interval={self.interval}"
