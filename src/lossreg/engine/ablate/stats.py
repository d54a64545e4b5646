"""The paired statistic of an ablation: mean difference over seeds and its Student-t 95% interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["T95", "mean_interval"]

#: two-sided 95% Student-t quantiles by degrees of freedom (1.96 beyond the table)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    """The two-sided 95% quantile for ``dof`` degrees of freedom (the next smaller tabulated one in between)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    return T95.get(dof) or (T95[max(k for k in T95 if k <= dof)] if dof <= 30 else 1.96)


def mean_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, half-width of its 95% t-interval)``; the half-width is None for a single value."""
    if not values:
        raise ValueError("no values")
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None
    return mean, t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
