"""DWA and DTP weights on small scripted streams, against the formulas worked out by hand."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from lossreg.balancers.dtp import DTP
from lossreg.balancers.dwa import DWA


def feed(balancer, stream):
    out = []
    for step in stream:
        _, w = balancer({k: torch.tensor(float(v), dtype=torch.float64) for k, v in step.items()})
        out.append(w)
    return out


# ----------------------------------------------------------------------------- DWA


def test_dwa_formula_over_windows() -> None:
    b = DWA(temperature=2.0, interval=2)
    stream = [
        {"cls": 4, "reg": 2},  # W1: cls mean 4, reg mean 2
        {"cls": 4, "reg": 2},
        {"cls": 2, "reg": 2, "quality": 1},  # W2: cls 2, reg 2, quality 1 (only recorded once)
        {"cls": 2, "reg": 2},
        {"cls": 0.0, "reg": 1, "quality": 2},  # W3: cls 1 (the zero is not recorded), reg 1, quality (2+4)/2 = 3
        {"cls": 1, "reg": 1, "quality": 4},
        {"cls": 1, "reg": 1, "quality": 1},
    ]
    w = feed(b, stream)
    # Weights are 1 until two windows exist.
    assert w[:4] == [{"cls": 1.0, "reg": 1.0}] * 2 + [
        {"cls": 1.0, "reg": 1.0, "quality": 1.0},
        {"cls": 1.0, "reg": 1.0},
    ]
    # After W1, W2: r_cls = 2/4 = .5, r_reg = 2/2 = 1, quality has one window (weight 1, not in the softmax).
    # w_cls = 2 e^(.5/2) / (e^(.5/2) + e^(1/2)) = 2 / (1 + e^.25) = 0.8756469982284039
    # w_reg = 2 / (1 + e^-.25) = 1.1243530017715961
    for i in (4, 5):
        assert w[i]["cls"] == pytest.approx(0.8756469982284039, rel=1e-12)
        assert w[i]["reg"] == pytest.approx(1.1243530017715961, rel=1e-12)
        assert w[i]["quality"] == 1.0
    # After W2, W3: r_cls = 1/2, r_reg = 1/2, r_quality = 3/1; three tasks in the softmax:
    # w_cls = w_reg = 3 e^.25 / (2 e^.25 + e^1.5) = 0.5464139532345144
    # w_quality = 3 e^1.5 / (2 e^.25 + e^1.5) = 1.9071720935309713
    assert w[6]["cls"] == pytest.approx(0.5464139532345144, rel=1e-12)
    assert w[6]["reg"] == pytest.approx(0.5464139532345144, rel=1e-12)
    assert w[6]["quality"] == pytest.approx(1.9071720935309713, rel=1e-12)
    assert sum(w[6].values()) == pytest.approx(3.0, rel=1e-12)


def test_dwa_task_absent_for_a_whole_window_keeps_its_means() -> None:
    b = DWA(temperature=2.0, interval=1)  # every call closes a window
    w = feed(b, [{"cls": 1, "aux": 2}, {"cls": 1}, {"cls": 1, "aux": 4}, {"cls": 1, "aux": 1}])
    # aux: windows 2 and 4 (the window without it leaves its means alone) -> r_aux = 2, r_cls = 1.
    # w_cls = 2 e^.5 / (e^.5 + e^1) = 2 / (1 + e^.5) = 0.7550813375962908, w_aux = 1.2449186624037092
    assert w[3]["cls"] == pytest.approx(0.7550813375962908, rel=1e-12)
    assert w[3]["aux"] == pytest.approx(1.2449186624037092, rel=1e-12)


def test_dwa_huge_ratio_does_not_overflow() -> None:
    b = DWA(temperature=2.0, interval=1)
    _, _, w = feed(b, [{"cls": 1e-30, "reg": 1.0}, {"cls": 1e30, "reg": 1.0}, {"cls": 1.0, "reg": 1.0}])
    # r_cls = 1e60: exp(5e59) overflows unless the softmax subtracts its maximum first.
    assert w == {"cls": 2.0, "reg": 0.0}


def test_dwa_zero_previous_mean_has_no_ratio() -> None:
    b = DWA(temperature=2.0, interval=2)
    w = feed(
        b,
        [
            {"cls": 2, "reg": -1, "aux": 1},  # W1: cls 2, reg (-1 + 1) / 2 = 0, aux 1
            {"cls": 2, "reg": 1, "aux": 1},
            {"cls": 1, "reg": 2, "aux": 2},  # W2: cls 1, reg 2, aux 2
            {"cls": 1, "reg": 2, "aux": 2},
            {"cls": 1, "reg": 1, "aux": 1},
        ],
    )
    # reg: 2 / 0 is undefined -> weight 1, outside the softmax; r_cls = .5, r_aux = 2, n = 2:
    # w_cls = 2 e^.25 / (e^.25 + e^1) = 2 / (1 + e^.75) = 0.641642601649214, w_aux = 1.358357398350786
    assert w[4]["reg"] == 1.0
    assert w[4]["cls"] == pytest.approx(0.641642601649214, rel=1e-12)
    assert w[4]["aux"] == pytest.approx(1.358357398350786, rel=1e-12)


# ----------------------------------------------------------------------------- DTP


def test_dtp_formula() -> None:
    b = DTP(gamma=1.0, momentum=0.9)
    w = feed(
        b,
        [
            {"cls": math.log(2)},  # kappa = exp(-ln 2) = .5 (first value initialises the EMA)
            {"cls": math.log(4)},  # kappa = .9 * .5 + .1 * .25 = .475
            {"reg": math.log(10)},  # cls missing: unchanged; reg kappa = .1
            {"cls": 0.0, "reg": 0.0},  # zeros are not recorded
            {"cls": math.log(4 / 3)},  # kappa = .9 * .475 + .1 * .75 = .5025
        ],
    )
    # w = -(1 - kappa) log kappa
    assert w[0]["cls"] == pytest.approx(0.34657359027997264, rel=1e-12)  # .5 ln 2
    assert w[1]["cls"] == pytest.approx(0.39083124934743535, rel=1e-12)  # -.525 ln .475
    assert w[2]["reg"] == pytest.approx(2.0723265836946414, rel=1e-12)  # .9 ln 10
    assert w[3]["cls"] == pytest.approx(0.39083124934743535, rel=1e-12)
    assert w[3]["reg"] == pytest.approx(2.0723265836946414, rel=1e-12)
    assert w[4]["cls"] == pytest.approx(0.3423594204268309, rel=1e-12)  # -.4975 ln .5025
    assert float(b.kappa__cls) == pytest.approx(0.5025, rel=1e-12)


def test_dtp_gamma() -> None:
    (w,) = feed(DTP(gamma=2.0), [{"cls": math.log(2)}])
    assert w["cls"] == pytest.approx(0.17328679513998632, rel=1e-12)  # (1 - .5)^2 ln 2


def test_dtp_edge_cases() -> None:
    b = DTP()
    w = feed(b, [{"cls": 0.0, "reg": -3.0, "huge": 1e30}])[0]
    # No KPI yet (zero loss): 1. Negative loss: KPI 1, weight 0. exp(-1e30) = 0 is clamped to the
    # smallest normal double: -log(2.2250738585072014e-308) = 708.3964185322641.
    assert w == {"cls": 1.0, "reg": 0.0, "huge": pytest.approx(708.3964185322641, rel=1e-12)}
    assert -math.log(sys.float_info.min) == pytest.approx(708.3964185322641, rel=1e-15)
    b.eval()
    assert feed(b, [{"new": 2.0}])[0] == {"new": 1.0}
    assert b._task_buffer("kappa", "new") is None


@pytest.mark.parametrize("kwargs", [{"gamma": -1.0}, {"momentum": 1.5}, {"temperature": 0.0}, {"interval": 0}])
def test_bad_parameters(kwargs) -> None:
    cls = DWA if set(kwargs) & {"temperature", "interval"} else DTP
    with pytest.raises(ValueError):
        cls(**kwargs)
