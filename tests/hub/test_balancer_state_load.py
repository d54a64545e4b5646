"""A run trained with a balancer whose per-task state is created at the first step loads back
(`lossreg eval` of a dwa run used to fail: "unexpected: head.balancer.sum__cls ...")."""

from __future__ import annotations

import pytest
import torch

import lossreg
from lossreg.hub import HubError, save_pretrained


def _trained(balancer: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = lossreg.create_model("fcos_resnet18_fpn", num_classes=2, balancer=balancer)
    model.train()
    images = torch.rand(1, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}]
    sum(model(images, targets).values()).backward()
    return model


@pytest.mark.parametrize("balancer", ["dwa", "uncertainty"])
def test_per_task_state_round_trips(tmp_path, balancer):
    model = _trained(balancer)
    saved = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.balancer.")}
    save_pretrained(model, tmp_path / "m")
    loaded = lossreg.create_model(f"local-dir:{tmp_path / 'm'}")
    got = {k: v for k, v in loaded.state_dict().items() if k.startswith("head.balancer.")}
    assert saved.keys() == got.keys()
    for key, value in saved.items():
        torch.testing.assert_close(got[key], value)


def test_unknown_keys_are_still_refused():
    from lossreg.hub.load import check_state_dict

    model = _trained("dwa")
    state = dict(model.state_dict())
    fresh = lossreg.create_model("fcos_resnet18_fpn", num_classes=2, balancer="dwa")
    check_state_dict(fresh, state, "test")  # the per-task buffers are accepted
    state["head.balancer.bogus"] = torch.zeros(())
    with pytest.raises(HubError, match="unexpected: head.balancer.bogus"):
        check_state_dict(fresh, state, "test")
