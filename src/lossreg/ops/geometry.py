"""Box geometry, the one module of it: IoU matrices, paired IoU, point-in-box tests and the
geometry of *aligned* box pairs (row ``i`` of ``pred`` against row ``i`` of ``target``).

The assigners use :func:`iou_matrix`, :func:`paired_box_iou` and :func:`center_inside`.

Every IoU-family loss and ``hcra_r`` read their terms from one
:class:`BoxPairGeometry`, so the geometry (and where ``eps`` goes) is written
once. Terms are computed lazily and cached: a GIoU loss never pays for the
centre distance, a CIoU loss pays for the shared intersection only once.

Boxes are ``(x1, y1, x2, y2)``. All functions are dtype-agnostic (fp32 in the
losses, fp64 for ``gradcheck``) and differentiable. ``eps`` sits where
``torchvision.ops`` puts it, so the losses match torchvision to rounding.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch
from torch import Tensor

__all__ = [
    "EPS",
    "BoxPairGeometry",
    "aligned_box_iou",
    "anchor_centers",
    "center_inside",
    "iou_matrix",
    "paired_box_iou",
    "safe_pow",
]

EPS = 1e-7
_FOUR_OVER_PI2 = 4.0 / math.pi**2


#: Rows of a pair with a coordinate above this are rescaled by :class:`BoxPairGeometry` (their areas
#: and squared distances would overflow float32 near 1e19); no image is within orders of magnitude of it.
LARGE_COORD = 1e12


def _rescale_large(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Shift and scale the (finite) rows of ``pred``/``target`` whose coordinates exceed :data:`LARGE_COORD`.

    No host sync: every row goes through ``(x - offset) / scale``, which is exactly ``x`` (and
    passes the gradient unchanged) for the other rows, whose offset is 0 and scale 1.
    """
    with torch.no_grad():
        big = (torch.maximum(pred.abs().amax(dim=-1), target.abs().amax(dim=-1)) > LARGE_COORD) & (
            torch.isfinite(pred).all(dim=-1) & torch.isfinite(target).all(dim=-1)
        )
        corner = target[..., :2].detach()
        offset = torch.where(big[..., None], torch.cat([corner, corner], dim=-1), torch.zeros_like(target))
        scale = torch.maximum((pred.detach() - offset).abs().amax(dim=-1), (target.detach() - offset).abs().amax(dim=-1))
        scale = torch.where(big, scale.clamp(min=1.0), torch.ones_like(scale))[..., None]
    return (pred - offset) / scale, (target - offset) / scale


class BoxPairGeometry:
    """Lazily computed geometry of aligned pairs ``pred [N, 4]`` / ``target [N, 4]`` (xyxy).

    Every attribute is a tensor of shape ``[N]`` (``[N, 2]`` for ``*_wh``).
    Attributes are cached on first access with the autograd state of that
    moment, so read them outside ``torch.no_grad()`` and ``.detach()`` instead.
    Non-overlapping pairs have zero intersection (and zero gradient through it),
    zero-area pairs give ``iou = 0`` rather than NaN.

    Every term is a ratio that does not change when a pair is shifted or scaled, so a pair
    with a coordinate beyond :data:`LARGE_COORD` (where areas overflow float32: 1e30-scale
    boxes) is first shifted to its target's corner and divided by its largest coordinate;
    ``pred`` / ``target`` hold those rescaled rows (other rows are untouched). The ratios,
    and the losses built on them, then stay finite and exact.
    """

    def __init__(self, pred: Tensor, target: Tensor, eps: float = EPS) -> None:
        if pred.shape[-1] != 4 or target.shape != pred.shape:
            raise ValueError(f"expected two [N, 4] box tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
        if pred.numel() and pred.is_floating_point():
            pred, target = _rescale_large(pred, target)
        self.pred = pred
        self.target = target
        self.eps = eps

    # -- sizes
    @cached_property
    def pred_wh(self) -> Tensor:
        """Widths and heights of ``pred``, ``[N, 2]``."""
        return self.pred[..., 2:] - self.pred[..., :2]

    @cached_property
    def target_wh(self) -> Tensor:
        """Widths and heights of ``target``, ``[N, 2]``."""
        return self.target[..., 2:] - self.target[..., :2]

    # -- overlap
    @cached_property
    def inter(self) -> Tensor:
        """Intersection area ``[N]`` (0 for disjoint pairs)."""
        lt = torch.maximum(self.pred[..., :2], self.target[..., :2])
        rb = torch.minimum(self.pred[..., 2:], self.target[..., 2:])
        wh = (rb - lt).clamp(min=0)
        return wh[..., 0] * wh[..., 1]

    @cached_property
    def union(self) -> Tensor:
        """Union area ``[N]``."""
        pw, tw = self.pred_wh, self.target_wh
        return pw[..., 0] * pw[..., 1] + tw[..., 0] * tw[..., 1] - self.inter

    @cached_property
    def iou(self) -> Tensor:
        """Plain IoU ``inter / (union + eps)`` in ``[0, 1]``, ``[N]``."""
        return self.inter / (self.union + self.eps)

    # -- smallest enclosing box
    @cached_property
    def enclose_wh(self) -> Tensor:
        """Width ``C_w`` and height ``C_h`` of the smallest enclosing box, ``[N, 2]``."""
        lt = torch.minimum(self.pred[..., :2], self.target[..., :2])
        rb = torch.maximum(self.pred[..., 2:], self.target[..., 2:])
        return rb - lt

    @cached_property
    def enclose_area(self) -> Tensor:
        """Area ``|E|`` of the smallest enclosing box, ``[N]``."""
        wh = self.enclose_wh
        return wh[..., 0] * wh[..., 1]

    @cached_property
    def diag2(self) -> Tensor:
        """Squared diagonal ``c^2`` of the enclosing box, ``[N]``."""
        wh = self.enclose_wh
        return wh[..., 0] ** 2 + wh[..., 1] ** 2

    @cached_property
    def rho2(self) -> Tensor:
        """Squared distance ``rho^2`` between the box centres, ``[N]``."""
        # (p1 + p2) - (t1 + t2) is twice the centre offset; /4 undoes the square of 2.
        d = (self.pred[..., :2] + self.pred[..., 2:]) - (self.target[..., :2] + self.target[..., 2:])
        return (d[..., 0] ** 2 + d[..., 1] ** 2) * 0.25

    # -- normalised penalty terms, each in [0, 1] for valid boxes
    @cached_property
    def giou_penalty(self) -> Tensor:
        """``|E - U| / |E|`` (GIoU's extra term), ``[N]``."""
        area = self.enclose_area
        return (area - self.union) / (area + self.eps)

    @cached_property
    def diou_penalty(self) -> Tensor:
        """``rho^2 / c^2`` (DIoU's extra term), ``[N]``."""
        return self.rho2 / (self.diag2 + self.eps)

    @cached_property
    def aspect_v(self) -> Tensor:
        """CIoU's aspect-ratio term ``v = 4/pi^2 (atan(w_t/h_t) - atan(w_p/h_p))^2`` in ``[0, 1]``, ``[N]``."""
        # eps in the ratio keeps zero-height boxes finite (atan(w/0) has a NaN gradient);
        # for real boxes it changes the ratio by ~eps/h, far below fp32 resolution.
        pw, tw = self.pred_wh, self.target_wh
        ap = torch.atan(pw[..., 0] / (pw[..., 1] + self.eps))
        at = torch.atan(tw[..., 0] / (tw[..., 1] + self.eps))
        return _FOUR_OVER_PI2 * (at - ap) ** 2

    @cached_property
    def ciou_alpha(self) -> Tensor:
        """CIoU's trade-off ``a = v / (1 - IoU + v + eps)``, detached (torchvision's form), ``[N]``."""
        # Detach instead of no_grad(): a no_grad() block would cache aspect_v/iou without their graph.
        v = self.aspect_v.detach()
        return v / (1 - self.iou.detach() + v + self.eps)

    @cached_property
    def wh_penalty(self) -> Tensor:
        """EIoU's side terms ``(w_p - w_t)^2 / C_w^2 + (h_p - h_t)^2 / C_h^2``, ``[N]``."""
        d2 = (self.pred_wh - self.target_wh) ** 2 / (self.enclose_wh**2 + self.eps)
        return d2[..., 0] + d2[..., 1]


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = EPS) -> Tensor:
    """IoU of aligned pairs: ``boxes1 [N, 4]``, ``boxes2 [N, 4]`` (xyxy) -> ``[N]``.

    The diagonal of ``torchvision.ops.box_iou`` without the ``N x N`` matrix;
    heads use it for ``quality`` (IoU of each decoded prediction with its target).
    """
    return BoxPairGeometry(boxes1, boxes2, eps).iou


