"""FCOS's head: per-point ltrb distances and centerness (anchor-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .._registry import register_head
from ..ops.anchors import AnchorGenerator
from .dense import DenseHead, Spec, centerness_target


@register_head("fcos")
class FCOSHead(DenseHead):
    """FCOS head: GN conv towers, one point per location regressing ltrb distances, centerness branch.

    Paper: Tian et al., FCOS: Fully Convolutional One-Stage Object Detection, ICCV 2019.

    Points sit at the centres of the feature cells; assigners receive each point's
    square anchor of side ``octave_base_scale * stride`` (8 * stride, as ATSS does), so
    ``assigner="atss"`` gives FCOS+ATSS. Distances are ``relu(scale_l * x) * stride``
    (``norm_on_bbox``); delta-space losses see the distances divided by the stride.

    Defaults: ``cls_loss="focal"``, ``reg_loss="giou"``, ``quality_loss="bce"``,
    ``assigner="fcos"``, ``balancer="static"``, regression weighted by the centerness
    target, ``centerness_on_reg=True``, N(0, 0.01) convs, focal prior bias 0.01.

    ``anchor_style="torchvision"`` places the points at torchvision's anchor centres
    (cell spacing ``input size // feature size``, see
    :class:`~lossreg.ops.anchors.AnchorGenerator`; with ``center_offset=0``);
    ``conv_bias`` gives the tower convs biases even with GroupNorm (torchvision's
    FCOS head) [None: biases only without a norm]. ``norm_on_bbox=False`` predicts the
    distances as ``exp(scale_l * x)`` pixels instead of ``relu(scale_l * x) * stride``
    (mmdetection's FCOS R-50 caffe baseline) [True]; ``centerness_on_reg=False`` puts the
    centerness branch on the classification tower (the same baseline) [True].

    ``center_offset`` puts the points at ``(x + center_offset) * stride`` [0.5: the cell
    centres, mmdetection; 0: the cell corners, torchvision] and ``scale_per_level=False``
    drops the learnable per-level scales (torchvision has none); with these two and
    ``reg_weighting="none"`` the training losses equal torchvision's FCOS
    (``tests/detectors/test_loss_parity.py``).

    Shapes: cls ``[B, C, H_l, W_l]``, reg ``[B, 4, H_l, W_l]``, quality ``[B, 1, H_l, W_l]`` per level.
    """

    paper = "Tian et al., FCOS: Fully Convolutional One-Stage Object Detection, ICCV 2019"
    box_format = "ltrb"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        cls_loss: Spec = "focal",
        reg_loss: Spec = "giou",
        quality_loss: Spec = "bce",
        assigner: Spec = "fcos",
        balancer: Spec = "static",
        octave_base_scale: float = 8.0,
        anchor_style: Literal["mmdet", "torchvision"] = "mmdet",
        conv_bias: bool | None = None,
        norm_on_bbox: bool = True,
        centerness_on_reg: bool = True,
        norm: Literal["gn", "none"] = "gn",
        prior_prob: float = 0.01,
        reg_weighting: str = "quality",
        center_offset: float = 0.5,
        scale_per_level: bool = True,
        **kwargs,
    ) -> None:
        gen = AnchorGenerator(strides, (1.0,), octave_base_scale, 1, center_offset=center_offset, style=anchor_style)
        super().__init__(
            num_classes, cls_loss, reg_loss, quality_loss, assigner, balancer, gen, reg_weighting=reg_weighting, **kwargs
        )
        self.norm_on_bbox = bool(norm_on_bbox)
        self.quality_on_cls = not centerness_on_reg
        self.build_towers(in_channels, feat_channels, stacked_convs, norm, prior_prob, scaled=scale_per_level,
                          conv_bias=conv_bias)

    def reg_activation(self, reg: Tensor) -> Tensor:
        return F.relu(reg)  # distances in strides

    def level_reg_activation(self, reg: Tensor, level: int) -> Tensor:
        if self.norm_on_bbox:
            return F.relu(reg)
        # exp(scale * x) px (mmdetection's norm_on_bbox=False), kept in strides as every FCOS output
        return reg.exp() / float(self.anchor_generator.strides[level])

    def decode(self, anchors: Tensor, reg: Tensor, strides: Tensor) -> Tensor:
        ctr = (anchors[:, :2] + anchors[:, 2:]) * 0.5
        dist = reg * strides[:, None]
        return torch.cat([ctr - dist[..., :2], ctr + dist[..., 2:]], dim=-1)

    def encode(self, anchors: Tensor, boxes: Tensor, strides: Tensor) -> Tensor:
        ctr = (anchors[:, :2] + anchors[:, 2:]) * 0.5
        return torch.cat([ctr - boxes[:, :2], boxes[:, 2:] - ctr], dim=-1) / strides[:, None]

    def quality_target(self, anchors: Tensor, pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        return centerness_target(anchors, gt_boxes)
