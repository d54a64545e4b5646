"""The ``faster_rcnn`` architecture and its ``faster_rcnn_<backbone>_fpn`` model names."""

from __future__ import annotations

from .._registry import register_detector
from ..heads.rpn import FASTER_RCNN_PAPER
from ._models import register_arch_models
from .two_stage import TwoStageDetector


@register_detector("faster_rcnn")
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (Ren et al., NeurIPS 2015): FPN P2-P6 + RPN (ALWA-balanced on request) + RoIAlign box head.

    Paper: Ren et al., Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks, NeurIPS 2015.

    Parameters as :class:`~lossreg.detectors.two_stage.TwoStageDetector`: backbone
    C2-C5 of any timm model, ``fpn`` with ``extra="maxpool"`` (P2-P6), the ``rpn`` head
    (``bce`` + ``l1``, ``max_iou`` 0.7/0.3, 256 sampled anchors, ``static`` balancer) and
    the ``roi_box`` head (7x7 RoIAlign on P2-P5, 2 x FC 1024, ``ce`` + ``l1``, 512 RoIs,
    25% positive). ``cls_loss`` / ``reg_loss`` set the RoI head's losses; ``assigner`` /
    ``balancer`` the RPN's, so ``balancer="alwa1"`` (or ``alwa2``) balances the RPN's
    classification and regression losses as the ALWA paper does (Yu et al., section 4.1),
    while the RoI head's losses keep weight 1. See ``lossreg info head rpn`` / ``roi_box``.

    Shapes: images ``[B, 3, H, W]`` float 0-1; targets ``[{"boxes": [G, 4] xyxy px,
    "labels": [G]}]``; eval output ``[{"boxes" [K, 4], "scores" [K], "labels" [K]}]``.
    """

    paper = FASTER_RCNN_PAPER
    arch = "faster_rcnn"


register_arch_models("faster_rcnn")
