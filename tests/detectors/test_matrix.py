"""Every registered component drops into the atss detector by name and trains one step.

The matrix is generated from the registry, so components registered later are covered
automatically: every classification loss x every regression loss, and every assigner
x every balancer. A tiny timm backbone and slim head keep each step to milliseconds.
"""

from __future__ import annotations

import pytest
import torch

import lossreg

TINY = {
    "backbone": "test_resnet",
    "neck": {"name": "fpn", "out_channels": 32},
    "head": {"name": "atss", "feat_channels": 32, "stacked_convs": 1},
}
DENSE_CLS = [n for n in lossreg.list_components("loss", task="cls") if not getattr(lossreg.get_registry("loss").get(n), "background_column", False)]
REG = lossreg.list_components("loss", task="reg")
ASSIGNERS = lossreg.list_components("assigner")
BALANCERS = lossreg.list_components("balancer")


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, 96, 96, generator=g)
    targets = [
        {"boxes": torch.tensor([[6.0, 8.0, 50.0, 70.0], [40.0, 30.0, 90.0, 88.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # an image with no objects
    ]
    return images, targets


def _step(**components):
    torch.manual_seed(0)
    model = lossreg.create_model("atss_resnet18_fpn", num_classes=3, **TINY, **components)
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    stem = next(p for p in model.backbone.parameters() if p.grad is not None)
    assert torch.isfinite(stem.grad).all() and stem.grad.abs().sum() > 0  # gradients reach the backbone
    return model, losses


@pytest.mark.parametrize("reg_loss", REG)
@pytest.mark.parametrize("cls_loss", DENSE_CLS)
def test_cls_x_reg(cls_loss, reg_loss):
    model, losses = _step(cls_loss=cls_loss, reg_loss=reg_loss)
    assert type(model.head.cls_loss) is lossreg.get_registry("loss").get(cls_loss)
    assert type(model.head.reg_loss) is lossreg.get_registry("loss").get(reg_loss)
    assert set(losses) == {"loss_cls", "loss_reg", "loss_quality"}


@pytest.mark.parametrize("balancer", BALANCERS)
@pytest.mark.parametrize("assigner", ASSIGNERS)
def test_assigner_x_balancer(assigner, balancer):
    model, losses = _step(assigner=assigner, balancer=balancer)
    assert type(model.head.assigner) is lossreg.get_registry("assigner").get(assigner)
    assert set(model.head.last_loss_weights) >= {"cls", "reg"}


def test_softmax_loss_rejected_by_dense_heads():
    with pytest.raises(ValueError, match="softmax loss with a background column"):
        lossreg.create_model("atss_resnet18_fpn", num_classes=3, cls_loss="ce", **TINY)


@pytest.mark.parametrize("name", lossreg.list_components("detector"))
def test_every_arch_trains_on_images_of_different_sizes(name):
    torch.manual_seed(0)
    model = lossreg.create_model(f"{name}_resnet18_fpn", num_classes=3, backbone="test_resnet")
    model.train()
    images = [torch.rand(3, 80, 96), torch.rand(3, 64, 72)]  # padded to one batch inside
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
    for det, (h, w) in zip(dets, [(80, 96), (64, 72)]):
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all()
