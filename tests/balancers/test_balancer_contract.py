"""What every balancer promises (docs/api.md, "Balancers"): finite weights, exact resume, state in state_dict."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

import lossreg
from lossreg.balancers._base import Balancer

NAMES = ["static", "alwa1", "alwa2", "dwa", "dtp", "guided", "uncertainty"]
# Small windows so that short streams cross several updates.
CONFIGS = [
    ("static", {"weights": {"cls": 2.0}}),
    ("alwa1", {"interval": 2}),
    ("alwa1", {"interval": 3, "statistics": "raw"}),
    ("alwa2", {"interval": 2}),
    ("alwa2", {"interval": 2, "statistics": "raw", "lambda0": 0.5}),
    ("alwa1", {"interval": 2, "lambda0": 2.0, "cls_weight": "scale"}),
    ("dwa", {"interval": 2}),
    ("dwa", {"interval": 1, "temperature": 0.5}),
    ("dtp", {}),
    ("dtp", {"gamma": 2.0, "momentum": 0.5}),
    ("guided", {}),
    ("uncertainty", {}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]
STATEFUL = [c for c in CONFIGS if c[0] not in ("static", "uncertainty")]

# Zeros (no positives), ordinary values, extremes; missing tasks come from the dict's key subset.
values = st.one_of(
    st.just(0.0),
    st.floats(0.0, 10.0),
    st.floats(1e-30, 1e30),
    st.sampled_from([1e-45, 1e-38, 1e30]),
)
steps = st.dictionaries(st.sampled_from(["cls", "reg", "quality"]), values, min_size=1)
streams = st.lists(steps, min_size=1, max_size=24)


class Holder(nn.Module):
    """A detector holding its balancer, so state_dict keys carry a prefix ("balancer.")."""

    def __init__(self, name: str, kwargs: dict) -> None:
        super().__init__()
        self.balancer = lossreg.create_balancer(name, **kwargs)


class Run:
    """Feeds a balancer one training iteration per step; trains uncertainty's parameters with SGD."""

    def __init__(self, holder: Holder) -> None:
        self.b = holder.balancer
        params = list(holder.parameters())
        self.opt = torch.optim.SGD(params, lr=0.05) if params else None

    def step(self, step: dict[str, float]) -> tuple[float, dict[str, float]]:
        total, weights = self.b({k: torch.tensor(v, dtype=torch.float32) for k, v in step.items()})
        if self.opt is not None:
            self.opt.zero_grad()
            if total.requires_grad:
                total.backward()
            self.opt.step()
        return float(total.detach()), weights

    def steps(self, stream: list[dict[str, float]]) -> list[tuple[float, dict[str, float]]]:
        return [self.step(s) for s in stream]


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
@settings(max_examples=30, deadline=None)
@given(stream=streams)
def test_finite_losses_give_finite_total_and_weights(name: str, kwargs: dict, stream) -> None:
    run = Run(Holder(name, kwargs))
    for step in stream:
        total, weights = run.step(step)
        assert set(weights) == set(step)
        assert all(math.isfinite(w) and w >= 0 for w in weights.values()), weights
        assert math.isfinite(total), (step, weights)
        if name != "uncertainty":
            # The returned weights are the ones applied.
            expected = math.fsum(weights[k] * float(torch.tensor(v, dtype=torch.float32)) for k, v in step.items())
            assert total == pytest.approx(expected, rel=1e-5, abs=1e-30)
    if name == "uncertainty":
        assert all(torch.isfinite(p).all() for p in run.b.parameters())


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
@settings(max_examples=30, deadline=None)
@given(stream=streams, data=st.data())
def test_resume_at_any_iteration_continues_the_same_trajectory(name: str, kwargs: dict, stream, data) -> None:
    k = data.draw(st.integers(0, len(stream)), label="stop after")
    full = Run(Holder(name, kwargs)).steps(stream)

    first = Holder(name, kwargs)
    head = Run(first).steps(stream[:k])
    saved = copy.deepcopy(first.state_dict())
    resumed = Holder(name, kwargs)
    # The fresh instance has already seen another task: loading must replace its state, not merge.
    resumed.balancer({"other": torch.tensor(5.0), "cls": torch.tensor(3.0)})
    resumed.load_state_dict(saved)
    tail = Run(resumed).steps(stream[k:])
    assert head + tail == full


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
def test_state_round_trips_through_safetensors(name: str, kwargs: dict, tmp_path) -> None:
    stream = [{"cls": 1.0 + i % 3, "reg": 0.5 + 0.25 * (i % 2), "quality": 0.1 * i} for i in range(1, 12)]
    full = Run(Holder(name, kwargs)).steps(stream)
    first = Holder(name, kwargs)
    head = Run(first).steps(stream[:7])
    save_file(first.state_dict(), tmp_path / "model.safetensors")
    resumed = Holder(name, kwargs)
    resumed.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert head + Run(resumed).steps(stream[7:]) == full


