"""lossreg.convert.from_torchvision: the converted detector makes torchvision's detections.

Every torchvision detector here is random-init (nothing can be downloaded) with weights
re-drawn so that it detects things (tv_helpers.spread_). The inputs are two images of
sizes that are not multiples of 32 nor of 128, so the comparison covers the batch
padding, the clipping to each image before NMS and torchvision's cell spacing of the
coarse levels (input size // feature size). torchvision's transform keeps their size
(resize disabled); it still normalises and pads as usual.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision

import lossreg
from lossreg.convert import COCO_CLASSES, TORCHVISION_COCO_SLOTS, from_torchvision
from lossreg.convert.torchvision import convert_state_dict, detect_arch

_spec = importlib.util.spec_from_file_location("tv_helpers", Path(__file__).with_name("tv_helpers.py"))
tvh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tvh)

ARCHS = [
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
]


def _tv(arch: str, suppress_unused: bool = True, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    tv = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None)
    if arch.startswith("fasterrcnn"):
        tv.rpn._post_nms_top_n["testing"] = 150  # fewer RoIs: a faster test, and read back by the converter
    return tvh.no_resize(tvh.spread_(tv, suppress_unused, seed))


def _images(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 150, 200, generator=g), torch.rand(3, 120, 190, generator=g)]


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_detector_makes_torchvisions_detections(arch):
    tv = _tv(arch)
    images = _images()
    with torch.no_grad():
        ref = tv(images)
    model = from_torchvision(tv)
    assert model.num_classes == 80 and model.label_names == list(COCO_CLASSES)
    with torch.no_grad():
        out = model(images)
    worst = tvh.assert_same_detections(ref, out, TORCHVISION_COCO_SLOTS)
    assert all(len(r["boxes"]) > 10 for r in ref), "the test model should detect something"
    print(f"{arch}: max |d box| = {worst['boxes']:.2e} px, max |d score| = {worst['scores']:.2e}")


def test_all_slots_reproduce_weights_whose_unused_slots_score():
    """classes='all' keeps torchvision's 91 slots: exact even when the unused ones detect things."""
    tv = _tv("retinanet_resnet50_fpn", suppress_unused=False, seed=3)
    images = _images(4)
    with torch.no_grad():
        ref = tv(images)
    assert any(bool((torch.isin(r["labels"], torch.tensor(tvh.UNUSED_SLOTS))).any()) for r in ref)
    model = from_torchvision(tv, classes="all")
    assert model.num_classes == 91 and model.label_names[0] == "__background__" and model.label_names[12] == "N/A 12"
    with torch.no_grad():
        out = model(images)
    tvh.assert_same_detections(ref, out, list(range(91)))


def _legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's pre-0.13 key layout (what its COCO_V1 files hold)."""
    import re

    out = {}
    for k, v in state.items():
        k = re.sub(r"^(head\.\w+_head\.conv)\.(\d+)\.0\.", lambda m: f"{m[1]}.{2 * int(m[2])}.", k)
        k = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", k)
        k = re.sub(r"^(backbone\.fpn\.(inner|layer)_blocks\.\d+)\.0\.", r"\1.", k)
        out[k] = v
    return out


@pytest.mark.parametrize("arch", ["retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn"])
def test_state_dict_file_in_the_legacy_layout(tmp_path, arch):
    """A .pth state dict with the key names of torchvision's published v1 files converts to the same weights."""
    tv = _tv(arch)
    state = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    legacy = _legacy(state)
    assert legacy.keys() != state.keys()
    path = tmp_path / "tv.pth"
    torch.save(legacy, path)
    assert detect_arch(legacy) == arch
    from_file = from_torchvision(path)
    from_model = from_torchvision(tv)
    a, b = from_file.state_dict(), from_model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a state dict is taken as the published v1 weights: their frozen BatchNorm has eps 0
    assert from_file.model_args["bn_eps"] == 0.0 and from_model.model_args["bn_eps"] is None


def test_class_rows_follow_the_coco_names():
    tv = _tv("fasterrcnn_resnet50_fpn")
    model = from_torchvision(tv)
    w_tv = tv.roi_heads.box_predictor.cls_score.weight
    w = model.roi_head.cls_score.weight
    person, car = model.label_names.index("person"), model.label_names.index("car")
    assert torch.equal(w[person], w_tv[1]) and torch.equal(w[car], w_tv[3])
    assert torch.equal(w[-1], w_tv[0])  # background: torchvision's first row, lossreg's last
    box_tv = tv.roi_heads.box_predictor.bbox_pred.weight
    assert torch.equal(model.roi_head.bbox_pred.weight[car * 4 : car * 4 + 4], box_tv[12:16])
    # the state dict converts alone, too
    converted = convert_state_dict(tv.state_dict(), "fasterrcnn_resnet50_fpn", TORCHVISION_COCO_SLOTS, 91)
    assert converted["roi_head.cls_score.weight"].shape == (81, 1024)


def test_settings_come_from_the_instance():
    tv = _tv("retinanet_resnet50_fpn")
    tv.score_thresh, tv.nms_thresh, tv.detections_per_img = 0.3, 0.45, 50
    model = from_torchvision(tv)
    assert (model.head.score_thr, model.head.nms_thr, model.head.max_dets) == (0.3, 0.45, 50)
    tv.transform.image_mean = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="normalises with mean"):
        from_torchvision(tv)


def test_bad_sources():
    with pytest.raises(ValueError, match="cannot tell which torchvision detector"):
        from_torchvision({"foo.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown torchvision detector"):
        from_torchvision({"foo.weight": torch.zeros(1)}, arch="ssd300_vgg16")
    with pytest.raises(FileNotFoundError, match="no such file"):
        from_torchvision("/nonexistent/file.pth")
    tv = _tv("retinanet_resnet50_fpn")
    state = tv.state_dict()
    state["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key 'head.extra.weight'"):
        from_torchvision(state)


def test_v2_model_names_build_the_v2_layout():
    model = lossreg.create_model("retinanet_resnet50_fpn_v2", num_classes=3)
    assert model.head.cls_tower[1].__class__.__name__ == "GroupNorm"
    assert model.model_args["neck"]["extra_from"] == "c5"
    frcnn = lossreg.create_model("faster_rcnn_resnet50_fpn_v2", num_classes=3, roi_head={"num_fcs": 1})
    assert frcnn.roi_head.convs is not None and frcnn.roi_head.fc7 is None and len(frcnn.rpn_head.extra_convs) == 1
