"""Under bf16 autocast (``train.amp: auto`` on a CPU with native bf16) every assigner and balancer
computes in float32: finite float32 losses and gradients, and the assignment of bf16 predictions is
the float32 assignment of the same (rounded) values."""

from __future__ import annotations

import pytest
import torch
from robust_helpers import one_target, tiny_model

BALANCERS = ["static", "dwa", "dtp", "guided", "uncertainty", "alwa1", "alwa2"]
ASSIGNERS = ["atss", "eatss", "max_iou", "fcos"]


def _images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def _targets() -> list[dict[str, torch.Tensor]]:
    return [one_target(), one_target(((10.0, 12.0, 60.0, 40.0), (2.0, 30.0, 20.0, 62.0)), (0, 2))]


def _bf16_step(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(_images(), _targets())
    sum(losses.values()).backward()
    return losses


@pytest.mark.parametrize("balancer", BALANCERS)
def test_every_balancer_trains_under_bf16_autocast(balancer):
    model = tiny_model("atss", balancer=balancer)
    for _ in range(3):  # windowed balancers (dwa, alwa) update after their first steps
        losses = _bf16_step(model)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), losses
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("assigner", ASSIGNERS)
def test_assignment_of_bf16_predictions_is_the_float32_assignment(assigner):
    arch = "fcos" if assigner == "fcos" else "atss"
    model = tiny_model(arch, assigner=assigner).train()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model._features(_images())
        out = model.head.flat_outputs(feats)
    assert out["cls"].dtype == torch.bfloat16  # the network did run in bf16
    targets = _targets()
    low = model.head.assign(out, targets)
    rounded = {**out, "cls": out["cls"].float(), "boxes": out["boxes"].float()}
    high = model.head.assign(rounded, targets)
    assert all(a.equal(b) for a, b in zip(low, high))
    losses = _bf16_step(model)
    assert all(torch.isfinite(v) for v in losses.values())
