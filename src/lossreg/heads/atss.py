"""ATSS's head: GroupNorm towers, one anchor per location, per-level scale, quality branch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from .._registry import register_head
from ..ops.anchors import AnchorGenerator
from ..ops.box_coder import DeltaBoxCoder
from .dense import DenseHead, Spec, centerness_target


@register_head("atss")
class ATSSHead(DenseHead):
    """ATSS head: GN conv towers, 1 anchor per location, learnable per-level scale, centerness or IoU quality.

    Paper: Zhang et al., Bridging the Gap Between Anchor-based and Anchor-free Detection via
    Adaptive Training Sample Selection, CVPR 2020.

    The quality branch predicts the anchor's centerness (``quality="centerness"``,
    ATSS) or the IoU of its decoded box with its ground truth (``quality="iou"``, as
    HCRAL uses); at inference the class score is multiplied by the predicted quality.

    Defaults: ``cls_loss="focal"``, ``reg_loss={"name": "giou", "loss_weight": 2.0}``,
    ``quality_loss="bce"``, ``assigner="atss"``, ``balancer="static"``, anchors of side
    ``8 * stride``, delta coder ``stds=(0.1, 0.1, 0.2, 0.2)``, regression weighted by the
    quality target (mmdetection's ATSS), N(0, 0.01) convs, focal prior bias 0.01.

    Shapes: cls ``[B, C, H_l, W_l]``, reg ``[B, 4, H_l, W_l]``, quality ``[B, 1, H_l, W_l]`` per level.
    """

    paper = (
        "Zhang et al., Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive "
        "Training Sample Selection, CVPR 2020"
    )

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        cls_loss: Spec = "focal",
        reg_loss: Spec = {"name": "giou", "loss_weight": 2.0},  # noqa: B006 - read-only default
        quality_loss: Spec = "bce",
        assigner: Spec = "atss",
        balancer: Spec = "static",
        quality: Literal["centerness", "iou"] = "centerness",
        octave_base_scale: float = 8.0,
        coder_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        norm: Literal["gn", "none"] = "gn",
        prior_prob: float = 0.01,
        reg_weighting: str = "quality",
        **kwargs,
    ) -> None:
        gen = AnchorGenerator(strides, (1.0,), octave_base_scale, 1)
        super().__init__(
            num_classes, cls_loss, reg_loss, quality_loss, assigner, balancer, gen, reg_weighting=reg_weighting, **kwargs
        )
        if quality not in ("centerness", "iou"):
            raise ValueError(f"atss head: quality must be 'centerness' or 'iou', got {quality!r}")
        self.quality = quality
        self.coder = DeltaBoxCoder(stds=coder_stds)
        self.build_towers(in_channels, feat_channels, stacked_convs, norm, prior_prob, scaled=True)

    def quality_target(self, anchors: Tensor, pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        if self.quality == "iou":
            return super().quality_target(anchors, pred_boxes, gt_boxes)
        return centerness_target(anchors, gt_boxes)