def safe_pow(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` for ``x >= 0`` with a finite gradient at 0 for any ``exponent > 0``.

    ``x ** 0.5`` has an infinite derivative at 0; here 0 maps to 0 with zero gradient.
    """
    if exponent >= 1:
        return x.clamp(min=0) ** exponent
    pos = x > 0
    # The clamp keeps the unused branch of `where` finite, so its gradient is 0, not NaN.
    return torch.where(pos, x.clamp(min=torch.finfo(x.dtype).tiny) ** exponent, torch.zeros_like(x))


def anchor_centers(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Centers ``(cx [..], cy [..])`` of xyxy boxes ``[.., 4]``."""
    return (boxes[..., 0] + boxes[..., 2]) * 0.5, (boxes[..., 1] + boxes[..., 3]) * 0.5


def paired_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of corresponding xyxy boxes ``a [..., 4]`` and ``b [..., 4]`` -> ``[...]``.

    The operations are those of ``torchvision.ops.box_iou`` in the same order, so
    a value computed here is bit-identical to the matching entry of the matrix.
    """
    area1 = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area2 = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1 + area2 - inter)


def iou_matrix(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU matrix ``[..., N, M]`` of xyxy boxes ``[..., N, 4]`` and ``[..., M, 4]`` (leading dims broadcast).

    For 2-D inputs bit-identical to ``torchvision.ops.box_iou``: that broadcasts ``[N, M, 2]``
    corner tensors, whose inner dimension of 2 defeats vectorisation on CPU; computing x and
    y separately on contiguous ``[N, M]`` planes (in place where possible) does the same
    floating-point operations in the same order about three times faster.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    x2, y2 = boxes2[..., None, :, 2], boxes2[..., None, :, 3]
    x1, y1 = boxes2[..., None, :, 0], boxes2[..., None, :, 1]
    w = torch.minimum(boxes1[..., 2:3], x2).sub_(torch.maximum(boxes1[..., 0:1], x1)).clamp_(min=0)
    h = torch.minimum(boxes1[..., 3:4], y2).sub_(torch.maximum(boxes1[..., 1:2], y1)).clamp_(min=0)
    inter = w.mul_(h)
    union = (area1[..., :, None] + area2[..., None, :]).sub_(inter)
    return inter.div_(union)


def center_inside(cx: Tensor, cy: Tensor, boxes: Tensor, margin: float) -> Tensor:
    """bool ``[R, A]``: point ``(cx[a], cy[a])`` lies inside ``boxes[r]`` by more than ``margin`` on every side."""
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    inside = (cx - x1) > margin
    inside &= (cy - y1) > margin
    inside &= (x2 - cx) > margin
    inside &= (y2 - cy) > margin
    return inside
