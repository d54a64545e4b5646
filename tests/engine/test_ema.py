"""ModelEMA averages weights and batch-norm statistics only; loss and balancer state is copied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lossreg
from lossreg.engine.ema import ModelEMA, averaged_keys


class _Toy(nn.Module):
    """A conv + BN "network" that owns a stateful loss and balancer, as the detector heads do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.cls_loss = lossreg.create_loss("ghm_c")
        self.reg_loss = lossreg.create_loss("hcra_r")
        self.balancer = lossreg.create_balancer("alwa1", interval=2)


def _set_state(model: nn.Module, value: float) -> None:
    """Every float entry = ``value``, every integer counter = ``int(10 * value)``."""
    with torch.no_grad():
        for v in model.state_dict().values():
            v.fill_(value if v.is_floating_point() else int(10 * value))


def test_update_averages_weights_and_bn_and_copies_loss_and_balancer_state():
    live = _Toy()
    _set_state(live, 1.0)
    ema = ModelEMA(live, decay=0.5, warmup=0)  # d = 0.5 from the first update
    _set_state(live, 3.0)
    ema.update(live)
    out = ema.module.state_dict()
    # Hand-computed: averaged entries 0.5 * 1 + 0.5 * 3 = 2; copied entries = the live model's.
    for key in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        assert torch.equal(out[key], torch.full_like(out[key], 2.0)), key
    assert int(out["bn.num_batches_tracked"]) == 30
    for key in ("cls_loss.acc_sum", "reg_loss.running_mean", "balancer.alpha", "balancer.cls_window",
                "balancer.reg_window"):
        assert torch.equal(out[key], torch.full_like(out[key], 3.0)), key
    for key in ("balancer.count", "balancer.num_updates"):
        assert int(out[key]) == 30, key
    # Only parameters and BN running statistics are averaged.
    assert averaged_keys(live) == {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                   "bn.running_var"}


def test_detector_ema_keeps_the_live_alwa_window():
    # The case: after training, the EMA model's ALWA window and GHM/HCRA state equal the live
    # model's (an average would be a blend no model had), while the weights are averaged.
    model = lossreg.create_model(
        "atss_resnet18_fpn", num_classes=3, cls_loss="hcra_c", reg_loss="hcra_r", balancer="alwa1"
    )
    ema = ModelEMA(model, decay=0.9, warmup=0)
    keys = averaged_keys(model)
    state_keys = [k for k in model.state_dict() if k.startswith(("head.cls_loss.", "head.reg_loss.", "head.balancer."))]
    assert state_keys and not keys & set(state_keys)
    assert any(k.endswith("running_var") for k in keys) and "head.cls_out.weight" in keys
    with torch.no_grad():
        model.head.balancer.cls_window.fill_(6.44)
        model.head.cls_loss.acc_sum.fill_(5.0)
        model.head.cls_out.weight.add_(1.0)
    before = ema.module.head.cls_out.weight.clone()
    ema.update(model)
    assert torch.equal(ema.module.head.balancer.cls_window, model.head.balancer.cls_window)
    assert torch.equal(ema.module.head.cls_loss.acc_sum, model.head.cls_loss.acc_sum)
    expected = 0.9 * before + 0.1 * model.head.cls_out.weight
    torch.testing.assert_close(ema.module.head.cls_out.weight, expected)


def test_tied_weights_are_averaged_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

    live = Tied()
    with torch.no_grad():
        live.a.weight.fill_(1.0)
    ema = ModelEMA(live, decay=0.5, warmup=0)
    with torch.no_grad():
        live.a.weight.fill_(3.0)
    ema.update(live)
    assert ema.module.a.weight.eq(2.0).all() and ema.module.b.weight is ema.module.a.weight


@pytest.mark.parametrize("decay", [0.0, 0.99])
def test_state_dict_round_trip(decay):
    live = _Toy()
    ema = ModelEMA(live, decay=decay, warmup=0)
    _set_state(live, 2.0)
    ema.update(live)
    other = ModelEMA(_Toy(), decay=decay, warmup=0)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    for k, v in ema.module.state_dict().items():
        assert torch.equal(other.module.state_dict()[k], v), k
