"""VarifocalNet's head: IoU-aware classification, star-shaped deformable convolution, box refinement.

These are the "auxiliary modules" HCRAL adds to its FCOS+ATSS detector. The head
is anchor-free (one point per location regressing ltrb distances, as FCOS), so the
assigner sees each point's square anchor of side ``8 * stride`` (``atss`` by
default, ``eatss`` for HCRAL's setting).

Per level::

    cls tower -> star conv (3x3, deformable) -> ReLU -> cls_out            -> cls logits
    reg tower -> conv+GN+ReLU -> reg_init_out -> exp * 8 * stride          -> initial ltrb
    reg tower -> star conv (offsets from the initial box) -> ReLU
              -> reg_refine_out -> exp -> * initial ltrb (detached)        -> refined ltrb

The refined box is the head's box (``out["boxes"]``): its IoU with the assigned
ground truth is the ``quality`` target (VFL's IoU-aware classification target), it is
what assigners using predictions see, and what inference returns. The initial box gets
its own regression loss, the extra task ``"reg_init"``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from .._registry import Slot, build_component, register_head
from ..ops.anchors import AnchorGenerator
from ..ops.geometry import aligned_box_iou
from .dense import DenseHead, Scale, Spec, _flatten, conv_tower, init_head_convs
from .normalizer import avg_factor

__all__ = ["StarConv", "VFNetHead", "star_dcn_offset"]

# Exponents of the distance outputs are clamped here (e^9.2 ~ 1e4): far beyond any
# real box, it only keeps a diverging run from producing inf boxes.
_MAX_LOG = math.log(1e4)

# (dy, dx) of the 3x3 kernel's regular grid, row-major: (-1,-1), (-1,0), ..., (1,1).
_BASE_OFFSET = (-1, -1, -1, 0, -1, 1, 0, -1, 0, 0, 0, 1, 1, -1, 1, 0, 1, 1)


def star_dcn_offset(ltrb: Tensor, stride: float, gradient_mul: float = 0.1) -> Tensor:
    """Offsets ``[B, 18, H, W]`` of a 3x3 deformable conv that samples the star points of each box.

    VarifocalNet's ``star_dcn_offset``: ``ltrb [B, 4, H, W]`` are the (left, top, right,
    bottom) distances in input pixels of each location's box; divided by ``stride`` they
    are in feature cells. The nine kernel points (row-major over the 3x3 kernel) move to
    the box's top-left corner ``(-t, -l)``, top midpoint ``(-t, 0)``, top-right corner
    ``(-t, r)``, left midpoint ``(0, -l)``, center ``(0, 0)``, right midpoint ``(0, r)``,
    bottom-left ``(b, -l)``, bottom midpoint ``(b, 0)`` and bottom-right ``(b, r)``, as
    ``(dy, dx)`` relative to the location. The offsets are these targets minus the
    kernel's regular grid, interleaved ``(dy_0, dx_0, dy_1, dx_1, ...)`` as
    ``torchvision.ops.deform_conv2d`` expects. The gradient reaching ``ltrb`` through the
    offsets is multiplied by ``gradient_mul`` (the values are not).
    """
    if ltrb.dim() != 4 or ltrb.shape[1] != 4:
        raise ValueError(f"star_dcn_offset: ltrb must be [B, 4, H, W], got {tuple(ltrb.shape)}")
    d = (1.0 - gradient_mul) * ltrb.detach() + gradient_mul * ltrb
    left, top, right, bottom = (d / float(stride)).unbind(1)
    zero = torch.zeros_like(left)
    dy = torch.stack([-top, -top, -top, zero, zero, zero, bottom, bottom, bottom], dim=1)
    dx = torch.stack([-left, zero, right, -left, zero, right, -left, zero, right], dim=1)
    target = torch.stack([dy, dx], dim=2).flatten(1, 2)  # [B, 9, 2, H, W] -> [B, 18, H, W]
    base = torch.tensor(_BASE_OFFSET, dtype=target.dtype, device=target.device).view(1, 18, 1, 1)
    return target - base


class StarConv(nn.Module):
    """A 3x3 conv (no bias) that is deformable (star offsets, ``deform_conv2d``) or a plain conv.

    ``deformable=False`` is the ablation without the star-shaped DCN: same weights, fixed grid.
    """

    def __init__(self, channels: int, deformable: bool = True) -> None:
        super().__init__()
        self.deformable = deformable
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: Tensor, offset: Tensor | None) -> Tensor:
        if not self.deformable:
            return F.conv2d(x, self.weight, padding=1)
        if offset is None:
            raise ValueError("StarConv: a deformable star conv needs offsets")
        return deform_conv2d(x, offset.to(x.dtype), self.weight, padding=(1, 1))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}, kernel_size=3, deformable={self.deformable}"


@register_head("vfnet")
class VFNetHead(DenseHead):
    """VFNet head: IoU-aware classification, star-shaped deformable conv, initial + refined ltrb boxes.

    Papers: Zhang, Wang, Dayoub, Sunderhauf, VarifocalNet: An IoU-aware Dense Object
    Detector, CVPR 2021 (the head, ``star_dcn_offset``, box refinement); HCRAL (Hybrid
    Classification-Regression Adaptive Loss for Dense Object Detection), which adds the star
    convolution and box refinement to FCOS+ATSS as "auxiliary modules".

    Anchor-free: one point per location (cell centre), its square anchor of side
    ``8 * stride`` given to the assigner. The initial box is ``exp(scale_l * x) * 8 * stride``
    (``bbox_norm="reg_denom"``, VFNet's default; ``"stride"`` uses ``stride``); the star conv
    samples the feature map at the initial box's center, edge midpoints and corners; the
    refined box is the initial ltrb (detached) times ``exp(scale_refine_l * y)``. The refined
    box is the head's prediction: its IoU with the assigned gt is ``quality`` (the ``vfl``
    target), negatives get their largest IoU with any gt, and inference ranks by the class
    score alone unless a quality branch is asked for (``quality_loss`` given: a 3x3 conv on
    the refined regression feature predicting the refined box's IoU, as HCRAL keeps its
    centerness branch with IoU targets).

    Losses: ``cls`` (``cls_loss``), ``reg`` (``reg_loss`` on the refined box) and, with
    ``refine=True``, ``reg_init``: a separate instance of the regression loss (a deep copy
    of ``reg_loss``, or ``reg_init_loss`` when given) on the initial box, multiplied by
    ``reg_init_weight`` (0.75 of the default GIoU weight 2.0 gives VFNet's 1.5). With
    ``reg_weighting="quality"`` each positive's box loss is weighted by the IoU of that box
    (initial or refined) with its gt, as VFNet does. Delta-space losses (``l1``, ``smooth_l1``)
    get ltrb distances in strides. The balancer sees ``reg_init`` as a task of its own
    (ALWA keeps it at ``lambda0``).

    Args:
        num_classes: object classes ``C``.
        in_channels, feat_channels: FPN and tower channels [256, 256].
        stacked_convs: convs per tower [3, VFNet's; the reg branch adds one more before the
            initial box].
        strides: pyramid strides [(8, 16, 32, 64, 128)].
        cls_loss: ["vfl"]. reg_loss: [{"name": "giou", "loss_weight": 2.0}].
        quality_loss: [None: no quality branch]. assigner: ["atss"]. balancer: ["static"].
        reg_init_loss: loss of the initial box [None: a copy of ``reg_loss``].
        reg_init_weight: multiplies the initial-box loss [0.75].
        star_dcn: deformable star conv; False uses a plain 3x3 conv in its place [True].
        refine: refine the initial box; False makes the initial box the prediction and drops
            ``reg_init`` [True].
        gradient_mul: gradient scale from the star offsets into the initial box [0.1].
        bbox_norm: ``"reg_denom"`` (distances in units of ``8 * stride``) or ``"stride"``.
        octave_base_scale: side of the assigner's square anchor in strides [8].
        center_offset: the points sit at ``(x + center_offset) * stride`` [0.5: the cell
            centres; mmdetection's VFNet, with ``use_atss=True``, uses its ATSS anchors'
            offset 0: the cell corners].
        norm: ``"gn"`` or ``"none"`` in the towers ["gn"].
        prior_prob: focal prior of the classification bias [0.01]; all convs N(0, 0.01).
        reg_weighting: ``"quality"`` (IoU-weighted box losses) or ``"none"`` ["quality"].
        score_thr, nms_thr, pre_nms_topk, max_dets: post-processing (see ``DenseHead``).

    Shapes (per level ``l``, input ``[B, in_channels, H_l, W_l]``): cls ``[B, C, H_l, W_l]``,
    reg (refined ltrb in strides) ``[B, 4, H_l, W_l]``, initial ltrb ``[B, 4, H_l, W_l]``,
    star offsets ``[B, 18, H_l, W_l]``. ``flat_outputs`` adds ``reg_init [B, N, 4]`` and
    ``boxes_init [B, N, 4]`` (xyxy px) to the ``DenseHead`` keys when ``refine=True``.
    """

    slots: ClassVar[dict[str, Slot]] = {**DenseHead.slots, "reg_init_loss": Slot("loss", "reg")}

    paper = (
        "Zhang et al., VarifocalNet: An IoU-aware Dense Object Detector, CVPR 2021; auxiliary modules as in "
        "HCRAL (Hybrid Classification-Regression Adaptive Loss for Dense Object Detection)"
    )
    box_format = "ltrb"
    #: flat outputs with a batch dimension besides DenseHead's (``cls``, ``reg``, ``boxes``, ``quality``)
    per_image_outputs = ("reg_init", "boxes_init")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 3,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        cls_loss: Spec = "vfl",
        reg_loss: Spec = {"name": "giou", "loss_weight": 2.0},  # noqa: B006 - read-only default
        quality_loss: Spec = None,
        assigner: Spec = "atss",
        balancer: Spec = "static",
        reg_init_loss: Spec = None,
        reg_init_weight: float = 0.75,
        star_dcn: bool = True,
        refine: bool = True,
        gradient_mul: float = 0.1,
        bbox_norm: Literal["reg_denom", "stride"] = "reg_denom",
        octave_base_scale: float = 8.0,
        center_offset: float = 0.5,
        norm: Literal["gn", "none"] = "gn",
        prior_prob: float = 0.01,
        reg_weighting: str = "quality",
        **kwargs: Any,
    ) -> None:
        gen = AnchorGenerator(strides, (1.0,), octave_base_scale, 1, center_offset=center_offset)
        super().__init__(
            num_classes, cls_loss, reg_loss, quality_loss, assigner, balancer, gen, reg_weighting=reg_weighting, **kwargs
        )
        if bbox_norm not in ("reg_denom", "stride"):
            raise ValueError(f"vfnet head: bbox_norm must be 'reg_denom' or 'stride', got {bbox_norm!r}")
        if not (isinstance(reg_init_weight, (int, float)) and math.isfinite(reg_init_weight) and reg_init_weight >= 0):
            raise ValueError(f"vfnet head: reg_init_weight must be a finite number >= 0, got {reg_init_weight!r}")
        if not 0.0 <= gradient_mul <= 1.0:
            raise ValueError(f"vfnet head: gradient_mul must be in [0, 1], got {gradient_mul!r}")
        self.star_dcn, self.refine = bool(star_dcn), bool(refine)
        self.gradient_mul = float(gradient_mul)
        self.bbox_norm = bbox_norm
        self.reg_init_weight = float(reg_init_weight)
        self.reg_init_loss: nn.Module | None = None
        if self.refine:
            # its own instance: stateful losses (hcra_r's running mean) keep separate statistics
            if reg_init_loss is None:
                self.reg_init_loss = copy.deepcopy(self.reg_loss)
            else:
                self.reg_init_loss = build_component("loss", reg_init_loss, require_task="reg", where="vfnet head: reg_init_loss")

        from ._checks import check_head_size

        check_head_size("vfnet head", in_channels, feat_channels, stacked_convs, num_classes)
        self.cls_tower = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.reg_tower = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.reg_init_conv = conv_tower(feat_channels, feat_channels, 1, norm)
        self.reg_init_out = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.cls_conv = StarConv(feat_channels, deformable=self.star_dcn)
        self.cls_out = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        if self.refine:
            self.refine_conv = StarConv(feat_channels, deformable=self.star_dcn)
            self.reg_refine_out = nn.Conv2d(feat_channels, 4, 3, padding=1)
            self.scales_refine = nn.ModuleList(Scale(1.0) for _ in strides)
        self.quality_out = nn.Conv2d(feat_channels, 1, 3, padding=1) if self.has_quality else None
        self.scales = nn.ModuleList(Scale(1.0) for _ in strides)
        init_head_convs(self, self.cls_out, prior_prob)  # StarConv weights are N(0, 0.01) from their own init

    # -- network ------------------------------------------------------------
    def _denominator(self, stride: int) -> float:
        return 8.0 * stride if self.bbox_norm == "reg_denom" else float(stride)

    def forward_levels(self, feats: list[Tensor]) -> dict[str, list[Tensor]]:
        """Per level: ``cls``, ``reg`` (prediction, ltrb in strides), ``reg_init`` (initial ltrb in
        strides), ``quality`` (if any) and ``offset`` (star offsets, if ``star_dcn``)."""
        outs: dict[str, list[Tensor]] = {"cls": [], "reg": [], "reg_init": [], "quality": [], "offset": []}
        strides = self.anchor_generator.strides
        if len(feats) != len(strides):
            raise ValueError(f"vfnet head: {len(feats)} feature maps for {len(strides)} strides")
        for i, (x, stride) in enumerate(zip(feats, strides)):
            c, r = self.cls_tower(x), self.reg_tower(x)
            log_init = self.scales[i](self.reg_init_out(self.reg_init_conv(r))).float()
            init = log_init.clamp(max=_MAX_LOG).exp() * self._denominator(stride)  # ltrb px
            offset = star_dcn_offset(init, stride, self.gradient_mul) if self.star_dcn else None
            if self.refine:
                r = F.relu(self.refine_conv(r, offset))
                log_refine = self.scales_refine[i](self.reg_refine_out(r)).float()
                dist = log_refine.clamp(max=_MAX_LOG).exp() * init.detach()
            else:
                dist = init
            outs["cls"].append(self.cls_out(F.relu(self.cls_conv(c, offset))))
            outs["reg"].append(dist / stride)
            outs["reg_init"].append(init / stride)
            if self.quality_out is not None:
                outs["quality"].append(self.quality_out(r))
            if offset is not None:
                outs["offset"].append(offset)
        return outs

    def forward(self, feats: list[Tensor]):
        """DenseHead's interface: per level cls, reg (the refined ltrb in strides), quality or None."""
        outs = self.forward_levels(feats)
        return outs["cls"], outs["reg"], (outs["quality"] or None)

    def decode(self, anchors: Tensor, reg: Tensor, strides: Tensor) -> Tensor:
        ctr = (anchors[:, :2] + anchors[:, 2:]) * 0.5
        dist = reg * strides[:, None]
        return torch.cat([ctr - dist[..., :2], ctr + dist[..., 2:]], dim=-1)

    def encode(self, anchors: Tensor, boxes: Tensor, strides: Tensor) -> Tensor:
        ctr = (anchors[:, :2] + anchors[:, 2:]) * 0.5
        return torch.cat([ctr - boxes[:, :2], boxes[:, 2:] - ctr], dim=-1) / strides[:, None]

    # -- training -----------------------------------------------------------
    def flat_outputs(self, feats: list[Tensor]) -> dict[str, Any]:
        """DenseHead's flat outputs (``boxes`` = refined boxes), plus ``reg_init``/``boxes_init`` with ``refine``."""
        outs = self.forward_levels(feats)
        cls = outs["cls"]
        sizes = [tuple(t.shape[-2:]) for t in cls]
        anchors, level_sizes = self.anchor_generator.grid_anchors(sizes, device=cls[0].device)
        strides = torch.cat(
            [anchors.new_full((n,), float(s)) for n, s in zip(level_sizes, self.anchor_generator.strides)]
        )
        reg = _flatten(outs["reg"], 4)
        out: dict[str, Any] = {
            "cls": _flatten(cls, self.num_classes),
            "reg": reg,
            "quality": _flatten(outs["quality"], 1).squeeze(-1) if outs["quality"] else None,
            "anchors": anchors,
            "level_sizes": level_sizes,
            "strides": strides,
            "boxes": self.decode(anchors, reg, strides),
        }
        if self.refine:
            reg_init = _flatten(outs["reg_init"], 4)
            out["reg_init"] = reg_init
            out["boxes_init"] = self.decode(anchors, reg_init, strides)
        return out

    def loss_terms(self, out: dict[str, Any], targets: list[dict[str, Tensor]], results: list[Any]) -> dict[str, Tensor]:
        """DenseHead's ``{"cls", "reg", ["quality"]}`` (``reg`` on the refined box) plus ``"reg_init"``."""
        terms = super().loss_terms(out, targets, results)
        if self.refine:
            terms["reg_init"] = self.reg_init_weight * self._init_box_loss(out, targets, results)
        return terms

    def _init_box_loss(self, out: dict[str, Any], targets: list[dict[str, Tensor]], results: list[Any]) -> Tensor:
        """The regression loss of the initial boxes at the positives (0, in the graph, without any)."""
        assert self.reg_init_loss is not None
        boxes_init = out["boxes_init"]
        if boxes_init.shape[0] != out["cls"].shape[0]:
            raise ValueError(
                "vfnet head: 'boxes_init' and 'cls' have different batch sizes; code that slices the flat "
                f"outputs per image must also slice {self.per_image_outputs}"
            )
        b_parts, a_parts, gt_parts, label_parts = [], [], [], []
        for b, (tgt, res) in enumerate(zip(targets, results)):
            a_idx = (res.gt_inds >= 0).nonzero().squeeze(1)
            if a_idx.numel() == 0:
                continue
            gt_idx = res.gt_inds[a_idx]
            b_parts.append(torch.full_like(a_idx, b))
            a_parts.append(a_idx)
            gt_parts.append(tgt["boxes"][gt_idx])
            label_parts.append(tgt["labels"][gt_idx].long())
        if not a_parts:
            avg_factor(self, "reg_init", 0.0, 1e-6 if self.reg_weighting == "quality" else 1.0, self.reg_init_loss)
            return out["reg_init"].sum() * 0.0
        b_idx, a_idx = torch.cat(b_parts), torch.cat(a_parts)
        gt_boxes = torch.cat(gt_parts).float()
        labels = torch.cat(label_parts)
        anchors, strides = out["anchors"][a_idx], out["strides"][a_idx]
        pred_boxes = boxes_init[b_idx, a_idx]
        scores = out["cls"][b_idx, a_idx, labels].detach().sigmoid()
        weight = None
        if self.reg_weighting == "quality":
            weight = aligned_box_iou(pred_boxes.detach().float(), gt_boxes).clamp(min=0)
            avg = avg_factor(self, "reg_init", weight.sum(), 1e-6, self.reg_init_loss)
        else:  # the number of positives (lossreg.heads.normalizer: over the whole batch in training)
            avg = avg_factor(self, "reg_init", a_idx.numel(), 1.0, self.reg_init_loss)
        if getattr(self.reg_init_loss, "space", "box") == "delta":
            reg_pred, reg_target = out["reg_init"][b_idx, a_idx], self.encode(anchors, gt_boxes, strides)
        else:
            reg_pred, reg_target = pred_boxes, gt_boxes
        return self.reg_init_loss(reg_pred, reg_target, weight=weight, avg_factor=avg, scores=scores, anchors=anchors)

    def extra_repr(self) -> str:
        return (
            f"star_dcn={self.star_dcn}, refine={self.refine}, gradient_mul={self.gradient_mul}, "
            f"bbox_norm={self.bbox_norm!r}, reg_init_weight={self.reg_init_weight}"
        )
