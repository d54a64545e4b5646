"""torchvision's COCO detectors as lossreg configurations, and the ``*_v2`` model names.

Each of torchvision's ResNet-50 FPN detectors is a lossreg detector with a few
documented options set; nothing here is special-cased code:

=============================  ==============================================================
torchvision builder            lossreg options (besides the architecture's defaults)
=============================  ==============================================================
``retinanet_resnet50_fpn``     frozen BN (eps 0 for the COCO_V1 weights), ``frozen_stages=1``,
                               P6/P7 from P5, ``anchor_style="torchvision"``, NMS 0.5, 300 dets
``retinanet_resnet50_fpn_v2``  BN (not frozen), P6/P7 from C5, GroupNorm head (``norm="gn"``),
                               GIoU loss, torchvision anchors, NMS 0.5, 300 dets
``fcos_resnet50_fpn``          frozen BN, P6/P7 from P5, points at the cell corners
                               (``center_offset=0``), no per-level scales, conv biases under GN,
                               score ``sqrt(cls * centerness)``, score_thr 0.2, NMS 0.6
``fasterrcnn_resnet50_fpn``    frozen BN (eps 0 for COCO_V1), torchvision anchors for the RPN,
                               smooth L1 (beta 1/9) in both heads, RoI head as torchvision's
``fasterrcnn_resnet50_fpn_v2`` BN, FPN with BN, 2-conv RPN, 4-conv (BN) + 1-FC box head
=============================  ==============================================================

All use ``frozen_stages=1`` (torchvision's ``trainable_backbone_layers=3``), the padding
torchvision's transform gives (``pad_fill="mean"``: zeros after normalisation) and the
training options of ``tests/detectors/test_loss_parity.py`` (RetinaNet's per-image loss
normalisation, torchvision's low-quality matching, FCOS's unweighted GIoU). torchvision
resizes every image inside the model (shorter side 800, longer at most 1333) and
normalises it with the ImageNet mean and std; lossreg normalises the same way (the timm
ResNet-50's mean and std are ImageNet's) but does not resize: feed images resized as
torchvision would, e.g. with :func:`torchvision_resize`, to get its detections.

``retinanet_resnet50_fpn_v2`` and ``faster_rcnn_resnet50_fpn_v2`` are registered model
names (``create_model("retinanet_resnet50_fpn_v2", num_classes=3)`` trains the v2 layout
from scratch or from ImageNet weights); the v1 layouts are the published weights' own
configuration (``retinanet_resnet50_fpn.tv_coco``) and otherwise plain ``retinanet`` /
``faster_rcnn`` with the options above.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from .._registry import PretrainedCfg, get_registry, register_model, register_pretrained
from ..data.coco_classes import COCO_CLASSES

__all__ = ["TORCHVISION_ARCHS", "torchvision_config", "torchvision_resize"]

# torchvision's Matcher (0.5 / 0.4, low-quality matches to each anchor's own best gt)
_RETINA_ASSIGNER = {"name": "max_iou", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0.0,
                    "match_low_quality": True, "low_quality_gt": "argmax"}
_SMOOTH_L1 = {"name": "smooth_l1", "beta": 1 / 9}  # torchvision's RPN and RoI box losses

_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "retinanet_resnet50_fpn": (
        "retinanet",
        {
            "backbone": "resnet50",
            "freeze_bn": True,
            "frozen_stages": 1,
            "neck": {"name": "fpn", "extra": "p6p7", "extra_from": "p5"},
            "head": {"name": "retina", "anchor_style": "torchvision", "norm": "none",
                     "cls_loss": {"name": "focal", "alpha": 0.25, "gamma": 2.0}, "reg_loss": "l1",
                     "assigner": _RETINA_ASSIGNER, "loss_normalization": "image"},
            "pad_fill": "mean",
            "score_thr": 0.05, "nms_thr": 0.5, "pre_nms_topk": 1000, "max_dets": 300,
        },
    ),
    "retinanet_resnet50_fpn_v2": (
        "retinanet",
        {
            "backbone": "resnet50",
            "freeze_bn": False,
            "frozen_stages": 1,
            "neck": {"name": "fpn", "extra": "p6p7", "extra_from": "c5"},
            "head": {"name": "retina", "anchor_style": "torchvision", "norm": "gn",
                     "cls_loss": {"name": "focal", "alpha": 0.25, "gamma": 2.0}, "reg_loss": "giou",
                     "assigner": _RETINA_ASSIGNER, "loss_normalization": "image"},
            "pad_fill": "mean",
            "score_thr": 0.05, "nms_thr": 0.5, "pre_nms_topk": 1000, "max_dets": 300,
        },
    ),
    "fcos_resnet50_fpn": (
        "fcos",
        {
            "backbone": "resnet50",
            "freeze_bn": True,
            "frozen_stages": 1,
            "neck": {"name": "fpn", "extra": "p6p7", "extra_from": "p5"},
            "head": {"name": "fcos", "anchor_style": "torchvision", "center_offset": 0.0, "scale_per_level": False,
                     "conv_bias": True, "norm": "gn", "quality_scoring": "geometric_mean",
                     "cls_loss": {"name": "focal", "alpha": 0.25, "gamma": 2.0}, "reg_loss": "giou",
                     "quality_loss": "bce", "reg_weighting": "none"},
            "pad_fill": "mean",
            "score_thr": 0.2, "nms_thr": 0.6, "pre_nms_topk": 1000, "max_dets": 100,
        },
    ),
    "fasterrcnn_resnet50_fpn": (
        "faster_rcnn",
        {
            "backbone": "resnet50",
            "freeze_bn": True,
            "frozen_stages": 1,
            "neck": {"name": "fpn", "extra": "maxpool"},
            "rpn_head": {"name": "rpn", "anchor_style": "torchvision", "num_convs": 1,
                         "reg_loss": _SMOOTH_L1, "assigner": {"name": "max_iou", "low_quality_gt": "argmax"},
                         "pre_nms_topk_train": 2000, "post_nms_topk_train": 2000, "post_nms_topk_test": 1000,
                         "nms_thr": 0.7, "min_size": 1e-3, "score_thr": 0.0},
            "roi_head": {"name": "roi_box", "reg_loss": _SMOOTH_L1,
                         "coder_stds": [0.1, 0.1, 0.2, 0.2], "min_size": 1e-2},
            "pad_fill": "mean",
            "score_thr": 0.05, "nms_thr": 0.5, "max_dets": 100, "pre_nms_topk": 1000,
        },
    ),
    "fasterrcnn_resnet50_fpn_v2": (
        "faster_rcnn",
        {
            "backbone": "resnet50",
            "freeze_bn": False,
            "frozen_stages": 1,
            "neck": {"name": "fpn", "extra": "maxpool", "norm": "bn"},
            "rpn_head": {"name": "rpn", "anchor_style": "torchvision", "num_convs": 2,
                         "reg_loss": _SMOOTH_L1, "assigner": {"name": "max_iou", "low_quality_gt": "argmax"},
                         "pre_nms_topk_train": 2000, "post_nms_topk_train": 2000, "post_nms_topk_test": 1000,
                         "nms_thr": 0.7, "min_size": 1e-3, "score_thr": 0.0},
            "roi_head": {"name": "roi_box", "reg_loss": _SMOOTH_L1,
                         "coder_stds": [0.1, 0.1, 0.2, 0.2], "min_size": 1e-2,
                         "num_convs": 4, "conv_channels": 256, "conv_norm": "bn", "num_fcs": 1},
            "pad_fill": "mean",
            "score_thr": 0.05, "nms_thr": 0.5, "max_dets": 100, "pre_nms_topk": 1000,
        },
    ),
}

#: torchvision's builder names this module has a configuration for.
TORCHVISION_ARCHS: tuple[str, ...] = tuple(_CONFIGS)


def torchvision_config(tv_arch: str) -> tuple[str, dict[str, Any]]:
    """``(lossreg architecture, keyword arguments)`` of torchvision's ``tv_arch`` builder (a fresh copy)."""
    if tv_arch not in _CONFIGS:
        raise KeyError(f"no lossreg configuration for torchvision {tv_arch!r}; known: {', '.join(_CONFIGS)}")
    arch, kwargs = _CONFIGS[tv_arch]
    return arch, copy.deepcopy(kwargs)


