"""The ``fcos`` architecture and its ``fcos_<backbone>_fpn`` model names."""

from __future__ import annotations

from .._registry import register_detector
from ._models import register_arch_models
from .one_stage import OneStageDetector


@register_detector("fcos")
class FCOS(OneStageDetector):
    """FCOS (Tian et al., ICCV 2019): anchor-free points and centerness; assigner fcos or atss (FCOS+ATSS).

    Paper: Tian et al., FCOS: Fully Convolutional One-Stage Object Detection, ICCV 2019.

    Parameters as :class:`OneStageDetector`; the head defaults to ``fcos`` with its own
    default losses, assigner and balancer (see ``lossreg info head fcos``).
    """

    paper = "Tian et al., FCOS: Fully Convolutional One-Stage Object Detection, ICCV 2019"
    arch = "fcos"
    default_head = "fcos"


register_arch_models("fcos")
