"""Exact loss parity with torchvision (issue 15): with the same (random) weights and matched options,
lossreg's training losses on a batch equal torchvision's ``compute_loss`` to 1e-5, and so do the gradients.

The twins (torchvision's detector at a small configuration and lossreg's with the options that match
it) are built by ``benchmarks/_torchvision_twins.py``, shared with ``benchmarks/bench_parity.py``.
The head outputs are perturbed away from their initialisation first (regression biases of a few
strides, larger output weights) so that every loss term and every assignment path is exercised.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)

from _torchvision_twins import Config, build_lossreg, build_torchvision, copy_weights  # noqa: E402

CFG = Config(num_classes=3, size=96)
# Faster R-CNN: samplers switched off (more samples allowed than there are candidates: every non-ignored
# anchor and proposal is taken, so no random draw decides the loss), 64 proposals per image, 128-d FCs
CFG_2STAGE = Config(num_classes=3, size=96, rpn_samples=10**6, roi_samples=10**6, rpn_post_nms_train=64, fc_channels=128)
RTOL, ATOL = 1e-5, 1e-6


def _batch(seed: int = 0, num_images: int = 3, size: int = CFG.size):
    """Images in 0-1 and 1-4 random float boxes (12-80 px) per image; the last image has none."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(num_images, 3, size, size, generator=gen)
    targets = []
    for i in range(num_images):
        n = 0 if i == num_images - 1 else int(torch.randint(1, 5, (1,), generator=gen))
        wh = 12 + torch.rand(n, 2, generator=gen) * 68
        xy = torch.rand(n, 2, generator=gen) * (size - wh)
        targets.append(
            {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, CFG.num_classes, (n,), generator=gen)}
        )
    return images, targets


def _perturb(tv: torch.nn.Module, arch: str, seed: int = 0) -> None:
    """Move torchvision's head outputs off their init: the twin gets the same weights afterwards."""
    gen = torch.Generator().manual_seed(100 + seed)
    if arch == "faster_rcnn":
        with torch.no_grad():
            rpn, box = tv.rpn.head, tv.roi_heads.box_predictor
            rpn.cls_logits.weight.normal_(0, 0.2, generator=gen)
            rpn.cls_logits.bias.uniform_(-3.0, 1.0, generator=gen)
            rpn.bbox_pred.weight.normal_(0, 0.2, generator=gen)
            rpn.bbox_pred.bias.uniform_(-0.5, 0.5, generator=gen)
            box.cls_score.weight.normal_(0, 0.1, generator=gen)
            box.bbox_pred.weight.normal_(0, 0.1, generator=gen)
        return
    cls = tv.head.classification_head.cls_logits
    reg = tv.head.regression_head.bbox_reg
    with torch.no_grad():
        cls.weight.normal_(0, 0.05, generator=gen)
        cls.bias.uniform_(-4.0, 0.0, generator=gen)
        reg.weight.normal_(0, 0.05, generator=gen)
        if arch == "fcos":  # distances of 0.5-4 strides (relu'd): boxes that overlap their gts or not
            reg.bias.uniform_(0.5, 4.0, generator=gen)
            ctr = tv.head.regression_head.bbox_ctrness
            ctr.weight.normal_(0, 0.05, generator=gen)
            ctr.bias.uniform_(-1.0, 1.0, generator=gen)
        else:
            reg.bias.uniform_(-0.5, 0.5, generator=gen)


def _twins(arch: str, seed: int = 0, **head_overrides):
    cfg = CFG_2STAGE if arch == "faster_rcnn" else CFG
    torch.manual_seed(seed)
    tv = build_torchvision(arch, cfg)
    _perturb(tv, arch, seed)
    ours = build_lossreg(arch, cfg, matched=True, **head_overrides)
    copy_weights(ours, tv)
    tv.train()
    ours.train()
    return tv, ours


def _losses(tv, ours, images, targets):
    lt = tv(list(images), targets)
    lo = ours(images, targets)
    return lt, lo


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.detach().double(), b.detach().double(), rtol=RTOL, atol=ATOL)


FCOS_TERMS = {"loss_cls": "classification", "loss_reg": "bbox_regression", "loss_quality": "bbox_ctrness"}
RETINA_TERMS = {"loss_cls": "classification", "loss_reg": "bbox_regression"}


@pytest.mark.parametrize("seed", [0, 1])
def test_fcos_losses_and_gradients_equal_torchvision(seed):
    tv, ours = _twins("fcos", seed)
    images, targets = _batch(seed)
    lt, lo = _losses(tv, ours, images, targets)
    assert set(lo) == set(FCOS_TERMS)
    for ours_key, tv_key in FCOS_TERMS.items():
        assert _close(lo[ours_key], lt[tv_key]), (ours_key, float(lo[ours_key]), float(lt[tv_key]))
    assert float(lt["bbox_regression"]) > 0.1 and float(lt["classification"]) > 0.1  # non-trivial terms
    sum(lt.values()).backward()
    sum(lo.values()).backward()
    pairs = {
        "head.classification_head.cls_logits.weight": ours.head.cls_out.weight,
        "head.regression_head.bbox_reg.weight": ours.head.reg_out.weight,
        "head.regression_head.bbox_ctrness.weight": ours.head.quality_out.weight,
        "backbone.body.layer4.1.conv2.weight": ours.backbone.body.layer4[1].conv2.weight,
    }
    tv_params = dict(tv.named_parameters())
    for name, p in pairs.items():
        g_tv, g_ours = tv_params[name].grad, p.grad
        assert torch.allclose(g_ours, g_tv, rtol=1e-4, atol=1e-7), (name, float((g_ours - g_tv).abs().max()))


