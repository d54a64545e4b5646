"""The backbones' random init (issue 15): torchvision's ResNet init by default, timm's zero-init of the
last BatchNorm of each residual branch on request (it cost FCOS 16 AP points from scratch, benchmarks/RESULTS.md)."""

from __future__ import annotations

import pytest
import torch

import lossreg
from lossreg.detectors.backbone import TimmBackbone


def _last_bn_weights(body: torch.nn.Module) -> list[torch.Tensor]:
    """The last BatchNorm weight of every residual block (bn2 of BasicBlock, bn3 of Bottleneck)."""
    out = []
    for m in body.modules():
        if hasattr(m, "zero_init_last"):
            out.append((m.bn3 if hasattr(m, "bn3") else m.bn2).weight.detach())
    return out


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_default_init_keeps_residual_branches_open(name):
    weights = _last_bn_weights(TimmBackbone(name).body)
    assert weights and all(bool((w == 1).all()) for w in weights)


def test_zero_init_last_is_timm_init_on_request():
    weights = _last_bn_weights(TimmBackbone("resnet18", zero_init_last=True).body)
    assert weights and all(bool((w == 0).all()) for w in weights)


def test_detectors_take_it_through_backbone_args_and_record_it():
    model = lossreg.create_model("fcos_resnet18_fpn", num_classes=2, backbone_args={"zero_init_last": True})
    assert all(bool((w == 0).all()) for w in _last_bn_weights(model.backbone.body))
    assert model.model_args["backbone_args"] == {"zero_init_last": True}
    default = lossreg.create_model("atss_resnet18_fpn", num_classes=2)
    assert all(bool((w == 1).all()) for w in _last_bn_weights(default.backbone.body))


def test_backbones_without_the_option():
    TimmBackbone("convnext_atto", strides=(8, 16, 32))  # default: the model's own init
    with pytest.raises(ValueError, match="zero_init_last"):
        TimmBackbone("convnext_atto", strides=(8, 16, 32), zero_init_last=False)