@pytest.mark.parametrize("name, kwargs", STATEFUL, ids=[i for i, c in zip(IDS, CONFIGS) if c in STATEFUL])
def test_state_is_in_state_dict_and_changes(name: str, kwargs: dict) -> None:
    holder = Holder(name, kwargs)
    before = copy.deepcopy(holder.state_dict())
    Run(holder).steps([{"cls": 4.0, "reg": 1.0}, {"cls": 3.0, "reg": 2.0}, {"cls": 2.5, "reg": 1.5}])
    after = holder.state_dict()
    assert int(after["balancer.steps"]) == 3
    changed = [k for k in after if k not in before or not torch.equal(before[k], after[k])]
    assert set(changed) - {"balancer.steps"}, "the balancer advanced without touching its state_dict"


@pytest.mark.parametrize("name, kwargs", STATEFUL, ids=[i for i, c in zip(IDS, CONFIGS) if c in STATEFUL])
def test_casting_the_model_keeps_the_state_exact(name: str, kwargs: dict) -> None:
    stream = [{"cls": 1.0 / (i + 1), "reg": 0.3 + 0.1 * (i % 3)} for i in range(9)]
    full = Run(Holder(name, kwargs)).steps(stream)
    holder = Holder(name, kwargs)
    head = Run(holder).steps(stream[:4])
    state = copy.deepcopy(holder.state_dict())
    holder.half()  # would round float64 statistics to float16 without Balancer._apply
    assert all(v.dtype == state[k].dtype and torch.equal(v, state[k]) for k, v in holder.state_dict().items())
    holder.float()
    assert head + Run(holder).steps(stream[4:]) == full


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
def test_eval_calls_change_nothing(name: str, kwargs: dict) -> None:
    holder = Holder(name, kwargs)
    run = Run(holder)
    run.steps([{"cls": 4.0, "reg": 1.0}, {"cls": 3.0, "reg": 2.0}, {"cls": 2.0, "reg": 1.0}])
    state = copy.deepcopy(holder.state_dict())
    holder.eval()
    with torch.no_grad():
        first = holder.balancer({"cls": torch.tensor(9.0), "reg": torch.tensor(1.0), "new": torch.tensor(1.0)})[1]
        for _ in range(5):
            again = holder.balancer({"cls": torch.tensor(9.0), "reg": torch.tensor(1.0), "new": torch.tensor(1.0)})[1]
            assert again == first
    now = holder.state_dict()
    assert set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)


@pytest.mark.parametrize("name, kwargs", [c for c in CONFIGS if c[0] != "uncertainty"], ids=IDS[:-1])
def test_gradient_of_each_loss_is_its_reported_weight(name: str, kwargs: dict) -> None:
    b = lossreg.create_balancer(name, **kwargs)
    for i in range(5):
        losses = {
            k: torch.tensor(v + i, dtype=torch.float64, requires_grad=True)
            for k, v in {"cls": 2.0, "reg": 0.5, "quality": 1.0}.items()
        }
        total, weights = b(losses)
        total.backward()
        assert {k: float(v.grad) for k, v in losses.items()} == weights


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name: str) -> None:
    info = lossreg.component_info("balancer", name)
    assert info["kind"] == "balancer" and info["paper"]
    assert "Paper:" in info["doc"]
    description = dict(lossreg.list_components("balancer", with_description=True))[name]
    assert description and description == info["doc"].splitlines()[0]
    b = lossreg.create_balancer(name)
    assert isinstance(b, Balancer)
    # Every default parameter appears in the docstring's Args with its default in brackets.
    for param in info["params"]:
        assert f"{param}:" in info["doc"], param


def test_defaults_match_methods_md() -> None:
    params = {n: lossreg.component_info("balancer", n)["params"] for n in NAMES}
    for n in ("alwa1", "alwa2"):
        assert params[n] == {
            "interval": 100,
            "lambda0": 1.0,
            "statistics": "weighted",
            "cls_weight": "replace",
            "cls_task": "cls",
            "reg_task": "reg",
        }
    assert params["dwa"] == {"temperature": 2.0, "interval": 100}
    assert params["dtp"] == {"gamma": 1.0, "momentum": 0.9}
    assert params["uncertainty"] == {"tasks": ("cls", "reg")}
    assert lossreg.create_balancer("static").weights == {"cls": 1.0, "reg": 1.0}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "losses, error",
    [
        ({}, ValueError),
        ([torch.tensor(1.0)], TypeError),
        ({"cls": 1.0}, TypeError),
        ({"cls": torch.ones(2)}, ValueError),
        ({"cls": torch.tensor(1)}, TypeError),
        ({"rpn.cls": torch.tensor(1.0)}, ValueError),
    ],
)
def test_bad_input_is_rejected(name: str, losses, error) -> None:
    with pytest.raises(error, match="Balancer|ALWA|DWA|DTP"):
        lossreg.create_balancer(name)(losses)


def test_one_element_losses_give_a_scalar_total() -> None:
    total, w = lossreg.create_balancer("static")({"cls": torch.ones(1), "reg": torch.ones(1, 1)})
    assert total.shape == () and w == {"cls": 1.0, "reg": 1.0}


def test_a_non_finite_weight_is_a_bug_that_raises() -> None:
    class Broken(Balancer):
        def compute_weights(self, values, update):
            return {k: math.nan for k in values}

    with pytest.raises(RuntimeError, match="Broken produced weight nan"):
        Broken()({"cls": torch.tensor(1.0)})
