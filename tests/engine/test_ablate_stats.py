"""The paired statistic of ablations: mean and 95% Student-t half-width, checked by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lossreg.engine.ablate.stats import mean_interval, t95


def test_hand_computed_interval():
    # values 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t(4) = 2.776
    mean, half = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    assert mean_interval([0.25]) == (0.25, None)
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])


def test_t_quantiles():
    assert t95(1) == 12.706 and t95(4) == 2.776
    assert t95(17) == t95(15)  # between tabulated degrees of freedom: the next smaller (a wider interval)
    assert t95(1000) == 1.96
    with pytest.raises(ValueError):
        t95(0)


@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=12), st.floats(-1, 1, allow_nan=False))
def test_interval_shifts_with_the_values_and_keeps_its_width(values, shift):
    mean, half = mean_interval(values)
    moved, moved_half = mean_interval([v + shift for v in values])
    assert moved == pytest.approx(mean + shift, abs=1e-9)
    assert moved_half == pytest.approx(half, abs=1e-7) and half >= 0
