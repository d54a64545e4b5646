"""mmdetection's COCO baselines as lossreg configurations, and their converted pretrained tags.

Each of mmdetection's R-50 FPN 1x baselines (the papers' own numbers) is a lossreg detector
with documented options set (see :mod:`lossreg.convert.mmdet` for the weights):

=================================  ==========================================================
mmdetection config                 lossreg options (besides the architecture's defaults)
=================================  ==========================================================
``retinanet_r50_fpn_1x_coco``      P6 from C5 (``on_input``), no ReLU before P7
                                   (``extra_relu=False``), empty boxes dropped (``min_box_size=0``)
``atss_r50_fpn_1x_coco``           P6 from P5 (``on_output``), no ReLU before P7, candidates by
                                   class score then times centerness
                                   (``quality_scoring="product_after_topk"``), NMS 0.6
``fcos_r50-caffe_fpn_gn-head_1x_coco``  caffe-style ResNet (``backbone_args={"style": "caffe"}``, its BGR
                                   mean and std 1 as RGB ``mean``/``std``), P6 from P5 with ReLU
                                   before P7, distances ``exp(scale * x)`` px (``norm_on_bbox=False``),
                                   centerness on the classification tower, ``product_after_topk``
``vfnet_r50_fpn_1x_coco``          points at the cell corners (``center_offset=0``, mmdetection's
                                   ``use_atss``), P6 from P5 with ReLU before P7, NMS 0.6
``faster-rcnn_r50_fpn_1x_coco``    RoIAlign ``aligned=True, sampling_ratio=0``, no small-box
                                   filter in the RoI head, RPN 1000 proposals, min_pos_iou 0.3
=================================  ==========================================================

All: the ResNet-50 is mmdetection's pytorch-style one (timm's ``resnet50``, same layer
names; FCOS: caffe-style), BatchNorm in eval mode (frozen here), ``frozen_stages=1``, ImageNet mean/std on
RGB (mmdetection's ``mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]`` on
0-255 is the same normalisation of 0-1 images), padding 0 after normalising
(``pad_fill="mean"``). mmdetection resizes test images to 1333 x 800 (keep ratio) in its
data pipeline, outside the model; so does lossreg (the recipe's data section).

Known difference: mmdetection's delta decoder also clamps ``dw, dh`` from below at
``-log(1000 / 16)`` (boxes more than 62.5 times smaller than their anchor); lossreg's, as
torchvision's, clamps only from above.
"""

from __future__ import annotations

import copy
from typing import Any

from .._registry import PretrainedCfg, register_pretrained
from ..data.coco_classes import COCO_CLASSES

__all__ = ["MMDET_ARCHS", "mmdet_config"]

_FOCAL = {"name": "focal", "alpha": 0.25, "gamma": 2.0}
_COMMON = {"backbone": "resnet50", "freeze_bn": True, "frozen_stages": 1, "pad_fill": "mean"}

_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "retinanet_r50_fpn_1x_coco": (
        "retinanet",
        {
            **_COMMON,
            "neck": {"name": "fpn", "extra": "p6p7", "extra_from": "c5", "extra_relu": False},
            "head": {"name": "retina", "cls_loss": _FOCAL, "reg_loss": "l1", "min_box_size": 0.0,
                     "assigner": {"name": "max_iou", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0.0}},
            "score_thr": 0.05, "nms_thr": 0.5, "pre_nms_topk": 1000, "max_dets": 100,
        },
    ),
    "atss_r50_fpn_1x_coco": (
        "atss",
        {
            **_COMMON,
            "neck": {"name": "fpn", "extra": "p6p7", "extra_from": "p5", "extra_relu": False},
            "head": {"name": "atss", "cls_loss": _FOCAL, "reg_loss": {"name": "giou", "loss_weight": 2.0},
                     "quality_loss": "bce", "assigner": {"name": "atss", "topk": 9},
                     "quality_scoring": "product_after_topk", "min_box_size": 0.0},
            "score_thr": 0.05, "nms_thr": 0.6, "pre_nms_topk": 1000, "max_dets": 100,
        },
    ),
    "fcos_r50-caffe_fpn_gn-head_1x_coco": (
        "fcos",
        {
            **_COMMON,
            # MSRA/Detectron caffe ResNet: stride on the 1x1 convs, BGR 0-255 input minus its mean, std 1
            # (the converter flips conv1's input channels so that the model takes RGB like every lossreg model)
            "backbone_args": {"style": "caffe", "mean": [122.7717 / 255, 115.9465 / 255, 102.9801 / 255],
                              "std": [1 / 255, 1 / 255, 1 / 255]},
            "neck": {"name": "fpn", "extra": "p6p7", "extra_from": "p5", "extra_relu": True},
            "head": {"name": "fcos", "norm_on_bbox": False, "centerness_on_reg": False, "center_offset": 0.5,
                     "cls_loss": _FOCAL, "reg_loss": "iou", "quality_loss": "bce",
                     "assigner": {"name": "fcos", "center_sampling": False},
                     "quality_scoring": "product_after_topk", "min_box_size": 0.0},
            "score_thr": 0.05, "nms_thr": 0.5, "pre_nms_topk": 1000, "max_dets": 100,
        },
    ),
    "vfnet_r50_fpn_1x_coco": (
        "vfnet",
        {
            **_COMMON,
            "neck": {"name": "fpn", "extra": "p6p7", "extra_from": "p5", "extra_relu": True},
            "head": {"name": "vfnet", "stacked_convs": 3, "center_offset": 0.0, "min_box_size": 0.0,
                     "cls_loss": {"name": "vfl", "alpha": 0.75, "gamma": 2.0},
                     "reg_loss": {"name": "giou", "loss_weight": 2.0}, "reg_init_weight": 0.75,
                     "assigner": {"name": "atss", "topk": 9}},
            "score_thr": 0.05, "nms_thr": 0.6, "pre_nms_topk": 1000, "max_dets": 100,
        },
    ),
    "faster-rcnn_r50_fpn_1x_coco": (
        "faster_rcnn",
        {
            **_COMMON,
            "neck": {"name": "fpn", "extra": "maxpool"},
            "assigner": {"name": "max_iou", "pos_iou_thr": 0.7, "neg_iou_thr": 0.3, "min_pos_iou": 0.3},
            "rpn_head": {"name": "rpn", "reg_loss": "l1", "pre_nms_topk_train": 2000, "post_nms_topk_train": 1000,
                         "post_nms_topk_test": 1000, "nms_thr": 0.7, "min_size": 1e-6, "score_thr": 0.0},
            "roi_head": {"name": "roi_box", "cls_loss": "ce", "reg_loss": "l1", "sampling_ratio": 0, "aligned": True,
                         "coder_stds": [0.1, 0.1, 0.2, 0.2], "min_size": 0.0,
                         "assigner": {"name": "max_iou", "pos_iou_thr": 0.5, "neg_iou_thr": 0.5, "min_pos_iou": 0.5,
                                      "match_low_quality": False}},
            "score_thr": 0.05, "nms_thr": 0.5, "max_dets": 100, "pre_nms_topk": 1000,
        },
    ),
}