def torchvision_resize(image: Tensor, min_size: int = 800, max_size: int = 1333) -> tuple[Tensor, float]:
    """``image [3, H, W]`` resized as torchvision's detectors do inside (``GeneralizedRCNNTransform``), and the scale.

    The shorter side becomes ``min_size`` unless the longer would exceed ``max_size``
    (then the longer becomes ``max_size``), bilinear, ``align_corners=False``. Boxes
    detected on the result divide by the scale to return to the original image.
    """
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    scale = min(min_size / min(h, w), max_size / max(h, w))
    out = F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False)
    return out[0], scale


def _register_v2(name: str, tv_arch: str) -> None:
    arch, defaults = _CONFIGS[tv_arch]

    def entry(pretrained: bool = False, pretrained_cfg: PretrainedCfg | None = None, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError("pretrained weights are loaded by lossreg.create_model(name, pretrained=True)")
        args = copy.deepcopy(defaults)
        for key, value in kwargs.items():  # a head / neck dict given as an override keeps the v2 settings it omits
            if isinstance(value, dict) and isinstance(args.get(key), dict) and value.get("name", args[key]["name"]) == args[key]["name"]:
                args[key] = {**args[key], **value}
            else:
                args[key] = value
        return get_registry("detector").create(arch, **args)

    entry.__doc__ = f"torchvision's {tv_arch} layout as a lossreg {arch} detector (see lossreg.detectors.torchvision_style)."
    entry.arch = arch  # type: ignore[attr-defined]
    entry.default_args = {"backbone": defaults["backbone"]}  # type: ignore[attr-defined]
    register_model(name)(entry)


_register_v2("retinanet_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2")
_register_v2("faster_rcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn_v2")


# --------------------------------------------------------------------------- published COCO weights

_TV_LICENSE = "bsd-3-clause"  # torchvision's weights are published under its BSD-3-Clause license
_TV_WEIGHTS = (
    # (lossreg model name, torchvision builder, enum, file, val2017 box AP, description)
    ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn", "RetinaNet_ResNet50_FPN_Weights.COCO_V1",
     "retinanet_resnet50_fpn_coco-eeacb38b.pth", 36.4, "RetinaNet ResNet-50 FPN (v1), COCO 2017."),
    ("retinanet_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
     "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth", 41.5, "RetinaNet ResNet-50 FPN v2 (GN head, GIoU), COCO 2017."),
    ("fcos_resnet50_fpn", "fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights.COCO_V1",
     "fcos_resnet50_fpn_coco-99b0c9b7.pth", 39.2, "FCOS ResNet-50 FPN, COCO 2017."),
    ("faster_rcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
     "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", 37.0, "Faster R-CNN ResNet-50 FPN (v1), COCO 2017."),
    ("faster_rcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
     "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", 46.7, "Faster R-CNN ResNet-50 FPN v2 (BN FPN, 4conv1fc box head), COCO 2017."),
)

for _model, _builder, _enum, _file, _ap, _desc in _TV_WEIGHTS:
    register_pretrained(
        PretrainedCfg(
            model=_model,
            tag="tv_coco",
            num_classes=80,
            label_names=COCO_CLASSES,
            description=_desc,
            metrics={"AP": _ap / 100.0},
            license=_TV_LICENSE,
            url=f"https://download.pytorch.org/models/{_file}",
            sha256=_file.rsplit("-", 1)[1].split(".")[0],  # torchvision's file names carry the sha256 prefix
            source=f"torchvision {_enum} ({_builder})",
            converter="lossreg.convert.torchvision:from_torchvision",
            converter_args={"arch": _builder},
            coco_ap=_ap,
        ),
        # a torchvision-named model without a tag means torchvision's weights, whichever module
        # registers its tags first (mmdet_style adds mmdet_coco to three of these names)
        default=True,
    )
