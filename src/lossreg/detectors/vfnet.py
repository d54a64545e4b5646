"""The ``vfnet`` architecture and its ``vfnet_<backbone>_fpn`` model names."""

from __future__ import annotations

from .._registry import register_detector
from ._models import register_arch_models
from .one_stage import OneStageDetector


@register_detector("vfnet")
class VFNet(OneStageDetector):
    """VFNet: anchor-free points, IoU-aware classification (vfl), star-shaped deformable conv, box refinement.

    Papers: Zhang et al., VarifocalNet: An IoU-aware Dense Object Detector, CVPR 2021;
    HCRAL (Hybrid Classification-Regression Adaptive Loss for Dense Object Detection) uses its
    star convolution and box refinement as auxiliary modules of FCOS+ATSS
    (``assigner="eatss", cls_loss="hcra_c", reg_loss="hcra_r"``).

    Parameters as :class:`OneStageDetector`; the head defaults to ``vfnet`` (``cls_loss="vfl"``,
    ``reg_loss`` GIoU weight 2.0 on the refined box and 1.5 on the initial box, no quality branch,
    ``assigner="atss"``, ``balancer="static"``); switch the auxiliary modules off with
    ``head={"star_dcn": False, "refine": False}``. Training returns
    ``{"loss_cls", "loss_reg", "loss_reg_init"}``, whose sum is the total trained.
    """

    paper = "Zhang et al., VarifocalNet: An IoU-aware Dense Object Detector, CVPR 2021"
    arch = "vfnet"
    default_head = "vfnet"


register_arch_models("vfnet")
