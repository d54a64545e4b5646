"""RetinaNet's head: two plain conv towers, 9 anchors per location, delta regression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .._registry import register_head
from ..ops.anchors import AnchorGenerator
from ..ops.box_coder import DeltaBoxCoder
from .dense import DenseHead, Spec


@register_head("retina")
class RetinaHead(DenseHead):
    """RetinaNet head: 4-conv towers, 9 anchors per location, sigmoid classification, delta regression.

    Paper: Lin et al., Focal Loss for Dense Object Detection, ICCV 2017.

    Defaults: ``cls_loss="focal"``, ``reg_loss="l1"`` (on deltas; any box-space loss
    such as ``giou`` works too), ``assigner="max_iou"``, ``balancer="static"``;
    anchors ``octave_base_scale=4, scales_per_octave=3, ratios=(0.5, 1, 2)``; delta
    coder ``stds=(1, 1, 1, 1)``; conv weights N(0, 0.01), focal prior bias 0.01.

    ``norm="gn"`` puts GroupNorm(32) after every tower conv (bias-free convs, as
    torchvision's ``retinanet_resnet50_fpn_v2``) [``"none"``: plain conv + ReLU, the
    paper's head]. ``anchor_style="torchvision"`` uses torchvision's integer anchors
    and cell spacing (see :class:`~lossreg.ops.anchors.AnchorGenerator`) [``"mmdet"``].

    Shapes: ``forward(list of [B, in_channels, H_l, W_l])`` -> cls ``[B, 9*C, H_l, W_l]``,
    reg ``[B, 9*4, H_l, W_l]``, no quality branch.
    """

    paper = "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        cls_loss: Spec = "focal",
        reg_loss: Spec = "l1",
        quality_loss: Spec = None,
        assigner: Spec = "max_iou",
        balancer: Spec = "static",
        octave_base_scale: float = 4.0,
        scales_per_octave: int = 3,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        coder_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        prior_prob: float = 0.01,
        norm: Literal["none", "gn"] = "none",
        anchor_style: Literal["mmdet", "torchvision"] = "mmdet",
        **kwargs,
    ) -> None:
        if norm not in ("none", "gn"):
            raise ValueError(f"retina: norm must be 'none' or 'gn', got {norm!r}")
        gen = AnchorGenerator(strides, ratios, octave_base_scale, scales_per_octave, style=anchor_style)
        super().__init__(num_classes, cls_loss, reg_loss, quality_loss, assigner, balancer, gen, **kwargs)
        self.coder = DeltaBoxCoder(stds=coder_stds)
        self.build_towers(in_channels, feat_channels, stacked_convs, norm, prior_prob, scaled=False)
