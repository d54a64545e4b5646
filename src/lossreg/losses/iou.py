"""IoU-family regression losses on xyxy pixel boxes (``space = "box"``).

All read their terms from :class:`lossreg.ops.geometry.BoxPairGeometry` (``eps`` 1e-7,
placed as in ``torchvision.ops``); ``iou``/``giou``/``diou``/``ciou`` match
``torchvision.ops.{generalized,distance,complete}_box_iou_loss``.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from .._registry import register_loss
from ..ops.geometry import BoxPairGeometry, safe_pow
from ._base import RegLoss

__all__ = [
    "IoULoss",
    "GIoULoss",
    "DIoULoss",
    "CIoULoss",
    "EIoULoss",
    "FocalEIoULoss",
    "AlphaIoULoss",
    "iou_rows",
    "giou_rows",
    "diou_rows",
    "ciou_rows",
    "eiou_rows",
]


# Row losses from a geometry: shared by the classes below and by hcra_r (which weights giou).
def iou_rows(g: BoxPairGeometry) -> Tensor:
    """``1 - IoU``, ``[N]``."""
    return 1 - g.iou


def giou_rows(g: BoxPairGeometry) -> Tensor:
    """``1 - IoU + |E - U| / |E|``, ``[N]``."""
    return 1 - g.iou + g.giou_penalty


def diou_rows(g: BoxPairGeometry) -> Tensor:
    """``1 - IoU + rho^2 / c^2``, ``[N]``."""
    return 1 - g.iou + g.diou_penalty


def ciou_rows(g: BoxPairGeometry) -> Tensor:
    """``1 - IoU + rho^2 / c^2 + a v`` with ``a`` detached, ``[N]``."""
    return 1 - g.iou + g.diou_penalty + g.ciou_alpha * g.aspect_v


def eiou_rows(g: BoxPairGeometry) -> Tensor:
    """``1 - IoU + rho^2 / c^2 + (w_p - w_t)^2 / C_w^2 + (h_p - h_t)^2 / C_h^2``, ``[N]``."""
    return 1 - g.iou + g.diou_penalty + g.wh_penalty


class _IoUFamilyLoss(RegLoss):
    space = "box"

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        raise NotImplementedError

    def rowwise(self, pred: Tensor, target: Tensor, scores: Tensor | None) -> Tensor:
        return self.from_geometry(BoxPairGeometry(pred, target))


_SHAPES = """
    Shapes: ``pred``, ``target``: xyxy boxes in pixels ``[N, 4]``; ``weight`` ``[N]``;
    ``"none"`` returns ``[N]``. ``reduction`` ["mean"] and ``loss_weight`` [1.0] as every loss.
