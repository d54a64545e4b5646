"""ATSS: adaptive training sample selection (Zhang et al., CVPR 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._registry import register_assigner
from ..ops.geometry import paired_box_iou
from ..ops.topk import stable_topk
from ._base import AssignInputs, AssignOutput, BaseAssigner, check_param, resolve_pairs, row_chunks

__all__ = ["ATSSAssigner", "AtssPairs", "atss_positive_pairs", "location_centers"]

#: An anchor center must lie this far inside the gt on every side (the reference ATSS code's 0.01).
INSIDE_MARGIN = 0.01


@dataclass
class AtssPairs:
    """ATSS positives of every gt row before conflicts between gts are resolved."""

    row: Tensor  # [P] long: gt row in the GtBatch
    anchor: Tensor  # [P] long
    iou: Tensor  # [P] float: IoU of the anchor with the gt
    threshold: Tensor  # [N] float64: mean + std of the candidates' IoU per gt


def location_centers(inputs: AssignInputs, anchors_per_location: int) -> tuple[Tensor, Tensor]:
    """Centers ``(cx [L], cy [L])`` of the ``L = A / n`` locations: the center of each location's first anchor.

    Anchors come location-major, ``n`` consecutive anchors per location (what every anchor
    generator emits); each level must hold whole locations.
    """
    n = anchors_per_location
    if any(size % n for size in inputs.level_sizes):
        raise ValueError(
            f"anchors_per_location={n} but level_sizes {list(inputs.level_sizes)} are not all multiples of it"
        )
    cx, cy = inputs.centers
    return cx.view(-1, n)[:, 0], cy.view(-1, n)[:, 0]


def atss_positive_pairs(inputs: AssignInputs, topk: int, anchors_per_location: int = 1) -> AtssPairs:
    """Per gt: the ``topk`` closest locations of each level, thresholded at mean + std of their anchors' IoU.

    With ``n = anchors_per_location`` the candidates of a level are the ``n`` anchors of each of
    its ``topk`` closest locations (``topk * n`` anchors, the original ATSS code's rule).
    Distances are squared L2 between centers (same ranking as L2, no rounding of a square
    root); ties go to the lower location index. The IoU is computed only for the candidates
    (``[N, K]``), never as a full ``[G, A]`` matrix. Mean and unbiased std are taken in float64
    over the sorted candidate IoUs, so the threshold does not depend on the candidates' order;
    a single candidate has std 0.
    """
    n = anchors_per_location
    gts = inputs.gts
    anchors = inputs.anchors
    device = anchors.device
    lcx, lcy = location_centers(inputs, n)
    loc_sizes = [size // n for size in inputs.level_sizes]
    loc_starts = [start // n for start in inputs.level_starts]
    ks = [min(topk, size) for size in loc_sizes]
    num_loc = sum(ks)
    num_cand = num_loc * n
    empty = torch.zeros(0, dtype=torch.long, device=device)
    threshold = torch.zeros(gts.num, dtype=torch.float64, device=device)
    if gts.num == 0 or num_cand == 0:
        return AtssPairs(empty, empty, anchors.new_zeros(0), threshold)

    gcx = (gts.boxes[:, 0] + gts.boxes[:, 2]) * 0.5
    gcy = (gts.boxes[:, 1] + gts.boxes[:, 3]) * 0.5
    cand_loc = torch.empty((gts.num, num_loc), dtype=torch.long, device=device)
    col = 0
    for start, size, k in zip(loc_starts, loc_sizes, ks):
        if k == 0:
            continue
        lx, ly = lcx[None, start : start + size], lcy[None, start : start + size]
        for r0, r1 in row_chunks(gts.num, size, inputs.chunk_elements):
            dx = gcx[r0:r1, None] - lx
            dy = gcy[r0:r1, None] - ly
            d2 = dx.mul_(dx).add_(dy.mul_(dy))
            cand_loc[r0:r1, col : col + k] = stable_topk(d2, k, largest=False) + start
        col += k

    offsets = torch.arange(n, device=device)
    rows_out, anchors_out, iou_out = [], [], []
    for r0, r1 in row_chunks(gts.num, num_cand * 8, inputs.chunk_elements):
        box = gts.boxes[r0:r1]
        loc = cand_loc[r0:r1, :, None].expand(-1, -1, n).reshape(r1 - r0, num_cand)
        cnd = (cand_loc[r0:r1, :, None] * n + offsets).reshape(r1 - r0, num_cand)
        iou = paired_box_iou(anchors[cnd], box[:, None, :])  # [rows, K]
        iou64 = iou.double()
        srt = iou64.sort(dim=1).values
        mean = srt.sum(1) / num_cand
        if num_cand > 1:
            std = ((srt - mean[:, None]) ** 2).sum(1).div(num_cand - 1).sqrt()
        else:
            std = torch.zeros_like(mean)
        thr = mean + std
        threshold[r0:r1] = thr
        cx, cy = lcx[loc], lcy[loc]
        inside = (cx - box[:, 0:1]) > INSIDE_MARGIN
        inside &= (cy - box[:, 1:2]) > INSIDE_MARGIN
        inside &= (box[:, 2:3] - cx) > INSIDE_MARGIN
        inside &= (box[:, 3:4] - cy) > INSIDE_MARGIN
        pos = (iou64 >= thr[:, None]) & inside
        r, j = torch.nonzero(pos, as_tuple=True)
        rows_out.append(r + r0)
        anchors_out.append(cnd[r, j])
        iou_out.append(iou[r, j])
    return AtssPairs(torch.cat(rows_out), torch.cat(anchors_out), torch.cat(iou_out), threshold)


@register_assigner("atss")
class ATSSAssigner(BaseAssigner):
    """ATSS: per-level closest anchors, positive above the per-gt IoU threshold mean + std.

    Zhang, Chi, Yao, Lei, Li, "Bridging the Gap Between Anchor-based and Anchor-free
    Detection via Adaptive Training Sample Selection", CVPR 2020.

    For each gt: on every pyramid level take the ``topk * anchors_per_location`` anchors
    whose centers are closest (L2) to the gt center; over those candidates the threshold
    is mean + unbiased std of their IoU with the gt; positives are candidates with IoU
    ``>=`` threshold whose center lies inside the gt (all four distances to its edges
    ``> 0.01``). An anchor positive for several gts goes to the one with the highest IoU
    (ties: lower gt index).

    Parameters:
        topk (int, default 9): closest locations per level.
        anchors_per_location (int, default 1): anchors at each feature-map location, ``n``. The
            original ATSS code takes ``topk * 9`` candidates per level with 9 anchors per location;
            ``anchors_per_location=9`` does that: the candidates are the ``n`` anchors of each of the
            ``topk`` closest locations. Anchors must come location-major (``n`` consecutive anchors
            per location, as anchor generators emit them); the center of a location's first anchor
            stands for all ``n`` (their computed centers differ only by rounding), for distances,
            ties and the inside test. With 9 anchors mmdetection keeps ``topk`` anchors per level,
            which is ``anchors_per_location=1``.

    Shapes: ``anchors [A, 4]``, ``gt_boxes [G, 4]``, ``gt_labels [G]`` -> ``AssignResult`` with
    ``[A]`` tensors; ``info["threshold"]`` is float64 ``[G]``. ``max_iou`` = IoU of the anchor with
    its gt. Ties in the distance ranking go to the lower anchor (location) index; the threshold is
    computed in float64 (see :func:`atss_positive_pairs`).
    """

    paper = (
        "Zhang et al., Bridging the Gap Between Anchor-based and Anchor-free Detection via "
        "Adaptive Training Sample Selection, CVPR 2020 (arXiv:1912.02424)"
    )

    def __init__(self, topk: int = 9, anchors_per_location: int = 1) -> None:
        owner = type(self).__name__
        check_param(owner, "topk", isinstance(topk, int) and topk >= 1, "an int >= 1", topk)
        check_param(
            owner,
            "anchors_per_location",
            isinstance(anchors_per_location, int) and anchors_per_location >= 1,
            "an int >= 1",
            anchors_per_location,
        )
        self.topk = topk
        self.anchors_per_location = anchors_per_location

    def _atss(self, inputs: AssignInputs) -> tuple[AtssPairs, Tensor, Tensor]:
        """ATSS pairs and the resolved ``gt_inds [B, A]`` / ``max_iou [B, A]``."""
        if any(size % self.anchors_per_location for size in inputs.level_sizes):
            raise ValueError(
                f"{type(self).__name__}: anchors_per_location={self.anchors_per_location} but level_sizes "
                f"{list(inputs.level_sizes)} are not all multiples of it"
            )
        pairs = atss_positive_pairs(inputs, self.topk, self.anchors_per_location)
        gts = inputs.gts
        inds, best = resolve_pairs(
            inputs.num_images, inputs.num_anchors, gts.image[pairs.row], pairs.anchor, gts.local[pairs.row], pairs.iou
        )
        return pairs, inds, best.clamp(min=0)

    def _assign(self, inputs: AssignInputs) -> AssignOutput:
        pairs, inds, iou = self._atss(inputs)
        return AssignOutput(inds, iou, per_gt={"threshold": pairs.threshold})
