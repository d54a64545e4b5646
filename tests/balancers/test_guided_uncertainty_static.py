"""guided ratio, uncertainty's learnable parameters, static weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lossreg
from lossreg.balancers.guided import GuidedBalancer
from lossreg.balancers.static import StaticBalancer
from lossreg.balancers.uncertainty import UncertaintyBalancer


def t(x: float) -> torch.Tensor:
    return torch.tensor(float(x))


# ----------------------------------------------------------------------------- guided


def test_guided_ratio_and_total() -> None:
    b = GuidedBalancer()
    total, w = b({"cls": t(4.0), "reg": t(1.0), "quality": t(0.5)})
    # w_cls = reg / cls = 1/4; total = .25 * 4 + 1 + .5 = 2.5 (cls now contributes as much as reg)
    assert w == {"cls": 0.25, "reg": 1.0, "quality": 1.0}
    assert float(total) == pytest.approx(2.5)


def test_guided_undefined_ratio_keeps_the_last_one() -> None:
    b = GuidedBalancer()
    assert b({"cls": t(2.0), "reg": t(0.0)})[1]["cls"] == 1.0  # no positives before any ratio: 1
    assert b({"cls": t(2.0), "reg": t(3.0)})[1]["cls"] == 1.5
    assert b({"cls": t(2.0), "reg": t(0.0)})[1]["cls"] == 1.5  # no positives: not 0
    assert b({"cls": t(2.0)})[1]["cls"] == 1.5  # reg missing
    assert b({"cls": t(0.0), "reg": t(1.0)})[1]["cls"] == 1.5  # cls exactly 0: no division by 0
    total, w = b({"cls": t(math.nan), "reg": t(1.0)})
    assert w["cls"] == 1.5 and math.isnan(float(total))
    assert b({"reg": t(1.0)})[1] == {"reg": 1.0}


def test_guided_weight_is_capped() -> None:
    b = GuidedBalancer(max_weight=100.0)
    total, w = b({"cls": t(1e-30), "reg": t(1e30)})
    assert w["cls"] == 100.0 and math.isfinite(float(total.detach()))


def test_guided_eval_does_not_update() -> None:
    b = GuidedBalancer().eval()
    assert b({"cls": t(2.0), "reg": t(1.0)})[1]["cls"] == 0.5
    assert float(b.last_ratio) == 1.0


def test_guided_task_names() -> None:
    b = lossreg.create_balancer("guided", cls_task="rpn_cls", reg_task="rpn_reg")
    _, w = b({"rpn_cls": t(2.0), "rpn_reg": t(1.0), "cls": t(5.0), "reg": t(1.0)})
    assert w == {"rpn_cls": 0.5, "rpn_reg": 1.0, "cls": 1.0, "reg": 1.0}


# ----------------------------------------------------------------------------- uncertainty


class Detector(nn.Module):
    """Stands in for a detector that holds its balancer (the training engine does not exist yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)
        self.balancer = lossreg.create_balancer("uncertainty")


def test_uncertainty_parameters_are_found_and_trained() -> None:
    model = Detector()
    b = model.balancer
    params = list(model.parameters())
    assert any(p is b.log_vars["cls"] for p in params) and any(p is b.log_vars["reg"] for p in params)
    assert list(nn.Sequential(b).parameters()) == [b.log_vars["cls"], b.log_vars["reg"]]
    assert set(model.state_dict()) >= {"balancer.log_vars.cls", "balancer.log_vars.reg"}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    total, w = b({"cls": t(3.0), "reg": t(1.0), "quality": t(2.0)})
    # s = 0: total = .5 * 3 + .5 * 1 + 0 + 2 = 4; weights .5, .5, and 1 for the unlisted task
    assert float(total.detach()) == pytest.approx(4.0)
    assert w == {"cls": 0.5, "reg": 0.5, "quality": 1.0}
    total.backward()
    # d/ds (.5 e^-s L + .5 s) = .5 - .5 e^-s L: cls .5 - 1.5 = -1, reg .5 - .5 = 0
    assert float(b.log_vars["cls"].grad) == pytest.approx(-1.0)
    assert float(b.log_vars["reg"].grad) == pytest.approx(0.0)
    opt.step()
    # SGD: s_cls = 0 - .1 * (-1) = .1
    assert float(b.log_vars["cls"].detach()) == pytest.approx(0.1)
    assert float(b.log_vars["reg"].detach()) == 0.0
    _, w = b({"cls": t(3.0), "reg": t(1.0)})
    assert w["cls"] == pytest.approx(0.5 * math.exp(-0.1), rel=1e-6)


def test_uncertainty_zero_and_missing_tasks() -> None:
    b = UncertaintyBalancer()
    total, w = b({"cls": t(2.0), "reg": t(0.0)})
    total.backward()
    # reg is exactly 0: no regulariser, so s_reg gets zero gradient (instead of .5, which would
    # push it down on every batch without positives); cls: .5 - .5 * 2 = -.5
    assert float(b.log_vars["reg"].grad) == 0.0
    assert float(b.log_vars["cls"].grad) == pytest.approx(-0.5)
    b.zero_grad(set_to_none=True)
    total, _ = b({"cls": t(2.0)})
    total.backward()
    assert b.log_vars["reg"].grad is None  # a missing task is not in the graph


def test_uncertainty_extreme_log_vars_stay_finite() -> None:
    b = UncertaintyBalancer()
    with torch.no_grad():
        b.log_vars["cls"].fill_(-1000.0)  # exp(1000) overflows float32 without the clamp
        b.log_vars["reg"].fill_(1000.0)
    total, w = b({"cls": t(1e-20), "reg": t(1e30)})
    assert all(math.isfinite(v) for v in w.values()) and math.isfinite(float(total.detach()))
    assert w["cls"] == pytest.approx(0.5 * math.exp(50.0), rel=1e-12)


@pytest.mark.parametrize("tasks", [(), "cls", ("cls", "cls"), ("a.b",)])
def test_uncertainty_bad_tasks(tasks) -> None:
    with pytest.raises(ValueError):
        UncertaintyBalancer(tasks=tasks)


# ----------------------------------------------------------------------------- static


def test_static_weights() -> None:
    assert StaticBalancer().weights == {"cls": 1.0, "reg": 1.0}
    b = lossreg.create_balancer("static", weights={"cls": 2.0, "reg": 0.5}, default=3.0)
    total, w = b({"cls": t(1.0), "reg": t(4.0), "quality": t(1.0)})
    assert w == {"cls": 2.0, "reg": 0.5, "quality": 3.0}
    assert float(total) == pytest.approx(2.0 + 2.0 + 3.0)


@pytest.mark.parametrize("kwargs", [{"weights": {"cls": -1.0}}, {"weights": {"cls": math.nan}}, {"default": math.inf}])
def test_static_bad_weights(kwargs) -> None:
    with pytest.raises(ValueError):
        StaticBalancer(**kwargs)
