"""lossreg.convert.from_mmdet: the converted detector makes mmdetection's detections.

Two levels:

- always: a checkpoint with mmdetection's exact key names and shapes
  (``data/mmdet_keys.json``, recorded from mmdetection 3.3's models) loads strictly;
- with the test-only extra ``mmdet-oracle`` installed (mmdet, mmcv-lite, mmengine;
  ``tests/convert/mmdet_oracle.py`` supplies mmcv's three compiled kernels from
  torchvision): mmdetection's own models, random-init with weights spread so that they
  detect, run through their own data preprocessor and ``predict``, and the converted
  lossreg detector must give the same detections (boxes 1e-3 px, scores 1e-5, same labels
  and order) on two images whose sizes are not multiples of 32.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lossreg.convert import COCO_CLASSES
from lossreg.convert.mmdet import MMDET_ARCHS, from_mmdet

HERE = Path(__file__).parent
KEYS = HERE / "data" / "mmdet_keys.json"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tvh = _load("tv_helpers")


@pytest.mark.parametrize("arch", MMDET_ARCHS)
def test_mmdet_key_layout_loads_strictly(arch):
    layout = json.loads(KEYS.read_text())[arch]
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(shape, generator=g) if dtype == "float" else torch.zeros(shape, dtype=torch.long))
             for k, (shape, dtype) in layout.items()}
    model = from_mmdet({"meta": {"CLASSES": list(COCO_CLASSES)}, "state_dict": state}, arch)
    assert model.label_names == list(COCO_CLASSES)
    own = model.state_dict()
    # every mmdetection tensor landed somewhere, unchanged
    copied = {k for k in state if not k.endswith("num_batches_tracked")}
    assert len([k for k in own if not k.endswith("num_batches_tracked") and not k.startswith(("head.balancer", "rpn_head.balancer", "roi_head.balancer"))]) >= len(copied)
    bad = dict(state)
    bad["bbox_head.extra_layer.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key"):
        from_mmdet({"state_dict": bad}, arch)


def test_checkpoint_file_weights_only(tmp_path):
    layout = json.loads(KEYS.read_text())["retinanet_r50_fpn_1x_coco"]
    state = {k: torch.zeros(shape) if dtype == "float" else torch.zeros(shape, dtype=torch.long)
             for k, (shape, dtype) in layout.items()}
    path = tmp_path / "retina.pth"
    torch.save({"meta": {"CLASSES": tuple(COCO_CLASSES), "epoch": 12}, "state_dict": state}, path)
    assert from_mmdet(path, "retinanet_r50_fpn_1x_coco").num_classes == 80
    torch.save({"meta": {"fn": print}, "state_dict": state}, path)  # not a weights-only pickle
    with pytest.raises(ValueError, match="weights_only=True"):
        from_mmdet(path, "retinanet_r50_fpn_1x_coco")


# --------------------------------------------------------------------------- against mmdetection itself


def _oracle():
    pytest.importorskip("mmengine")
    pytest.importorskip("mmcv")
    oracle = _load("mmdet_oracle")
    oracle.install_kernels()
    pytest.importorskip("mmdet")
    return oracle


def _spread_mmdet(model, seed=0, head_std=0.02):
    """Spread a random-init mmdetection model's weights so that it detects (as tv_helpers.spread_).

    ``head_std``: the head convs' weight std; larger makes a chaotic network whose float32
    rounding differences (of two implementations of the same function) grow past 1e-3 px.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
            elif isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and not name.startswith(("backbone", "neck")):
                std = head_std if isinstance(m, torch.nn.Conv2d) else 0.01
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.6 - 0.3)
        head = getattr(model, "bbox_head", None)
        for attr in ("retina_cls", "atss_cls", "conv_cls", "vfnet_cls"):
            if head is not None and hasattr(head, attr):
                getattr(head, attr).bias.copy_(torch.rand(getattr(head, attr).bias.shape, generator=g) * 2 - 3)
        if head is not None and hasattr(head, "conv_reg") and not getattr(head, "norm_on_bbox", True):
            # FCOS caffe: distances exp(scale * x) px; a bias of 1.5-4 gives boxes of 10-100 px
            head.conv_reg.bias.copy_(torch.rand(head.conv_reg.bias.shape, generator=g) * 2.5 + 1.5)
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.fill_(float(torch.rand((), generator=g)) * 0.5 + 0.75)
        roi = getattr(model, "roi_head", None)
        if roi is not None:
            cls = roi.bbox_head.fc_cls
            cls.weight.copy_(torch.randn(cls.weight.shape, generator=g) * 0.3)
            cls.bias.copy_(torch.rand(cls.bias.shape, generator=g) * 2 - 1)
    return model


