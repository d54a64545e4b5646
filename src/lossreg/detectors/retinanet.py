"""The ``retinanet`` architecture and its ``retinanet_<backbone>_fpn`` model names."""

from __future__ import annotations

from .._registry import register_detector
from ._models import register_arch_models
from .one_stage import OneStageDetector


@register_detector("retinanet")
class RetinaNet(OneStageDetector):
    """RetinaNet (Lin et al., ICCV 2017): FPN + retina head, focal loss, max-IoU anchors.

    Paper: Lin et al., Focal Loss for Dense Object Detection, ICCV 2017.

    Parameters as :class:`OneStageDetector`; the head defaults to ``retina`` with its own
    default losses, assigner and balancer (see ``lossreg info head retina``).
    """

    paper = "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017"
    arch = "retinanet"
    default_head = "retina"


register_arch_models("retinanet")
