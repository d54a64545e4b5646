"""The ``atss`` architecture and its ``atss_<backbone>_fpn`` model names."""

from __future__ import annotations

from .._registry import register_detector
from ._models import register_arch_models
from .one_stage import OneStageDetector


@register_detector("atss")
class ATSS(OneStageDetector):
    """ATSS (Zhang et al., CVPR 2020): FPN + atss head with quality branch, ATSS assignment.

    Paper: Zhang et al., Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive Training Sample Selection, CVPR 2020.

    Parameters as :class:`OneStageDetector`; the head defaults to ``atss`` with its own
    default losses, assigner and balancer (see ``lossreg info head atss``).
    """

    paper = "Zhang et al., Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive Training Sample Selection, CVPR 2020"
    arch = "atss"
    default_head = "atss"


register_arch_models("atss")