def _images(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 150, 200, generator=g), torch.rand(3, 120, 190, generator=g)]


@pytest.mark.parametrize("arch", MMDET_ARCHS)
def test_converted_detector_makes_mmdetections_detections(arch):
    oracle = _oracle()
    torch.manual_seed(0)
    # VFNet chains two exponentials and a deformable conv per box: calmer random weights
    mm = _spread_mmdet(oracle.build(arch), head_std=0.01 if arch.startswith("vfnet") else 0.02)
    if arch.startswith("faster"):
        mm.test_cfg.rpn.max_per_img = 150  # fewer RoIs for a faster test
    images = _images()
    ref = oracle.predict(mm, images)
    assert all(len(r["boxes"]) > 10 for r in ref), "the test model should detect something"
    overrides = {"rpn_head": {"post_nms_topk_test": 150}} if arch.startswith("faster") else {}
    model = from_mmdet({"state_dict": mm.state_dict()}, arch, **overrides)
    with torch.no_grad():
        out = model(images)
    worst = tvh.assert_same_detections(ref, out, list(range(80)))
    print(f"{arch}: max |d box| = {worst['boxes']:.2e} px, max |d score| = {worst['scores']:.2e}")


MMDET_TAGS = {
    "retinanet_resnet50_fpn.mmdet_coco": ("retinanet_r50_fpn_1x_coco", 36.5),
    "atss_resnet50_fpn.mmdet_coco": ("atss_r50_fpn_1x_coco", 39.4),
    "fcos_resnet50_fpn.mmdet_coco": ("fcos_r50-caffe_fpn_gn-head_1x_coco", 36.6),
    "vfnet_resnet50_fpn.mmdet_coco": ("vfnet_r50_fpn_1x_coco", 41.6),
    "faster_rcnn_resnet50_fpn.mmdet_coco": ("faster-rcnn_r50_fpn_1x_coco", 37.4),
}


def test_mmdet_tags_are_declared():
    import lossreg

    for name, (config, ap) in MMDET_TAGS.items():
        cfg = lossreg.get_pretrained_cfg(*name.split("."))
        assert cfg.url.startswith("https://download.openmmlab.com/mmdetection/v2.0/") and cfg.file_name.endswith(".pth")
        assert cfg.file_name.endswith(f"-{cfg.sha256}.pth") and len(cfg.sha256) == 8
        assert cfg.coco_ap == ap and cfg.license == "apache-2.0" and cfg.num_classes == 80
        assert cfg.converter == "lossreg.convert.mmdet:from_mmdet" and cfg.converter_args == {"arch": config}


def test_mmdet_tags_match_mmdetections_metafiles():
    """With mmdetection installed: the URLs and box APs are those of its metafile.yml."""
    oracle = _oracle()
    import yaml

    import lossreg

    for name, (config, _) in MMDET_TAGS.items():
        meta = yaml.safe_load(oracle.config_path(config).with_name("metafile.yml").read_text())
        entry = next(m for m in meta["Models"] if m["Name"] == config)
        ap = next(r["Metrics"]["box AP"] for r in entry["Results"] if r["Task"] == "Object Detection")
        cfg = lossreg.get_pretrained_cfg(*name.split("."))
        assert cfg.url == entry["Weights"] and cfg.coco_ap == ap


def test_cli_convert_an_mmdet_file(tmp_path):
    from lossreg.cli import main

    layout = json.loads(KEYS.read_text())["atss_r50_fpn_1x_coco"]
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(shape, generator=g) * 0.01 if dtype == "float" else torch.zeros(shape, dtype=torch.long))
             for k, (shape, dtype) in layout.items()}
    path = tmp_path / "atss_r50_fpn_1x_coco_20200209-985f7bd0.pth"
    torch.save({"meta": {"CLASSES": tuple(COCO_CLASSES)}, "state_dict": state}, path)
    out = tmp_path / "atss"
    assert main(["convert", str(path), "--from", "mmdet", "--arch", "atss_r50_fpn_1x_coco", "--license", "apache-2.0",
                 "--coco-ap", "39.4", "--output", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert path.name in card and "apache-2.0" in card and "39.4" in card and "mmdet checkpoint" in card
    import lossreg

    model = lossreg.create_model(f"local-dir:{out}")
    assert model.label_names == list(COCO_CLASSES) and torch.equal(
        model.head.cls_out.weight, state["bbox_head.atss_cls.weight"]
    )
