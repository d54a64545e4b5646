"""Feature pyramid network neck (Lin et al., CVPR 2017) on top of torchvision's implementation."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from .._registry import register_neck


def _strided_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, in float32 when CPU bf16 autocast meets a map one pixel wide.

    torch 2.14's CPU bf16 convolution returns a wrong weight gradient (garbage up to 1e29, so
    the weights go non-finite at the next step) for a stride-2 conv over an input of width 1,
    which P6/P7 are for images up to 64 px wide (P7 of a 64 px image is 1x1). Such a map is a
    few values: float32 costs nothing there.
    """
    if x.device.type == "cpu" and x.shape[-1] == 1 and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return conv(x.float())
    return conv(x)


class _P6P7(LastLevelP6P7):
    """torchvision's P6/P7 block, with the ReLU between P6 and P7 optional (mmdetection's RetinaNet
    and ATSS FPNs have none: ``relu_before_extra_convs=False``)."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True) -> None:
        super().__init__(in_channels, out_channels)
        self.relu = relu

    def forward(self, p: list[Tensor], c: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        x = p[-1] if self.use_P5 else c[-1]
        p6 = _strided_conv(self.p6, x)
        p7 = _strided_conv(self.p7, nn.functional.relu(p6) if self.relu else p6)
        return [*p, p6, p7], [*names, "p6", "p7"]


@register_neck("fpn")
class FPN(nn.Module):
    """Feature pyramid: lateral 1x1 + top-down sum + 3x3 output convs, plus extra coarser levels.

    Paper: Lin et al., Feature Pyramid Networks for Object Detection, CVPR 2017.

    One-stage detectors take C3-C5 and add P6, P7 with stride-2 convs
    (``extra="p6p7"``; from P5 as ATSS/FCOS do, or from C5 with
    ``extra_from="c5"`` as the original RetinaNet); two-stage detectors take
    C2-C5 and add P6 by max-pooling P5 (``extra="maxpool"``).

    Args:
        in_channels: channels of each backbone level, finest first (required).
        out_channels: channels of every output level [256].
        extra: ``"p6p7"``, ``"maxpool"`` or ``"none"`` ["p6p7"].
        extra_from: source of P6 for ``"p6p7"``: ``"p5"`` or ``"c5"`` ["p5"].
        norm: ``"bn"`` puts BatchNorm after the lateral and output convs (bias-free convs,
            torchvision's ``fasterrcnn_resnet50_fpn_v2``) ["none"].
        extra_relu: ReLU between P6 and P7 [True: torchvision, and mmdetection's
            ``relu_before_extra_convs=True`` (FCOS, VFNet); False: mmdetection's RetinaNet and ATSS].

    Shapes: ``forward(list of [B, in_channels[i], H_i, W_i]) -> list of [B, out_channels, H_j, W_j]``,
    finest first, ``len(in_channels) + 2`` outputs for ``p6p7``, ``+ 1`` for ``maxpool``.
    """

    paper = "Lin et al., Feature Pyramid Networks for Object Detection, CVPR 2017"

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int = 256,
        extra: Literal["p6p7", "maxpool", "none"] = "p6p7",
        extra_from: Literal["p5", "c5"] = "p5",
        norm: Literal["none", "bn"] = "none",
        extra_relu: bool = True,
    ) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("fpn: in_channels must list the channels of at least one backbone level")
        from .._limits import MAX_CHANNELS, check_count

        check_count("fpn", "out_channels", out_channels, MAX_CHANNELS, "FPNs use 256")
        if extra == "p6p7":
            # torchvision takes P5 when the block's input width equals out_channels, else C5.
            src = out_channels if extra_from == "p5" else in_channels[-1]
            if extra_from == "c5" and src == out_channels:
                raise ValueError("fpn: extra_from='c5' needs C5's channels to differ from out_channels")
            blocks = _P6P7(src, out_channels, relu=extra_relu)
        elif extra == "maxpool":
            blocks = LastLevelMaxPool()
        elif extra == "none":
            blocks = None
        else:
            raise ValueError(f"fpn: extra must be 'p6p7', 'maxpool' or 'none', got {extra!r}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = len(in_channels) + {"p6p7": 2, "maxpool": 1, "none": 0}[extra]
        if norm not in ("none", "bn"):
            raise ValueError(f"fpn: norm must be 'none' or 'bn', got {norm!r}")
        norm_layer = nn.BatchNorm2d if norm == "bn" else None
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=blocks, norm_layer=norm_layer)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"fpn: expected {len(self.in_channels)} feature maps, got {len(feats)}")
        out = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return list(out.values())