@pytest.mark.parametrize(
    "option,value,changed",
    [
        ("reg_weighting", "quality", {"loss_reg"}),  # mmdetection: GIoU weighted by the centerness target
        ("center_offset", 0.5, {"loss_cls", "loss_reg", "loss_quality"}),  # points at the cell centres
    ],
)
def test_fcos_defaults_differ_from_torchvision_only_where_documented(option, value, changed):
    """Each of lossreg's own fcos defaults, alone, moves exactly the loss terms it is said to move."""
    tv, ours = _twins("fcos", 0, **{option: value})
    images, targets = _batch(0)
    lt, lo = _losses(tv, ours, images, targets)
    differ = {k for k, tv_key in FCOS_TERMS.items() if not _close(lo[k], lt[tv_key])}
    assert differ == changed


def test_fcos_scale_per_level_is_identity_at_init():
    """The learnable per-level scales start at 1: with them, the first losses are torchvision's too."""
    tv, ours = _twins("fcos", 0, scale_per_level=True)
    copy_weights(ours, tv)
    images, targets = _batch(0)
    lt, lo = _losses(tv, ours, images, targets)
    for ours_key, tv_key in FCOS_TERMS.items():
        assert _close(lo[ours_key], lt[tv_key])


@pytest.mark.parametrize("seed", [0, 1])
def test_retinanet_losses_and_gradients_equal_torchvision(seed):
    tv, ours = _twins("retinanet", seed)
    images, targets = _batch(seed)
    lt, lo = _losses(tv, ours, images, targets)
    assert set(lo) == set(RETINA_TERMS)
    for ours_key, tv_key in RETINA_TERMS.items():
        assert _close(lo[ours_key], lt[tv_key]), (ours_key, float(lo[ours_key]), float(lt[tv_key]))
    sum(lt.values()).backward()
    sum(lo.values()).backward()
    tv_params = dict(tv.named_parameters())
    for name, p in {
        "head.classification_head.cls_logits.weight": ours.head.cls_out.weight,
        "head.regression_head.bbox_reg.weight": ours.head.reg_out.weight,
    }.items():
        assert torch.allclose(p.grad, tv_params[name].grad, rtol=1e-4, atol=1e-7), name


def test_retinanet_batch_normalization_is_the_documented_difference():
    """lossreg's default divides by the batch's positives, torchvision by each image's: equal with one image."""
    tv, ours = _twins("retinanet", 0, loss_normalization="batch")
    images, targets = _batch(0)
    lt, lo = _losses(tv, ours, images, targets)
    assert not _close(lo["loss_cls"], lt["classification"])
    lt1, lo1 = _losses(tv, ours, images[:1], targets[:1])
    for ours_key, tv_key in RETINA_TERMS.items():
        assert _close(lo1[ours_key], lt1[tv_key])


FRCNN_TERMS = {
    "loss_rpn_cls": "loss_objectness",
    "loss_rpn_reg": "loss_rpn_box_reg",
    "loss_roi_cls": "loss_classifier",
    "loss_roi_reg": "loss_box_reg",
}


@pytest.mark.parametrize("seed", [0, 1])
def test_faster_rcnn_losses_and_gradients_equal_torchvision(seed):
    """RPN and RoI losses, proposals (top-k, clipping, NMS) included, with the samplers switched off."""
    tv, ours = _twins("faster_rcnn", seed)
    images, targets = _batch(seed)
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]  # torchvision: 0 = background
    lt = tv(list(images), tv_targets)
    lo = ours(images, targets)
    assert set(lo) == set(FRCNN_TERMS)
    for ours_key, tv_key in FRCNN_TERMS.items():
        assert _close(lo[ours_key], lt[tv_key]), (ours_key, float(lo[ours_key]), float(lt[tv_key]))
    assert float(lt["loss_box_reg"]) > 1e-3 and float(lt["loss_rpn_box_reg"]) > 1e-3
    sum(lt.values()).backward()
    sum(lo.values()).backward()
    tv_params = dict(tv.named_parameters())
    grads = {
        "rpn.head.cls_logits.weight": ours.rpn_head.cls_out.weight.grad,
        "rpn.head.bbox_pred.weight": ours.rpn_head.reg_out.weight.grad,
        "roi_heads.box_head.fc6.weight": ours.roi_head.fc6.weight.grad,
    }
    for name, g in grads.items():
        assert torch.allclose(g, tv_params[name].grad, rtol=1e-4, atol=1e-7), name
    g_cls = tv_params["roi_heads.box_predictor.cls_score.weight"].grad
    assert torch.allclose(ours.roi_head.cls_score.weight.grad, torch.cat([g_cls[1:], g_cls[:1]]), rtol=1e-4, atol=1e-7)
