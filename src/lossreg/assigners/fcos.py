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
#: The default ranges' boundaries are this many strides: level l takes ``(8 s_{l-1}, 8 s_l]``.
RANGE_STRIDES = 8.0


def default_scale_ranges(strides: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """FCOS's scale ranges for any pyramid: ``(-1, 8 s_0), (8 s_0, 8 s_1), ..., (8 s_{L-2}, inf)``.

    For strides 8-128 these are the paper's ``(-1, 64), (64, 128), (128, 256), (256, 512), (512, inf)``.
    """
    bounds = [RANGE_STRIDES * float(s) for s in strides[:-1]]
    lows = [-1.0, *bounds]
    highs = [*bounds, math.inf]
    return tuple(zip(lows, highs))


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
        scale_ranges (default None: derived from the strides, ``(-1, 8 s_0), (8 s_0, 8 s_1), ...,
            (8 s_{L-2}, inf)``, which for strides 8-128 is the paper's ``((-1, 64), (64, 128),
            (128, 256), (256, 512), (512, inf))``): one ``(lo, hi)`` per level.
        strides (default None: the owning head's, which it passes through :meth:`bind_levels`;
            ``(8, 16, 32, 64, 128)`` when the assigner is used on its own): one stride per
            level, for the center region. A head's ``strides`` alone therefore sets the whole
            level layout; strides given here must equal the head's.

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
        scale_ranges: Sequence[tuple[float, float]] | None = None,
        strides: Sequence[int] | None = None,
    ) -> None:
        owner = type(self).__name__
        check_param(owner, "center_sampling", isinstance(center_sampling, bool), "a bool", center_sampling)
        check_param(owner, "radius", math.isfinite(float(radius)) and float(radius) > 0, "> 0", radius)
        ranges = None
        if scale_ranges is not None:
            ranges = tuple((float(lo), float(hi)) for lo, hi in scale_ranges)
            check_param(owner, "scale_ranges", len(ranges) > 0, "at least one (lo, hi) pair", ranges)
            check_param(
                owner, "scale_ranges", all(lo <= hi for lo, hi in ranges), "(lo, hi) pairs with lo <= hi", ranges
            )
        given = None
        if strides is not None:
            given = tuple(float(s) for s in strides)
            check_param(owner, "strides", len(given) > 0 and all(s > 0 for s in given), "positive", given)
            if ranges is not None:
                check_param(owner, "strides", len(given) == len(ranges), f"one per scale range ({len(ranges)})", given)
        self.center_sampling = center_sampling
        self.radius = float(radius)
        self._given_ranges = ranges
        self._given_strides = given
        self.strides = given if given is not None else tuple(float(s) for s in DEFAULT_STRIDES)
        self.scale_ranges = ranges if ranges is not None else default_scale_ranges(self.strides)
        if ranges is not None and given is None and len(ranges) != len(self.strides):
            self.strides = ()  # fixed when a head binds its strides; standalone use needs strides=...

    def bind_levels(self, strides: Sequence[int]) -> None:
        """Take the owning head's strides (finest first); derive the scale ranges unless they were given."""
        owner = type(self).__name__
        head = tuple(float(s) for s in strides)
        if self._given_strides is not None and self._given_strides != head:
            raise ValueError(
                f"{owner}: strides {[int(s) if s.is_integer() else s for s in self._given_strides]} differ from the "
                f"head's {[int(s) if s.is_integer() else s for s in head]}; drop the assigner's strides (it takes "
                "the head's) or make them equal"
            )
        if self._given_ranges is not None and len(self._given_ranges) != len(head):
            raise ValueError(
                f"{owner}: {len(self._given_ranges)} scale_ranges for the head's {len(head)} pyramid levels "
                f"(strides {[int(s) if s.is_integer() else s for s in head]}); give one (lo, hi) per level, or leave "
                "scale_ranges unset to derive them from the strides"
            )
        self.strides = head
        self.scale_ranges = self._given_ranges if self._given_ranges is not None else default_scale_ranges(head)

    def _assign(self, inputs: AssignInputs) -> AssignOutput:
        num_levels = len(inputs.level_sizes)
        if num_levels != len(self.strides) or num_levels != len(self.scale_ranges):
            raise ValueError(
                f"{type(self).__name__}: got {num_levels} pyramid levels but strides/scale_ranges describe "
                f"{len(self.strides) or len(self.scale_ranges)}; pass strides=... (and scale_ranges=...) for this "
                "pyramid, or let the head pass its strides (bind_levels)"
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
