"""The ``atss`` architecture and its ``atss_<backbone>_fpn`` model names."""

from __future__ import annotations

from .._registry import PretrainedCfg, register_detector, register_pretrained
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

# Published weights (timm's pretrained tags): `create_model("atss_resnet18_fpn.synthetic", pretrained=True)`
# downloads hf_hub_id through lossreg.hub; hub/README.md explains how they are produced and published.
register_pretrained(
    PretrainedCfg(
        model="atss_resnet18_fpn",
        tag="synthetic",
        hf_hub_id="lossreg/atss_resnet18_fpn.synthetic",
        num_classes=4,
        label_names=("ellipse", "rectangle", "triangle", "cross"),
        description="recipes/quickstart.yaml: ATSS ResNet-18 trained from scratch on the synthetic shapes set (128 px)",
        metrics={"AP": 0.310, "AP50": 0.528, "AP75": 0.323},  # synthetic val split, hub/cards/
        license="apache-2.0",
    ),
    default=True,
)
register_pretrained(
    PretrainedCfg(
        model="atss_resnet18_fpn",
        tag="bccd",
        hf_hub_id="lossreg/atss_resnet18_fpn.bccd",
        num_classes=3,
        label_names=("Platelets", "RBC", "WBC"),
        description="recipes/bccd_atss_r18_finetune.yaml: the quick-start model fine-tuned on BCCD blood cells",
        metrics={"AP": 0.432, "AP50": 0.733, "AP75": 0.462},  # BCCD val split, hub/cards/
        license="mit",
    )
)