#: mmdetection 2.x names of the same configs.
_ALIASES = {"faster_rcnn_r50_fpn_1x_coco": "faster-rcnn_r50_fpn_1x_coco",
            "fcos_r50_caffe_fpn_gn-head_1x_coco": "fcos_r50-caffe_fpn_gn-head_1x_coco"}

#: mmdetection config names with a lossreg configuration.
MMDET_ARCHS: tuple[str, ...] = tuple(_CONFIGS)


def mmdet_config(config_name: str) -> tuple[str, dict[str, Any]]:
    """``(lossreg architecture, keyword arguments)`` of an mmdetection baseline config (a fresh copy)."""
    name = _ALIASES.get(config_name, config_name)
    if name not in _CONFIGS:
        raise KeyError(f"no lossreg configuration for mmdetection {config_name!r}; known: {', '.join(_CONFIGS)}")
    arch, kwargs = _CONFIGS[name]
    return arch, copy.deepcopy(kwargs)


_BASE = "https://download.openmmlab.com/mmdetection/v2.0"
_MMDET_WEIGHTS = (
    # (lossreg model, tag, mmdetection config, url path, box AP, description)
    ("retinanet_resnet50_fpn", "mmdet_coco", "retinanet_r50_fpn_1x_coco",
     "retinanet/retinanet_r50_fpn_1x_coco/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth", 36.5,
     "RetinaNet R-50 FPN 1x, COCO 2017 (mmdetection baseline)."),
    ("atss_resnet50_fpn", "mmdet_coco", "atss_r50_fpn_1x_coco",
     "atss/atss_r50_fpn_1x_coco/atss_r50_fpn_1x_coco_20200209-985f7bd0.pth", 39.4,
     "ATSS R-50 FPN 1x, COCO 2017 (mmdetection baseline, the ATSS paper's)."),
    ("fcos_resnet50_fpn", "mmdet_coco", "fcos_r50-caffe_fpn_gn-head_1x_coco",
     "fcos/fcos_r50_caffe_fpn_gn-head_1x_coco/fcos_r50_caffe_fpn_gn-head_1x_coco-821213aa.pth", 36.6,
     "FCOS R-50 (caffe) FPN GN head 1x, COCO 2017 (mmdetection baseline)."),
    ("vfnet_resnet50_fpn", "mmdet_coco", "vfnet_r50_fpn_1x_coco",
     "vfnet/vfnet_r50_fpn_1x_coco/vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth", 41.6,
     "VarifocalNet R-50 FPN 1x, COCO 2017 (mmdetection baseline, the VFNet paper's)."),
    ("faster_rcnn_resnet50_fpn", "mmdet_coco", "faster-rcnn_r50_fpn_1x_coco",
     "faster_rcnn/faster_rcnn_r50_fpn_1x_coco/faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth", 37.4,
     "Faster R-CNN R-50 FPN 1x, COCO 2017 (mmdetection baseline)."),
)

for _model, _tag, _config, _path, _ap, _desc in _MMDET_WEIGHTS:
    register_pretrained(
        PretrainedCfg(
            model=_model,
            tag=_tag,
            num_classes=80,
            label_names=COCO_CLASSES,
            description=_desc,
            metrics={"AP": _ap / 100.0},
            license="apache-2.0",
            url=f"{_BASE}/{_path}",
            sha256=_path.rsplit("-", 1)[1].split(".")[0],  # mmdetection's file names carry the sha256 prefix
            source=f"mmdetection {_config}",
            converter="lossreg.convert.mmdet:from_mmdet",
            converter_args={"arch": _config},
            coco_ap=_ap,
        )
    )
