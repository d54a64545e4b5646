"""``alwa1`` / ``alwa2``: Adaptive Loss Weight Adjustment (Yu et al., Algorithm 1).

Both variants share :class:`_ALWA`; they differ only in the window statistic
(``mean + std`` for ALWA_1, ``std`` for ALWA_2).
"""

from __future__ import annotations

from typing import Literal

import torch

from .._registry import register_balancer
from ._base import Balancer, check_task_name, usable

__all__ = ["ALWA1", "ALWA2"]

ALWA_PAPER = (
    "W. Yu, X. Shen, J. Hu, D. Yin, Revisiting the Loss Weights in Anchor-Based Detection "
    "(Adaptive Loss Weight Adjustment, ALWA), Algorithm 1"
)
STATISTICS = ("weighted", "raw")
CLS_WEIGHTS = ("replace", "scale")


class _ALWA(Balancer):
    """Algorithm 1 with the window statistic left to the subclass (``use_mean``)."""

    paper = ALWA_PAPER
    use_mean: bool = True
    # buffers (declared for type checkers: nn.Module's __getattr__ is typed Tensor | Module)
    alpha: torch.Tensor
    cls_window: torch.Tensor
    reg_window: torch.Tensor
    count: torch.Tensor
    num_updates: torch.Tensor

    def __init__(
        self,
        interval: int = 100,
        lambda0: float = 1.0,
        statistics: Literal["weighted", "raw"] = "weighted",
        cls_weight: Literal["replace", "scale"] = "replace",
        cls_task: str = "cls",
        reg_task: str = "reg",
    ) -> None:
        super().__init__()
        name = type(self).__name__.lower()
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 2:
            # The sample std (ddof=1) of a window needs at least two recorded iterations.
            raise ValueError(f"{name}: interval must be an int >= 2, got {interval!r}")
        if not (isinstance(lambda0, (int, float)) and 0 < lambda0 < float("inf")):
            raise ValueError(f"{name}: lambda0 must be a finite number > 0, got {lambda0!r}")
        if statistics not in STATISTICS:
            raise ValueError(f"{name}: statistics must be one of {STATISTICS}, got {statistics!r}")
        if cls_weight not in CLS_WEIGHTS:
            raise ValueError(f"{name}: cls_weight must be one of {CLS_WEIGHTS}, got {cls_weight!r}")
        self.interval = interval
        self.lambda0 = float(lambda0)
        self.statistics = statistics
        self.cls_weight = cls_weight
        self.cls_task = check_task_name(cls_task, name)
        self.reg_task = check_task_name(reg_task, name)
        if cls_task == reg_task:
            raise ValueError(f"{name}: cls_task and reg_task must differ, both are {cls_task!r}")
        f64 = torch.float64
        self.register_buffer("alpha", torch.ones((), dtype=f64))
        # The two sets S_cls, S_reg of Algorithm 1 as fixed-size windows plus a fill count,
        # so the partial window is part of the state_dict.
        self.register_buffer("cls_window", torch.zeros(interval, dtype=f64))
        self.register_buffer("reg_window", torch.zeros(interval, dtype=f64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    def _statistic(self, window: torch.Tensor) -> float:
        std = float(window.std(correction=1))
        return float(window.mean()) + std if self.use_mean else std

    def compute_weights(self, values: dict[str, float], update: bool) -> dict[str, float]:
        alpha = float(self.alpha)
        if self.cls_weight == "scale":
            w_cls = alpha * self.lambda0
        else:
            # "replace": lambda0 until the first update, then alpha alone (alpha < 1 after any update).
            w_cls = alpha if int(self.num_updates) > 0 else self.lambda0
        weights = {task: self.lambda0 for task in values}
        if self.cls_task in values:
            weights[self.cls_task] = w_cls
        cls, reg = values.get(self.cls_task), values.get(self.reg_task)
        # Windows hold pairs, so an iteration is recorded only when both tasks give a usable value.
        if update and cls is not None and reg is not None and usable(cls) and usable(reg):
            i = int(self.count)
            self.cls_window[i] = (w_cls if self.statistics == "weighted" else self.lambda0) * cls
            self.reg_window[i] = self.lambda0 * reg
            if i + 1 < self.interval:
                self.count.fill_(i + 1)
            else:
                self._update_alpha()
        # The weights are the ones applied this iteration: an update takes effect at the next call.
        return weights

    def _update_alpha(self) -> None:
        cls_stat = self._statistic(self.cls_window)
        reg_stat = self._statistic(self.reg_window)
        # reg_stat <= 0 (a constant regression loss under alwa2) would set alpha = 0, and in
        # "weighted" mode a zero alpha zeroes the cls window, so it could never rise again.
        if cls_stat > reg_stat > 0.0:
            self.alpha.fill_(reg_stat / cls_stat)
            self.num_updates += 1
        self.cls_window.zero_()
        self.reg_window.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return (
            f"interval={self.interval}, lambda0={self.lambda0}, statistics={self.statistics!r}, "
            f"cls_weight={self.cls_weight!r}, "
            f"cls_task={self.cls_task!r}, reg_task={self.reg_task!r}"
        )


_ALWA_DOC = """

    Paper: W. Yu, X. Shen, J. Hu, D. Yin, "Revisiting the Loss Weights in
    Anchor-Based Detection" (ALWA), Algorithm 1, run as the authors' released
    code runs it.

    ``L = w_cls * L_cls + lambda0 * L_reg (+ lambda0 * every other task)``, with
    ``w_cls`` from ``alpha`` (see ``cls_weight``). ``alpha`` starts at 1; only the
    classification weight changes. Each training call records ``lambda0 * L_reg``
    and the classification value (see ``statistics``) into two windows. When the windows hold ``interval`` recorded
    iterations (after recorded iterations C-1, 2C-1, ...), take each window's
    {statistic} (sample std, ``ddof=1``); if ``cls_stat > reg_stat`` set
    ``alpha = reg_stat / cls_stat`` (replacing the old value, not multiplying it);
    clear both windows (they do not overlap). The new ``alpha`` applies from the
    next call on; the returned weights are those applied in this call. The printed
    algorithm tests ``i % C == 0``, which would update at ``i = 0`` from one sample;
    like the authors' code we update on full windows of exactly ``C`` values.

    ``cls_weight`` (identical when ``lambda0 = 1``, the paper's setting):

    - ``"replace"`` (default, the authors' code): ``w_cls = lambda0`` until the first
      update, then ``w_cls = alpha``: an update replaces the whole classification weight.
    - ``"scale"`` (Algorithm 1 as printed, eq. 2): ``w_cls = alpha * lambda0``.

    ``statistics``:

    - ``"weighted"`` (default, faithful): the cls window holds ``w_cls * L_cls``,
      with the current weight applied, as Algorithm 1 lines 6-7 and the authors'
      code do. Once ``alpha * L_cls`` falls near ``L_reg`` the next update can compute
      a ratio near 1 and replace a small ``alpha`` by a large one, so ``alpha`` may
      swing between windows instead of settling.
    - ``"raw"`` (our variant): the cls window holds ``lambda0 * L_cls`` before ``alpha``,
      so ``alpha`` tracks the ratio of the two tasks' statistics and settles.

    Tasks: ``cls_task`` and ``reg_task`` name the two balanced tasks; every other task
    keeps weight ``lambda0``. In Faster R-CNN, as in the paper, ALWA balances the RPN:
    the RPN head owns the detector's balancer and names its tasks ``cls``/``reg``, while
    the RoI head keeps a static balancer.

    Edge cases: an iteration is recorded only if both balanced tasks are present,
    finite and non-zero (a zero regression loss means a batch without positives);
    otherwise it is skipped, so windows always count ``C`` recorded pairs. An update
    that would give ``alpha <= 0`` (``reg_stat <= 0``) is skipped: in "weighted" mode
    ``alpha = 0`` would zero the cls window and disable classification for good.
    Hence ``0 < alpha <= 1``; every weight lies in ``(0, lambda0]`` with ``"scale"``
    and in ``(0, max(lambda0, 1)]`` with ``"replace"``. Statistics are
    float64, so very large losses do not overflow them. Eval-mode calls record nothing.

    State (``state_dict``): ``alpha``, the two windows and their fill ``count``,
    ``num_updates`` (updates that changed ``alpha``) and ``steps``.

    Args:
        interval: ``C``, recorded iterations per window, >= 2 [100].
        lambda0: initial loss weight of every task [1.0].
        statistics: ``"weighted"`` | ``"raw"`` ["weighted"].
        cls_weight: ``"replace"`` | ``"scale"`` ["replace"].
        cls_task: name of the classification task ALWA balances ["cls"].
        reg_task: name of the regression task ALWA balances ["reg"].
    """


@register_balancer("alwa1")
class ALWA1(_ALWA):
    __doc__ = "ALWA_1: classification weight from the ratio of windowed loss mean + std (Yu et al.)." + (
        _ALWA_DOC.format(statistic="``mean + std``")
    )
    use_mean = True


@register_balancer("alwa2")
class ALWA2(_ALWA):
    __doc__ = "ALWA_2: classification weight from the ratio of windowed loss std (Yu et al.)." + (
        _ALWA_DOC.format(statistic="``std``")
    )
    use_mean = False
