"""The quality branch's loss gets the soft target the way it takes one (target= or quality=)."""

from __future__ import annotations

import pytest
import torch

import lossreg


def _batch():
    images = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 60.0], [0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([0, 2])},
    ]
    return images, targets


@pytest.mark.parametrize("loss", ["bce", "qfl", "vfl", "hcra_c"])
def test_quality_losses_train(loss):
    torch.manual_seed(0)
    model = lossreg.create_model("fcos_resnet18_fpn", num_classes=3, quality_loss=loss)
    model.train()
    out = model(*_batch())
    assert torch.isfinite(out["loss_quality"]) and out["loss_quality"] > 0
    out["loss_quality"].backward()


def test_qfl_quality_equals_soft_bce_on_one_column():
    """QFL with beta 0 on one column and label 0 is BCE against the soft target: same quality term."""
    losses = {}
    for spec in ("bce", {"name": "qfl", "beta": 0.0}):
        torch.manual_seed(0)
        model = lossreg.create_model("fcos_resnet18_fpn", num_classes=3, quality_loss=spec)
        model.train()
        losses[str(spec)] = model(*_batch())["loss_quality"]
    a, b = losses.values()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_quality_loss_without_soft_target_is_refused():
    with pytest.raises(ValueError, match="quality_loss FocalLoss takes neither"):
        lossreg.create_model("fcos_resnet18_fpn", num_classes=3, quality_loss="focal")
