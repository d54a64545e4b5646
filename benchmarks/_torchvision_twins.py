"""torchvision detectors and their lossreg twins at one small configuration, with shared weights.

Used by ``bench_parity.py`` (accuracy parity) and ``tests/detectors/test_loss_parity.py``
(exact loss parity). A twin pair is built from one :class:`Config`:

* torchvision: a ResNet body (``IntermediateLayerGetter`` over C3-C5, or C2-C5 for Faster
  R-CNN) + ``FeaturePyramidNetwork`` with the same extra levels as lossreg's ``fpn`` neck,
  and the detector's own head with ``convs`` tower convolutions (RetinaNet's four are cut
  to ``convs``); its transform gets ``min_size = max_size = size`` so that square
  ``size`` inputs are not resized.
* lossreg: ``create_model(f"{arch}_{backbone}_fpn", ...)`` with the same neck, widths,
  strides and anchors, either as a user gets it (``matched=False``: lossreg's defaults)
  or with every option set to torchvision's behaviour (``matched=True``; see
  :func:`lossreg_kwargs` for the list).

:func:`copy_weights` gives the lossreg model the torchvision model's weights (timm's and
torchvision's ResNets have the same parameter names; FPN and heads are renamed).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import lossreg

ARCHS = ("fcos", "retinanet", "faster_rcnn")


@dataclass(frozen=True)
class Config:
    """One small detector configuration (defaults: the quick start's)."""

    num_classes: int = 4
    backbone: str = "resnet18"
    channels: int = 64
    convs: int = 2
    strides: tuple[int, ...] = (8, 16, 32)
    size: int = 128
    score_thr: float = 0.05
    nms_thr: float | None = None  # None: torchvision's default of the architecture (FCOS 0.6, RetinaNet 0.5)
    max_dets: int = 100
    pre_nms_topk: int = 1000
    # Faster R-CNN only: anchors / RoIs sampled per image (a number above the candidates' count takes
    # them all: no randomness), RPN proposals kept per image in training, the box head's FC width
    rpn_samples: int = 256
    roi_samples: int = 512
    rpn_post_nms_train: int = 2000
    fc_channels: int = 1024

    def nms(self, arch: str) -> float:
        return self.nms_thr if self.nms_thr is not None else {"fcos": 0.6, "retinanet": 0.5, "faster_rcnn": 0.5}[arch]


# ----------------------------------------------------------------------------- torchvision side


class TVBackbone(nn.Module):
    """torchvision ResNet body + FPN returning an ``OrderedDict`` of levels, finest first."""

    def __init__(self, name: str, returned: list[str], out_channels: int, extra: nn.Module | None) -> None:
        super().__init__()
        from torchvision import models
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.ops import FeaturePyramidNetwork

        body = getattr(models, name)(weights=None)
        self.body = IntermediateLayerGetter(body, {layer: str(i) for i, layer in enumerate(returned)})
        widths = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
        mult = 4 if name in ("resnet50", "resnet101", "resnet152") else 1
        in_list = [widths[r] * mult for r in returned]
        self.fpn = FeaturePyramidNetwork(in_list, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def _transform_kwargs(cfg: Config) -> dict[str, Any]:
    return {"min_size": cfg.size, "max_size": cfg.size}


def build_torchvision(arch: str, cfg: Config = Config()) -> nn.Module:
    """torchvision's ``arch`` at ``cfg`` with random weights (seed torch beforehand)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    levels = len(cfg.strides)
    if arch == "fcos":
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.fcos import FCOSHead

        backbone = TVBackbone(cfg.backbone, ["layer2", "layer3", "layer4"][:levels], cfg.channels, None)
        anchors = AnchorGenerator(tuple((s,) for s in cfg.strides), ((1.0,),) * levels)
        return FCOS(
            backbone,
            cfg.num_classes,
            anchor_generator=anchors,
            head=FCOSHead(cfg.channels, 1, cfg.num_classes, cfg.convs),
            # torchvision scores sqrt(cls * centerness), lossreg cls * centerness: sqrt keeps the same set
            score_thresh=math.sqrt(cfg.score_thr),
            nms_thresh=cfg.nms(arch),
            detections_per_img=cfg.max_dets,
            topk_candidates=cfg.pre_nms_topk,
            **_transform_kwargs(cfg),
        )
    if arch == "retinanet":
        from torchvision.models.detection import RetinaNet
        from torchvision.models.detection.retinanet import RetinaNetHead

        backbone = TVBackbone(cfg.backbone, ["layer2", "layer3", "layer4"][:levels], cfg.channels, None)
        sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in cfg.strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
        head = RetinaNetHead(cfg.channels, 9, cfg.num_classes)
        # torchvision's RetinaNet towers have 4 convs; keep the first `convs`
        head.classification_head.conv = head.classification_head.conv[: cfg.convs]
        head.regression_head.conv = head.regression_head.conv[: cfg.convs]
        return RetinaNet(
            backbone,
            cfg.num_classes,
            anchor_generator=anchors,
            head=head,
            score_thresh=cfg.score_thr,
            nms_thresh=cfg.nms(arch),
            detections_per_img=cfg.max_dets,
            topk_candidates=cfg.pre_nms_topk,
            **_transform_kwargs(cfg),
        )
    if arch == "faster_rcnn":
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        backbone = TVBackbone(cfg.backbone, ["layer1", "layer2", "layer3", "layer4"], cfg.channels, LastLevelMaxPool())
        # torchvision's num_classes counts the background (label 0: targets need labels + 1)
        return FasterRCNN(
            backbone,
            None,  # given by the box predictor
            rpn_batch_size_per_image=cfg.rpn_samples,
            rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
            box_batch_size_per_image=cfg.roi_samples,
            box_head=TwoMLPHead(cfg.channels * 7 * 7, cfg.fc_channels),
            box_predictor=FastRCNNPredictor(cfg.fc_channels, cfg.num_classes + 1),
            box_score_thresh=cfg.score_thr,
            box_nms_thresh=cfg.nms(arch),
            box_detections_per_img=cfg.max_dets,
            **_transform_kwargs(cfg),
        )
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


# ----------------------------------------------------------------------------- lossreg side


def fcos_scale_ranges(strides: tuple[int, ...]) -> list[list[float]]:
    """torchvision's FCOS scale ranges for a pyramid: ``[4 s, 8 s]`` per level, 0 below the first, inf above the last."""
    ranges = [[4.0 * s, 8.0 * s] for s in strides]
    ranges[0][0] = 0.0
    ranges[-1][1] = math.inf
    return ranges


def lossreg_kwargs(arch: str, cfg: Config = Config(), matched: bool = True, **head_overrides: Any) -> dict[str, Any]:
    """``create_model`` keywords of lossreg's twin of torchvision's ``arch`` at ``cfg``.

    ``matched=False``: lossreg's own defaults at the same widths, strides and anchors (the
    FCOS assigner still gets torchvision's scale ranges, which lossreg's defaults only give
    for five levels). ``matched=True`` also sets what makes lossreg's losses equal
    torchvision's ``compute_loss``:

    * fcos: ``reg_weighting="none"`` (unweighted GIoU over the positives, where lossreg
      weights it by the centerness target), points at the cell corners
      (``center_offset=0``; lossreg puts them at the cell centres) and no learnable
      per-level scale (``scale_per_level=False``).
    * retinanet: per-image loss normalisation (``loss_normalization="image"``; lossreg
      divides by the positives of the whole batch), anchors rounded to integers
      as torchvision's ``AnchorGenerator`` makes them (:func:`round_anchors`) and
      low-quality matches given to the anchor's own best gt (``max_iou``'s
      ``low_quality_gt="argmax"``).
    * faster_rcnn: smooth L1 with beta 1/9 in the RPN and the RoI head (lossreg: L1), the
      RPN's rounded anchors and ``low_quality_gt="argmax"``.

    ``head_overrides`` update the head's spec last.
    """
    neck = {"name": "fpn", "out_channels": cfg.channels, "extra": "none"}
    head: dict[str, Any] = {"feat_channels": cfg.channels, "stacked_convs": cfg.convs, "strides": list(cfg.strides)}
    kwargs: dict[str, Any] = {
        "num_classes": cfg.num_classes,
        "score_thr": cfg.score_thr,
        "nms_thr": cfg.nms(arch),
        "max_dets": cfg.max_dets,
        "pre_nms_topk": cfg.pre_nms_topk,
    }
    if arch == "fcos":
        head["name"] = "fcos"
        kwargs["assigner"] = {
            "name": "fcos",
            "scale_ranges": fcos_scale_ranges(cfg.strides),
            "strides": list(cfg.strides),
        }
        if matched:
            head.update(reg_weighting="none", center_offset=0.0, scale_per_level=False)
    elif arch == "retinanet":
        head.update(name="retina", octave_base_scale=4.0)
        if matched:
            head.update(loss_normalization="image")
            kwargs["assigner"] = {"name": "max_iou", "low_quality_gt": "argmax"}
    elif arch == "faster_rcnn":
        smooth = {"name": "smooth_l1", "beta": 1 / 9}  # torchvision's RPN and RoI losses
        kwargs["neck"] = {**neck, "extra": "maxpool"}
        if matched:
            kwargs["assigner"] = {"name": "max_iou", "low_quality_gt": "argmax"}  # the RPN's (0.7 / 0.3 filled in)
        kwargs["rpn_head"] = {
            "name": "rpn",
            "num_samples": cfg.rpn_samples,
            "post_nms_topk_train": cfg.rpn_post_nms_train,
            "reg_loss": smooth if matched else "l1",
        }
        kwargs["roi_head"] = {
            "name": "roi_box",
            "fc_channels": cfg.fc_channels,
            "num_samples": cfg.roi_samples,
            "reg_loss": smooth if matched else "l1",
            **head_overrides,
        }
        kwargs.pop("pre_nms_topk")
        return kwargs
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    head.update(head_overrides)
    kwargs["neck"] = neck
    kwargs["head"] = head
    return kwargs


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, dicts merged key by key (a copy)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_lossreg(
    arch: str, cfg: Config = Config(), matched: bool = True, extra: dict[str, Any] | None = None, **head_overrides: Any
) -> nn.Module:
    """lossreg's twin (see :func:`lossreg_kwargs`); ``extra`` is merged into the ``create_model`` keywords."""
    kw = merge(lossreg_kwargs(arch, cfg, matched, **head_overrides), extra or {})
    model = lossreg.create_model(f"{arch}_{cfg.backbone}_fpn", **kw)
    if arch == "retinanet" and matched:
        round_anchors(model.head.anchor_generator)
    if arch == "faster_rcnn" and matched:
        round_anchors(model.rpn_head.anchor_generator)
    return model


def round_anchors(gen: Any) -> None:
    """Make a lossreg ``AnchorGenerator`` produce torchvision's anchors: integer sizes per scale
    (``int(4 s 2^(i/3))``) and base anchors rounded to integers."""
    base = gen.base_anchors

    def rounded(stride: int) -> Tensor:
        sizes = [
            int(gen.octave_base_scale * stride * 2 ** (i / gen.scales_per_octave)) for i in range(gen.scales_per_octave)
        ]
        rows = []
        for ratio in gen.ratios:
            h_ratio = math.sqrt(ratio)
            w_ratio = 1.0 / h_ratio
            for size in sizes:
                w, h = w_ratio * size, h_ratio * size
                rows.append([-w / 2, -h / 2, w / 2, h / 2])
        return torch.tensor(rows, dtype=torch.float32).round()

    del base
    gen.base_anchors = rounded
    gen._cache.clear()


# ----------------------------------------------------------------------------- weights

_HEAD_NAMES = {"cls_logits": "cls_out", "bbox_reg": "reg_out", "bbox_ctrness": "quality_out"}


def lossreg_key(key: str) -> str:
    """The lossreg state-dict key of a torchvision RetinaNet/FCOS key (ResNet names are the same in timm)."""
    key = re.sub(r"^backbone\.fpn\.", "neck.fpn.", key)
    m = re.match(r"^head\.(classification|regression)_head\.(.*)$", key)
    if not m:
        return key
    tower, rest = ("cls" if m[1] == "classification" else "reg"), m[2]
    # RetinaNet: conv.{i}.0 (Conv2dNormActivation of conv + ReLU) -> tower.{2i}; FCOS: conv.{j} -> tower.{j}
    rest = re.sub(r"^conv\.(\d+)\.0\.", lambda c: f"conv.{2 * int(c[1])}.", rest)
    rest = re.sub(r"^conv\.", f"{tower}_tower.", rest)
    name, _, param = rest.partition(".")
    return f"head.{_HEAD_NAMES.get(name, name)}.{param}"


_TWO_STAGE_KEYS = (
    (r"^rpn\.head\.conv\.0\.0\.", "rpn_head.conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn_head.cls_out."),
    (r"^rpn\.head\.bbox_pred\.", "rpn_head.reg_out."),
    (r"^roi_heads\.box_head\.", "roi_head."),
    (r"^roi_heads\.box_predictor\.", "roi_head."),
)


def _two_stage(key: str, value: Tensor) -> tuple[str, Tensor]:
    """A torchvision Faster R-CNN key and value -> lossreg's: background row 0 -> last, its box rows dropped."""
    key = re.sub(r"^backbone\.fpn\.", "neck.fpn.", key)
    for pattern, repl in _TWO_STAGE_KEYS:
        key = re.sub(pattern, repl, key)
    if key.startswith("roi_head.cls_score."):
        value = torch.cat([value[1:], value[:1]])
    elif key.startswith("roi_head.bbox_pred."):
        value = value[4:]
    return key, value


def copy_weights(ours: nn.Module, tv: nn.Module) -> list[str]:
    """Load torchvision's weights and BatchNorm statistics into lossreg's twin; return the torchvision keys dropped.

    Only zero biases may be dropped (torchvision's FCOS tower convs have a bias before their
    GroupNorm, lossreg's have none). lossreg entries without a torchvision twin must be
    the per-level scales (1.0) or balancer state. Faster R-CNN: torchvision's class 0 is the
    background, lossreg's background is the last row of ``cls_score`` and has no box rows.
    """
    own = ours.state_dict()
    mapped, dropped = {}, []
    two_stage = hasattr(tv, "roi_heads")
    for key, value in tv.state_dict().items():
        if two_stage:
            target, value = _two_stage(key, value)
        else:
            target = lossreg_key(key)
        if target in own and own[target].shape == value.shape:
            mapped[target] = value
        elif key.endswith(".bias") and not value.any():
            dropped.append(key)
        else:
            raise RuntimeError(f"no lossreg twin for torchvision's {key} {tuple(value.shape)} (tried {target})")
    missing = [k for k in own if k not in mapped and not re.match(r"(rpn_|roi_)?head\.(balancer|scales)\.", k)]
    if missing:
        raise RuntimeError(f"torchvision has no weights for lossreg's {missing[:5]}")
    ours.load_state_dict(mapped, strict=False)
    return dropped
