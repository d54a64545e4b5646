"""FCOS: points inside the gt (center region) whose regression range fits the level (Tian et al., ICCV 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._registry import register_assigner
from ..ops.geometry import paired_box_iou
from ._base import AssignInputs, AssignOutput, BaseAssigner, check_param, resolve_pairs, row_chunks

__all__ = ["FCOSAssigner", "DEFAULT_SCALE_RANGES", "DEFAULT_STRIDES"]

DEFAULT_SCALE_RANGES: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, math.inf))
DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)


@register_assigner("fcos")
class FCOSAssigner(BaseAssigner):
    """FCOS: points in the gt's center region whose largest regression distance fits the level's range.

    Tian, Shen, Chen, He, "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019
    (center sampling from the FCOS follow-up / mmdetection ``FCOSHead``).

    The point of an anchor is its center (anchor-free heads pass each point's square anchor
    box, so this is the point itself). A point is positive for a gt when
        * it lies inside the gt (all four regression distances ``> 0``), or, with
          ``center_sampling``, inside the gt's center region: the box of half-side
          ``radius * stride`` around the gt center, clipped to the gt;
        * its largest regression distance ``max(l, t, r, b)`` lies in the level's
          ``scale_ranges`` entry ``[lo, hi]`` (both ends included).
    A point positive for several gts goes to the one with the smallest area (ties: lower gt index).

    Parameters:
        center_sampling (bool, default True).
        radius (float, default 1.5): center-region half-side in strides.
        scale_ranges (default ``((-1, 64), (64, 128), (128, 256), (256, 512), (512, inf))``): one
            ``(lo, hi)`` per level.
        strides (default ``(8, 16, 32, 64, 128)``): one stride per level, for the center region;
            taken as a parameter rather than derived from the anchor size so that a point
            list with no anchor box convention works too.

    Shapes: ``anchors [A, 4]`` (or points' square boxes), ``level_sizes`` with one entry per
    level (``len(strides)`` of them), ``gt_boxes [G, 4]``, ``gt_labels [G]`` -> ``AssignResult``
    with ``[A]`` tensors. ``max_iou`` = IoU of the anchor box passed in (the point's square
    anchor for anchor-free heads, never the predicted box) with the assigned gt.
    """

    paper = "Tian et al., FCOS: Fully Convolutional One-Stage Object Detection, ICCV 2019 (arXiv:1904.01355)"

    def __init__(
        self,
        center_sampling: bool = True,
        radius: float = 1.5,
        scale_ranges: Sequence[tuple[float, float]] = DEFAULT_SCALE_RANGES,
        strides: Sequence[int] = DEFAULT_STRIDES,
    ) -> None:
        owner = type(self).__name__
        check_param(owner, "center_sampling", isinstance(center_sampling, bool), "a bool", center_sampling)
        check_param(owner, "radius", float(radius) > 0, "> 0", radius)
        ranges = tuple((float(lo), float(hi)) for lo, hi in scale_ranges)
        check_param(owner, "scale_ranges", all(lo <= hi for lo, hi in ranges), "(lo, hi) pairs with lo <= hi", ranges)
        strides = tuple(float(s) for s in strides)
        check_param(owner, "strides", all(s > 0 for s in strides), "positive", strides)
        check_param(owner, "strides", len(strides) == len(ranges), f"one per scale range ({len(ranges)})", strides)
        self.center_sampling = center_sampling
        self.radius = float(radius)
        self.scale_ranges = ranges
        self.strides = strides

    def _assign(self, inputs: AssignInputs) -> AssignOutput:
        num_levels = len(inputs.level_sizes)
        if num_levels != len(self.strides):
            raise ValueError(
                f"{type(self).__name__}: got {num_levels} pyramid levels but strides/scale_ranges describe "
                f"{len(self.strides)}; pass strides=... and scale_ranges=... for this pyramid"
            )
        gts = inputs.gts
        px, py = inputs.centers
        boxes = gts.boxes
        gcx = (boxes[:, 0] + boxes[:, 2]) * 0.5
        gcy = (boxes[:, 1] + boxes[:, 3]) * 0.5
        # A point strictly inside a gt (the center region lies inside it too) has
        # max(l, t, r, b) in [max(w, h) / 2, max(w, h)], so only the levels whose range meets
        # that interval can hold its positives; the others are skipped. The tolerance covers
        # rounding in l, t, r, b, so skipping never changes the result.
        side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        tol = 1e-4 * (1 + boxes.abs().amax(dim=1)) if gts.num else side
        rows_l, anc_l = [], []
        for level, (start, size) in enumerate(zip(inputs.level_starts, inputs.level_sizes)):
            lo, hi = self.scale_ranges[level]
            rad = self.radius * self.strides[level]
            fits = (side * 0.5 - tol <= hi) & (side + tol >= lo)
            rows = torch.nonzero(fits).squeeze(1)
            if size == 0 or rows.numel() == 0:
                continue
            lx, ly = px[start : start + size], py[start : start + size]
            for c0, c1 in row_chunks(rows.numel(), size, inputs.chunk_elements):
                rr = rows[c0:c1]
                x1, y1, x2, y2 = (boxes[rr, i : i + 1] for i in range(4))
                left, top, right, bottom = lx - x1, ly - y1, x2 - lx, y2 - ly
                max_dist = torch.maximum(torch.maximum(left, top), torch.maximum(right, bottom))
                ok = (max_dist >= lo) & (max_dist <= hi)
                del max_dist
                if self.center_sampling:
                    cx, cy = gcx[rr, None], gcy[rr, None]
                    left = lx - torch.maximum(cx - rad, x1)
                    top = ly - torch.maximum(cy - rad, y1)
                    right = torch.minimum(cx + rad, x2) - lx
                    bottom = torch.minimum(cy + rad, y2) - ly
                ok &= torch.minimum(torch.minimum(left, top), torch.minimum(right, bottom)) > 0
                r, a = torch.nonzero(ok, as_tuple=True)
                rows_l.append(rr[r])
                anc_l.append(a + start)
        row = torch.cat(rows_l) if rows_l else torch.zeros(0, dtype=torch.long, device=px.device)
        anc = torch.cat(anc_l) if anc_l else torch.zeros(0, dtype=torch.long, device=px.device)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        inds, _ = resolve_pairs(inputs.num_images, inputs.num_anchors, gts.image[row], anc, gts.local[row], -area[row])
        iou = inputs.anchors.new_zeros(inds.shape)
        b, a = torch.nonzero(inds >= 0, as_tuple=True)
        offsets = torch.tensor(gts.offsets[:-1], dtype=torch.long, device=px.device)
        iou[b, a] = paired_box_iou(inputs.anchors[a], boxes[offsets[b] + inds[b, a]])
        return AssignOutput(inds, iou)
