"""Anchor boxes and points of a feature pyramid, level by level, in ``[H, W, A]`` order.

The flattening order (row, column, anchor) matches a head output
``[B, A * K, H, W]`` permuted to ``[B, H, W, A, K]`` and reshaped to ``[B, H * W * A, K]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class AnchorGenerator:
    """Square-grid anchors as RetinaNet and ATSS define them (mmdetection's convention).

    Each location of level ``l`` (stride ``s``) gets ``len(ratios) * scales_per_octave``
    anchors of area ``(octave_base_scale * 2^(i / scales_per_octave) * s)^2`` and aspect
    ratio ``h / w = ratio``, centred at ``((x + center_offset) * s, (y + center_offset) * s)``.

    RetinaNet: ``octave_base_scale=4, scales_per_octave=3, ratios=(0.5, 1, 2)`` (9 anchors).
    ATSS, and the square anchor of an anchor-free point: ``octave_base_scale=8,
    scales_per_octave=1, ratios=(1,)`` (1 anchor).

    ``style="torchvision"`` reproduces ``torchvision.models.detection.AnchorGenerator``
    (what its RetinaNet, FCOS and Faster R-CNN weights were trained with): the anchor
    sizes are truncated to integers (``int(32 * 2 ** (1 / 3)) = 40``), the base anchors'
    corners rounded to integers (computed in float32 as torchvision does), and the cell
    spacing of each level is ``input size // feature size`` per axis instead of the
    nominal stride (they differ on levels coarser than the input's divisibility: a
    800 x 1344 input gets P7 cells every 114 x 122 px, not 128). The input size is
    taken as ``feature size * stride`` of the first level, exact when the padded input
    is a multiple of the largest backbone stride (lossreg pads to 32). ``style="mmdet"``
    [default] is the exact sizes and nominal strides.
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        octave_base_scale: float = 4.0,
        scales_per_octave: int = 3,
        center_offset: float = 0.0,
        style: str = "mmdet",
    ) -> None:
        if style not in ("mmdet", "torchvision"):
            raise ValueError(f"AnchorGenerator: style must be 'mmdet' or 'torchvision', got {style!r}")
        if not strides or any(s <= 0 for s in strides):
            raise ValueError(f"AnchorGenerator: strides must be positive, got {strides!r}")
        if not ratios or any(r <= 0 for r in ratios) or octave_base_scale <= 0 or scales_per_octave < 1:
            raise ValueError("AnchorGenerator: ratios, octave_base_scale and scales_per_octave must be positive")
        self.strides = tuple(int(s) for s in strides)
        self.ratios = tuple(float(r) for r in ratios)
        self.octave_base_scale = float(octave_base_scale)
        self.scales_per_octave = int(scales_per_octave)
        self.center_offset = float(center_offset)
        self.style = style
        self._cache: dict[tuple, tuple[Tensor, list[int]]] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per location."""
        return len(self.ratios) * self.scales_per_octave

    def base_anchors(self, stride: int) -> Tensor:
        """``[A, 4]`` anchors centred at the origin for one level (ratio-major order)."""
        scales = [self.octave_base_scale * 2 ** (i / self.scales_per_octave) for i in range(self.scales_per_octave)]
        if self.style == "torchvision":  # int sizes, float32 ratios, rounded corners (torchvision's generate_anchors)
            sizes = torch.tensor([float(int(stride * self.octave_base_scale * 2 ** (i / self.scales_per_octave)))
                                  for i in range(self.scales_per_octave)], dtype=torch.float32)
            h_ratios = torch.sqrt(torch.tensor(self.ratios, dtype=torch.float32))
            ws = ((1 / h_ratios)[:, None] * sizes[None, :]).view(-1)
            hs = (h_ratios[:, None] * sizes[None, :]).view(-1)
            return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()
        rows = []
        for ratio in self.ratios:
            h_ratio, w_ratio = math.sqrt(ratio), 1.0 / math.sqrt(ratio)
            for scale in scales:
                w, h = stride * scale * w_ratio, stride * scale * h_ratio
                rows.append([-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h])
        return torch.tensor(rows, dtype=torch.float32)

    def grid_anchors(self, feat_sizes: Sequence[tuple[int, int]], device: torch.device | str = "cpu") -> tuple[Tensor, list[int]]:
        """All anchors ``[sum_l H_l * W_l * A, 4]`` (xyxy, input pixels) and the per-level counts.

        Results are cached per (sizes, device): the grid is the same every iteration.
        """
        if len(feat_sizes) != len(self.strides):
            raise ValueError(f"AnchorGenerator: {len(feat_sizes)} feature maps for {len(self.strides)} strides")
        key = (tuple(tuple(s) for s in feat_sizes), str(device))
        # not while tracing (torch.export, torch.compile): a cached tensor would be a constant
        # of one graph, and a tensor made inside the trace must not outlive it
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
        if tracing or key not in self._cache:
            levels = []
            for (h, w), stride in zip(feat_sizes, self.strides):
                base = self.base_anchors(stride).to(device)
                if self.style == "torchvision":  # cell spacing = input size // feature size, per axis
                    in_h, in_w = feat_sizes[0][0] * self.strides[0], feat_sizes[0][1] * self.strides[0]
                    centers = grid_points(h, w, (in_h // h, in_w // w), self.center_offset, device)
                else:
                    centers = grid_points(h, w, stride, self.center_offset, device)
                shifts = centers.repeat(1, 2)  # [HW, 4]
                levels.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
            result = (torch.cat(levels), [lvl.shape[0] for lvl in levels])
            if tracing:
                return result
            if len(self._cache) > 32:  # inputs of many sizes: keep memory bounded
                self._cache.clear()
            self._cache[key] = result
        return self._cache[key]


def grid_points(
    h: int, w: int, stride: int | tuple[int, int], offset: float, device: torch.device | str = "cpu"
) -> Tensor:
    """``[h * w, 2]`` (x, y) pixel centres of a level's locations, row-major; ``stride`` may be ``(sy, sx)``."""
    sy, sx = stride if isinstance(stride, tuple) else (stride, stride)
    xs = (torch.arange(w, dtype=torch.float32, device=device) + offset) * sx
    ys = (torch.arange(h, dtype=torch.float32, device=device) + offset) * sy
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def level_strides(level_sizes: Sequence[int], strides: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """``[sum(level_sizes)]`` stride of every anchor/point."""
    return torch.cat(
        [torch.full((n,), float(s), device=device) for n, s in zip(level_sizes, strides)]
    )
