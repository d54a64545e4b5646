"""Fine-tuning transfer: every weight kept but the classification output, matched classes copied."""

from __future__ import annotations

import math

import pytest
import torch

import lossreg
from lossreg.detectors.finetune import cls_output_layers, transfer_state_dict


def _model(name="retinanet_resnet18_fpn", **kwargs):
    torch.manual_seed(kwargs.pop("seed", 0))
    return lossreg.create_model(name, **kwargs)


@pytest.fixture(scope="module")
def source():
    model = _model(num_classes=3, label_names=["cat", "dog", "bird"], seed=1)
    with torch.no_grad():  # make the pretrained output layer recognisable
        model.head.cls_out.weight.normal_(std=1.0)
        model.head.cls_out.bias.uniform_(1.0, 2.0)
    return model


def test_layers_are_declared(source):
    assert cls_output_layers(source) == {"head.cls_out": (9, False)}


def test_matched_classes_copied_others_reinitialised(source):
    target = _model(num_classes=2, label_names=["dog", "fish"], seed=2)
    report = transfer_state_dict(target, source.state_dict(), source.label_names)
    assert report == {"copied_classes": ["dog"], "reinitialised": ["head.cls_out"]}
    src_w, dst_w = source.head.cls_out.weight, target.head.cls_out.weight
    src_b, dst_b = source.head.cls_out.bias, target.head.cls_out.bias
    for a in range(9):  # rows are anchor-major: a * C + c
        assert torch.equal(dst_w[a * 2 + 0], src_w[a * 3 + 1])  # dog <- dog
        assert torch.equal(dst_b[a * 2 + 0], src_b[a * 3 + 1])
        assert float(dst_b[a * 2 + 1].detach()) == pytest.approx(-math.log(99))  # fish: focal prior
        assert float(dst_w[a * 2 + 1].detach().abs().max()) < 0.1
    # every other weight is the pretrained one
    for key, value in source.state_dict().items():
        if not key.startswith("head.cls_out"):
            assert torch.equal(target.state_dict()[key], value), key


def test_without_label_names_all_reinitialised(source):
    target = _model(num_classes=3, seed=3)
    report = transfer_state_dict(target, source.state_dict(), source.label_names)
    assert report["copied_classes"] == []
    assert torch.allclose(target.head.cls_out.bias, torch.full((27,), -math.log(99)))


def test_mismatch_loads_nothing(source):
    target = _model("atss_resnet18_fpn", num_classes=3, seed=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match="checkpoint does not fit this detector: missing"):
        transfer_state_dict(target, source.state_dict(), source.label_names)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_faster_rcnn_class_specific_regression_rows():
    src = _model("faster_rcnn_resnet18_fpn", num_classes=3, label_names=["cat", "dog", "bird"], seed=5)
    with torch.no_grad():
        src.roi_head.bbox_pred.weight.normal_()
        src.roi_head.bbox_pred.bias.normal_()
    dst = _model("faster_rcnn_resnet18_fpn", num_classes=2, label_names=["bird", "cow"], seed=6)
    report = transfer_state_dict(dst, src.state_dict(), src.label_names)
    assert report["copied_classes"] == ["bird"]
    assert report["reinitialised"] == ["roi_head.bbox_pred", "roi_head.cls_score"]
    sw, dw = src.roi_head.bbox_pred.weight, dst.roi_head.bbox_pred.weight
    assert torch.equal(dw[0:4], sw[8:12])  # bird: class 2 of the source, class 0 here
    assert float(dw[4:8].detach().abs().max()) < 0.01 and torch.all(dst.roi_head.bbox_pred.bias[4:8] == 0)
    # softmax classification: matched class and the background column copied
    sc, dc = src.roi_head.cls_score.weight, dst.roi_head.cls_score.weight
    assert torch.equal(dc[0], sc[2]) and torch.equal(dc[2], sc[3])
    assert torch.equal(dst.rpn_head.state_dict()["cls_out.weight"], src.rpn_head.state_dict()["cls_out.weight"])


@pytest.mark.parametrize("direction", ["focal->hcra", "hcra->focal"])
def test_loss_and_balancer_state_is_not_transferred(direction):
    """Fine-tuning may swap losses and balancers: their state starts fresh, the network is copied."""
    hcra = {"cls_loss": "hcra_c", "reg_loss": "hcra_r", "balancer": "alwa2"}
    src_kw, dst_kw = ({}, hcra) if direction == "focal->hcra" else (hcra, {})
    source = _model("atss_resnet18_fpn", num_classes=2, seed=5, **src_kw)
    for value in source.state_dict().values():  # recognisable source values, loss state included
        if value.is_floating_point():
            value.add_(1.5)
    target = _model("atss_resnet18_fpn", num_classes=2, seed=6, **dst_kw)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    state_keys = [k for k in fresh if k.startswith(("head.cls_loss.", "head.reg_loss.", "head.balancer."))]
    assert any(k.startswith("head.cls_loss.") for k in state_keys) == (direction == "focal->hcra")  # HCRA-C's state
    transfer_state_dict(target, source.state_dict())
    after = target.state_dict()
    for key in state_keys:
        assert torch.equal(after[key], fresh[key]), key
    for key, value in source.state_dict().items():
        if key in after and not key.startswith(("head.cls_out", "head.cls_loss.", "head.reg_loss.", "head.balancer.")):
            assert torch.equal(after[key], value), key