"""


@register_loss("iou")
class IoULoss(_IoUFamilyLoss):
    """IoU loss ``1 - IoU``, in [0, 1].

    Paper: J. Yu et al., "UnitBox: An Advanced Object Detection Network", ACM MM 2016
    (linear form ``1 - IoU`` as in mmdetection's ``IoULoss(mode="linear")``).

    ``IoU = inter / (union + eps)``, ``eps`` = 1e-7. No hyperparameters.
    """

    __doc__ += _SHAPES
    paper = "Yu et al., UnitBox: An Advanced Object Detection Network, ACM MM 2016"

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        return iou_rows(g)


@register_loss("giou")
class GIoULoss(_IoUFamilyLoss):
    """Generalized IoU loss ``1 - IoU + |E - U| / |E|``, in [0, 2].

    Paper: H. Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.

    ``E`` the smallest enclosing box, ``U`` the union; equals
    ``torchvision.ops.generalized_box_iou_loss`` (``eps`` = 1e-7). No hyperparameters.
    """

    __doc__ += _SHAPES
    paper = "Rezatofighi et al., Generalized Intersection over Union, CVPR 2019"

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        return giou_rows(g)


@register_loss("diou")
class DIoULoss(_IoUFamilyLoss):
    """Distance IoU loss ``1 - IoU + rho^2 / c^2``, in [0, 2).

    Paper: Z. Zheng et al., "Distance-IoU Loss: Faster and Better Learning for
    Bounding Box Regression", AAAI 2020.

    ``rho`` the distance of the box centres, ``c`` the diagonal of the enclosing
    box (``c^2 + eps`` in the denominator, ``eps`` = 1e-7); equals
    ``torchvision.ops.distance_box_iou_loss``. No hyperparameters.
    """

    __doc__ += _SHAPES
    paper = "Zheng et al., Distance-IoU Loss, AAAI 2020"

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        return diou_rows(g)


@register_loss("ciou")
class CIoULoss(_IoUFamilyLoss):
    """Complete IoU loss ``1 - IoU + rho^2 / c^2 + a v``, in [0, 3).

    Paper: Z. Zheng et al., "Distance-IoU Loss: Faster and Better Learning for
    Bounding Box Regression", AAAI 2020 (CIoU section).

    ``v = 4 / pi^2 (atan(w_t / h_t) - atan(w_p / h_p))^2``, ``a = v / (1 - IoU + v + eps)``
    detached. Follows ``torchvision.ops.complete_box_iou_loss`` (it matches to
    rounding), not mmdetection, which zeroes ``a`` where ``IoU <= 0.5`` and gives
    NaN for identical fp32 boxes. The ratios use ``h + eps`` so zero-height boxes
    stay finite. No hyperparameters.
    """

    __doc__ += _SHAPES
    paper = "Zheng et al., Distance-IoU Loss (Complete IoU), AAAI 2020"

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        return ciou_rows(g)


@register_loss("eiou")
class EIoULoss(_IoUFamilyLoss):
    """Efficient IoU loss: DIoU plus normalised width and height differences, in [0, 4).

    Paper: Y.-F. Zhang et al., "Focal and Efficient IOU Loss for Accurate Bounding
    Box Regression", Neurocomputing 2022.

    ``1 - IoU + rho^2 / c^2 + (w_p - w_t)^2 / C_w^2 + (h_p - h_t)^2 / C_h^2``, with
    ``C_w, C_h`` the enclosing box's width and height (``+ eps`` in every
    denominator, ``eps`` = 1e-7). No hyperparameters.
    """

    __doc__ += _SHAPES
    paper = "Zhang et al., Focal and Efficient IOU Loss for Accurate Bounding Box Regression, Neurocomputing 2022"

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        return eiou_rows(g)


@register_loss("focal_eiou")
class FocalEIoULoss(_IoUFamilyLoss):
    """Focal-EIoU loss ``IoU^gamma * eiou``, focusing on high-IoU boxes.

    Paper: Y.-F. Zhang et al., "Focal and Efficient IOU Loss for Accurate Bounding
    Box Regression", Neurocomputing 2022.

    ``IoU^gamma`` is detached (a weight, no gradient); disjoint pairs (``IoU = 0``)
    therefore contribute 0, as in the paper.

    Args:
        gamma: focusing exponent [0.5].
    """

    __doc__ += _SHAPES
    paper = "Zhang et al., Focal and Efficient IOU Loss for Accurate Bounding Box Regression, Neurocomputing 2022"

    def __init__(self, gamma: float = 0.5, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if not gamma >= 0:
            raise ValueError(f"focal_eiou: gamma must be >= 0, got {gamma!r}")
        self.gamma = float(gamma)

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        focus = g.iou.detach().clamp(min=0) ** self.gamma
        return focus * eiou_rows(g)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, {super().extra_repr()}"


@register_loss("alpha_iou")
class AlphaIoULoss(_IoUFamilyLoss):
    """Alpha-IoU: power IoU losses, alpha-GIoU ``1 - IoU^alpha + (|E - U| / |E|)^alpha`` by default.

    Paper: J. He et al., "Alpha-IoU: A Family of Power Intersection over Union
    Losses for Bounding Box Regression", NeurIPS 2021.

    ``variant`` selects the power form of each base loss (as in He 2021):
      - ``"iou"``:  ``1 - IoU^alpha``
      - ``"giou"``: ``1 - IoU^alpha + (|E - U| / |E|)^alpha``
      - ``"diou"``: ``1 - IoU^alpha + (rho^2 / c^2)^alpha``
      - ``"ciou"``: ``1 - IoU^alpha + (rho^2 / c^2)^alpha + (a v)^alpha``, ``a`` detached as in ``ciou``
    Powers of 0 are 0 with a zero gradient, so ``alpha < 1`` stays finite.

    Args:
        alpha: power [3.0].
        variant: ``"iou"`` | ``"giou"`` | ``"diou"`` | ``"ciou"`` ["giou"].
    """

    __doc__ += _SHAPES
    paper = "He et al., Alpha-IoU: A Family of Power Intersection over Union Losses, NeurIPS 2021"
    VARIANTS = ("iou", "giou", "diou", "ciou")

    def __init__(
        self,
        alpha: float = 3.0,
        variant: Literal["iou", "giou", "diou", "ciou"] = "giou",
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if not alpha > 0:
            raise ValueError(f"alpha_iou: alpha must be > 0, got {alpha!r}")
        if variant not in self.VARIANTS:
            raise ValueError(f"alpha_iou: variant must be one of {self.VARIANTS}, got {variant!r}")
        self.alpha = float(alpha)
        self.variant = variant

    def from_geometry(self, g: BoxPairGeometry) -> Tensor:
        a = self.alpha
        loss = 1 - safe_pow(g.iou, a)
        if self.variant == "giou":
            loss = loss + safe_pow(g.giou_penalty, a)
        elif self.variant in ("diou", "ciou"):
            loss = loss + safe_pow(g.diou_penalty, a)
            if self.variant == "ciou":
                loss = loss + safe_pow(g.ciou_alpha * g.aspect_v, a)
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, variant={self.variant!r}, {super().extra_repr()}"
